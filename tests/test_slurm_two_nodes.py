"""Two Slurm nodes on this machine (slurm/local_cluster.sh with ALIGN_SLURM_NODES=2: a slurmd per node, each on its
own loopback address and port): the pipeline across both nodes, one process on each, through the same scripts a GPU
cluster uses (srun, one launcher per node, the main address and machine rank from the allocation), against the same
config on one node with two processes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_slurm import (
    SHORT,
    free_port,
    local_cluster,
    read_log,
    release_requeued,
    signal_mid_stage_and_finish,
    submit,
    wait_for_jobs,
    wait_until,
)

pytestmark = pytest.mark.slow

LAYOUTS = {  # sbatch options, environment
    "two nodes": (("--nodes=2",), {}),
    "one node": (("--nodes=1", "--cpus-per-task=2"), {"ALIGN_PROCS_PER_NODE": "2"}),
}


@pytest.fixture(scope="module")
def two_nodes():
    with local_cluster(nodes=2) as env:
        yield env


def listening() -> dict[int, str]:
    """Port -> the address a socket listens on, from the kernel's tables (IPv4; IPv6 as written there)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                address, port = fields[1].rsplit(":", 1)
                found[int(port, 16)] = address
    return found


def test_the_two_node_cluster_listens_on_loopback_only(two_nodes):
    """slurmctld, slurmdbd, mariadb and both slurmd: on 127.0.0.1, none on every interface."""
    base = int(two_nodes["ALIGN_SLURM_PORT_BASE"])
    daemons = {base: "slurmctld", base + 2: "slurmdbd", base + 3: "mariadb", base + 4: "node1", base + 5: "node2"}
    sockets = listening()
    assert {daemons[port]: sockets.get(port) for port in daemons} == dict.fromkeys(daemons.values(), "0100007F")


@pytest.fixture(scope="module")
def runs(two_nodes, tmp_path_factory, tiny_data_root):
    """Each layout's run: SFT and the RM under ZeRO-2, then PPO under ZeRO-3, then the evaluation in one process;
    layout -> (output root, {stage: job id})."""
    done = {}
    for layout, (sbatch, extra) in LAYOUTS.items():
        root = tmp_path_factory.mktemp(layout.replace(" ", "-"))
        common = (*SHORT, f"paths.root={root}", f"paths.data={tiny_data_root}", "ppo.total_episodes=128")
        jobs = {}
        for stages, launch_config in (("sft rm", "zero2"), ("ppo", "zero3"), ("eval", None)):
            env = {**two_nodes, **extra, "ALIGN_MAIN_PORT": str(free_port()),
                   "ALIGN_ACCELERATE_ARGS": "--mixed_precision no"}
            options = sbatch
            if launch_config is None:  # one process: no launcher
                env.pop("ALIGN_PROCS_PER_NODE", None)
                options = ("--nodes=1",)
            else:
                env["ALIGN_ACCELERATE_CONFIG"] = f"conf/accelerate/{launch_config}.yaml"
            ids = submit(*common, env=env, stages=stages, sbatch=options)
            states = wait_for_jobs(ids, two_nodes, timeout=600)
            logs = {p.name: read_log(p)[-3000:] for p in (root / "tiny" / "slurm").glob("*.out")}
            assert set(states.values()) == {"COMPLETED"}, (layout, stages, states, logs)
            jobs.update(zip(stages.split(), ids))
        done[layout] = (root, jobs)
    return done


def test_each_stage_ran_one_process_on_each_node_and_logged_where_the_readme_says(runs):
    root, jobs = runs["two nodes"]
    for stage in ("sft", "rm", "ppo"):
        log = read_log(root / "tiny" / "slurm" / f"align-{stage}-{jobs[stage]}.out")
        assert f"on node[1-2]: align.{stage}, 2 node(s) x 1 process(es)" in log, log[-2000:]
        assert "stage finished with status 0" in log
        run_dir = root / "tiny" / ("ppo-baseline" if stage == "ppo" else stage)
        resolved = (run_dir / "config.resolved.yaml").read_text()
        assert "world_size: 2" in resolved
        assert f"deepspeed_zero_stage: {3 if stage == 'ppo' else 2}" in resolved


def test_two_nodes_train_the_weights_one_node_with_two_processes_does(runs):
    """The same config, world size, seeds and data order: the models agree to float rounding (the collectives may
    sum in another order) and the evaluation gives the same gold score."""
    (two, _), (one, _) = runs["two nodes"], runs["one node"]
    for stage in ("sft", "rm", "ppo-baseline"):
        a = load_file(two / "tiny" / stage / "final" / "model.safetensors")
        b = load_file(one / "tiny" / stage / "final" / "model.safetensors")
        assert a.keys() == b.keys(), stage
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst <= 1e-5, (stage, worst)
    gold = [json.loads((root / "tiny" / "eval-baseline" / "eval.json").read_text())["models"]["ppo"]["gold_score"]
            for root in (two, one)]
    assert gold[0] == pytest.approx(gold[1], abs=0.02), gold


EPISODES = 768  # 12 updates of 2 x 32: long enough to interrupt after the first checkpoint


def ppo_env(two_nodes: dict) -> dict:
    return {**two_nodes, "ALIGN_ACCELERATE_CONFIG": "conf/accelerate/zero3.yaml",
            "ALIGN_ACCELERATE_ARGS": "--mixed_precision no", "ALIGN_MAIN_PORT": str(free_port())}


@pytest.fixture(scope="module")
def straight(runs, two_nodes, tiny_data_root):
    """The final weights of a two-node PPO job under ZeRO-3 run straight through, a checkpoint every update."""
    root, _ = runs["two nodes"]
    (job,) = submit(*SHORT, f"paths.root={root}", f"paths.data={tiny_data_root}", "variant=straight",
                    f"ppo.total_episodes={EPISODES}", "ppo.save_every=1", env=ppo_env(two_nodes), stages="ppo",
                    sbatch=("--nodes=2",))
    assert wait_for_jobs([job], two_nodes, timeout=600) == {job: "COMPLETED"}
    return load_file(root / "tiny" / "ppo-straight" / "final" / "model.safetensors")


def assert_same_weights(final: Path, expected: dict) -> None:
    weights = load_file(final / "model.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in weights)


def test_a_two_node_ppo_job_signalled_mid_run_is_requeued_and_ends_with_the_uninterrupted_weights(
        runs, two_nodes, tiny_data_root, straight):
    """The time limit's USR1 to a PPO job on two nodes under ZeRO-3: every rank checkpoints, the job is requeued,
    resumes on both nodes, and ends with the weights of the same job run straight through."""
    root, _ = runs["two nodes"]
    log, run_dir = signal_mid_stage_and_finish(root, "requeued", EPISODES, ppo_env(two_nodes), tiny_data_root,
                                               sbatch=("--nodes=2",))
    assert "2 node(s) x 1 process(es)" in log and "resuming from" in log
    assert_same_weights(run_dir / "final", straight)


def launcher_on(node: str) -> int | None:
    """The pid of the `accelerate launch` a job step runs on `node` (slurmd gives its tasks SLURMD_NODENAME)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            environment = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"launch" in command[:3] and f"SLURMD_NODENAME={node}".encode() in environment:
            return int(proc.name)
    return None


def test_a_two_node_ppo_job_that_loses_a_node_is_requeued_and_ends_with_the_uninterrupted_weights(
        runs, two_nodes, tiny_data_root, straight):
    """SIGKILL to the second node's launcher once PPO has a checkpoint, as a node that dies: the other node's ranks
    are stopped, the job is requeued and resumes from its last complete checkpoint, never from one cut short, and
    ends with the weights of the job run straight through."""
    root, _ = runs["two nodes"]
    run_dir = root / "tiny" / "ppo-node-lost"
    (job,) = submit(*SHORT, f"paths.root={root}", f"paths.data={tiny_data_root}", "variant=node-lost",
                    f"ppo.total_episodes={EPISODES}", "ppo.save_every=1", env=ppo_env(two_nodes), stages="ppo",
                    sbatch=("--nodes=2",))
    wait_until(lambda: any(run_dir.glob("checkpoint-*")), "the first PPO checkpoint", timeout=300, every=0.2)
    os.kill(wait_until(lambda: launcher_on("node2"), "node2's launcher", timeout=30, every=0.2), signal.SIGKILL)
    release_requeued(job, two_nodes)
    states = wait_for_jobs([job], two_nodes, timeout=300, runs=2)
    log = read_log(root / "tiny" / "slurm" / f"align-ppo-{job}.out")
    assert states == {job: "COMPLETED"}, log[-3000:]
    assert "was killed (status 137)" in log and "resuming from" in log, log[-3000:]
    assert not (run_dir / "final").is_symlink() and json.loads((run_dir / "metrics.json").read_text())["resumed_from"]
    assert_same_weights(run_dir / "final", straight)
