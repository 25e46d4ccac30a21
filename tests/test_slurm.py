"""The slurm/ scripts and the submitit sweep launcher on a real single-node Slurm cluster, started here on loopback.

CI installs Slurm (`slurm/local_cluster.sh install`, in .ci/run) and sets ALIGN_REQUIRE_SLURM=1, so there these tests
run or fail; on a machine without Slurm they skip and say how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow

# Shortened tiny stages: the chain takes minutes (docs/benchmarks.md).
SHORT = ["+experiment=tiny", "pretrain.max_steps=20", "pretrain.eval_steps=1000", "pretrain.save_steps=1000",
         "sft.max_steps=20", "sft.eval_steps=1000", "sft.save_steps=1000", "rm.max_steps=20",
         "rm.eval_steps=1000", "rm.save_steps=1000", "eval.num_prompts=20"]
# slurm/submit.sh's default chain after pretraining; in a checkout without align/eval.py it ends at PPO
CHAIN = ("pretrain", "sft", "rm", "ppo", "eval") if (REPO / "align" / "eval.py").is_file() else (
    "pretrain", "sft", "rm", "ppo")
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE"}


def read_log(path: Path) -> str:
    """A job's log. Its processes write it at once, so one's progress bar can cut another's multi-byte character in
    two: those bytes read as U+FFFD instead of failing the test."""
    return path.read_text(errors="replace")


def have_slurm() -> str | None:
    """Why the cluster cannot be started here, or None."""
    missing = [c for c in ("sbatch", "slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")
               if not shutil.which(c, path=os.environ.get("PATH", "") + ":/usr/sbin")]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} not found): `slurm/local_cluster.sh install` installs it"
    if os.geteuid() != 0:
        return "the loopback Slurm cluster runs its daemons as root"
    return None


@contextmanager
def local_cluster(nodes: int = 1):
    """A running loopback cluster of `nodes` nodes; the environment for its clients and for the stages its jobs run."""
    reason = have_slurm()
    if reason:
        if os.environ.get("ALIGN_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="align-slurm-"))  # not under pytest's tmp dirs: munged refuses mode 700 above
    env = {**os.environ, "SLURM_CONF": str(base / "etc" / "slurm.conf"), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "ALIGN_SLURM_NODES": str(nodes),
           "ALIGN_SLURM_PORT_BASE": str(17000 + 12 * (os.getpid() % 250) + 4 * (nodes > 1))}  # own ports
    cluster = [str(REPO / "slurm" / "local_cluster.sh")]
    started = subprocess.run([*cluster, "start", str(base)], env=env, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield env
    finally:
        subprocess.run([*cluster, "stop", str(base)], env=env, capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm():
    with local_cluster() as env:
        yield env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*command: str, env: dict, timeout: int = 60) -> str:
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result.stdout


def job_records(job: str, env: dict) -> list[dict]:
    """sacct's records of a job, oldest first: one per run of it (a requeued job has several)."""
    out = run("sacct", "-n", "-X", "-D", "--parsable2", "-o", "JobID,State,ExitCode", "-j", job, env=env)
    return [dict(zip(("id", "state", "exit"), line.split("|"))) for line in out.splitlines() if line]


def cluster_logs(env: dict, lines: int = 80) -> str:
    """The end of the loopback cluster's daemon logs, for a failure message (the cluster is removed afterwards)."""
    logs = Path(env["SLURM_CONF"]).parents[1] / "log"
    return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                     for log in sorted(logs.glob("slurm*.log")))


def wait_until(check, what: str, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_jobs(jobs: list[str], env: dict, timeout: float, runs: int = 1) -> dict[str, str]:
    """Each job's final state, once all have one in their `runs`-th run (accounting hears of each run a bit late)."""

    def states():
        records = {job: job_records(job, env) for job in jobs}
        last = {job: rows[-1]["state"].split()[0] for job, rows in records.items() if len(rows) >= runs}
        return last if len(last) == len(jobs) and set(last.values()) <= FINISHED else None

    return wait_until(states, f"jobs {jobs} to finish", timeout, every=2)


def submit(*overrides: str, env: dict, stages: str, sbatch: tuple[str, ...] = ()) -> list[str]:
    out = run(str(REPO / "slurm" / "submit.sh"), "--time=10", *sbatch, "--", *overrides,
              env={**env, "ALIGN_STAGES": stages})
    return out.split()


@pytest.fixture(scope="module")
def chain(slurm, tmp_path_factory, tiny_data_root):
    """The tiny pipeline submitted through slurm/submit.sh and run to its end: (output root, job ids)."""
    root = tmp_path_factory.mktemp("runs")
    jobs = submit(*SHORT, f"paths.root={root}", f"paths.data={tiny_data_root}", "ppo.total_episodes=96",
                  "sft.init_from=${paths.pretrain}/final", env=slurm, stages=" ".join(CHAIN))
    states = wait_for_jobs(jobs, slurm, timeout=600)
    logs = root / "tiny" / "slurm"
    assert set(states.values()) == {"COMPLETED"}, (states, *(read_log(p)[-3000:] for p in logs.glob("*.out")))
    return root, jobs


def test_chain_runs_every_stage_after_the_previous_one(chain):
    root, jobs = chain
    run_dirs = [root / "tiny" / stage
                for stage in ("pretrain", "sft", "rm", "ppo-baseline", "eval-baseline")[:len(CHAIN)]]
    for stage, run_dir, job in zip(CHAIN, run_dirs, jobs):
        assert (run_dir / ("eval.json" if stage == "eval" else "final/model.safetensors")).is_file()
        log = read_log(root / "tiny" / "slurm" / f"align-{stage}-{job}.out")
        assert f"job {job} (align-{stage})" in log and "stage finished with status 0" in log
        # the same overrides reached every stage
        resolved = (run_dir / "config.resolved.yaml").read_text()
        assert "max_steps: 20" in resolved and "total_episodes: 96" in resolved
    assert f"init_from: {run_dirs[0]}/final" in (run_dirs[1] / "config.resolved.yaml").read_text()  # SFT from it
    # each stage started after the one before it had finished
    finished = [max(f.stat().st_mtime for f in d.glob("*.json")) for d in run_dirs]
    started = [(d / "provenance.json").stat().st_mtime for d in run_dirs]
    assert all(finished[i] <= started[i + 1] for i in range(len(CHAIN) - 1)), (finished, started)


def test_sweep_through_the_submitit_launcher(chain, slurm, tiny_data_root):
    root, _ = chain
    result = subprocess.run(
        [sys.executable, "-m", "align.ppo", "-m", "hydra/launcher=slurm", *SHORT, f"paths.root={root}",
         f"paths.data={tiny_data_root}", "hydra.launcher.timeout_min=10", "ppo.total_episodes=96",
         "ppo.kl_coef=0.0,0.5", "variant=kl${ppo.kl_coef}"],
        cwd=REPO, env=slurm, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = root / "tiny" / "sweeps" / "ppo"
    assert len(list((sweep / ".submitit").glob("*_[01]/*_result.pkl"))) == 2  # two Slurm array tasks, each done
    kl = {}
    for coef in ("0.0", "0.5"):
        run_dir = root / "tiny" / f"ppo-kl{coef}"
        assert f"kl_coef: {coef}" in (run_dir / "config.resolved.yaml").read_text()
        assert (run_dir / "final" / "model.safetensors").is_file()
        kl[coef] = json.loads((run_dir / "metrics.json").read_text())["final_kl"]
    assert kl["0.0"] != kl["0.5"], kl  # the points trained differently


def release_requeued(job: str, env: dict) -> None:
    """Wait for `job` to be requeued once, then let it start again as soon as its nodes are free."""

    def requeued():
        shown = run("scontrol", "show", "job", "-o", job, env=env)
        return "Restarts=1" in shown and "JobState=PENDING" in shown

    wait_until(requeued, "the job to be requeued", timeout=120)
    # The nodes finish cleaning up after the first run (their epilog) while the job already waits; a job started on a
    # node still completing can fail to launch, so release it only once every node is idle.
    wait_until(lambda: run("sinfo", "-h", "-o", "%T", env=env).strip() == "idle", "the nodes to be idle", timeout=120)
    # Slurm holds a requeued job back for two minutes (its begin time), and for a reason: the node revokes the job's
    # credential when the first run ends, and refuses a new one issued within the same second ("Job credential
    # revoked", and the job FAILS). Release it two seconds after the nodes are idle rather than two minutes.
    time.sleep(2)
    run("scontrol", "update", f"JobId={job}", "StartTime=now", env=env)


def signal_mid_stage_and_finish(root: Path, variant: str, episodes: int, env: dict, data_root: Path,
                                sbatch: tuple[str, ...] = ()) -> tuple[str, Path]:
    """Submit PPO (a checkpoint every update), send it the time-limit signal once it has a checkpoint, release the
    requeued job and wait for it to finish; the log of both runs and the run directory."""
    run_dir = root / "tiny" / f"ppo-{variant}"
    (job,) = submit(*SHORT, f"paths.root={root}", f"paths.data={data_root}", f"variant={variant}",
                    f"ppo.total_episodes={episodes}", "ppo.save_every=1", env=env, stages="ppo", sbatch=sbatch)
    wait_until(lambda: any(run_dir.glob("checkpoint-*")), "the first PPO checkpoint", timeout=300, every=0.5)
    # what Slurm does --signal=B:USR1@300 before the time limit
    run("scancel", "--signal=USR1", "--batch", job, env=env)
    release_requeued(job, env)
    states = wait_for_jobs([job], env, timeout=300, runs=2)
    if states != {job: "COMPLETED"}:  # pytest.fail, not assert: pytest would shorten the logs
        log = read_log(root / "tiny" / "slurm" / f"align-ppo-{job}.out")
        pytest.fail(f"{states}; sacct: {job_records(job, env)}\n--- the job's log\n{log[-3000:]}\n{cluster_logs(env)}")
    assert [r["state"] for r in job_records(job, env)] == ["REQUEUED", "COMPLETED"]
    log = read_log(root / "tiny" / "slurm" / f"align-ppo-{job}.out")
    assert "got SIGUSR1" in log and "requeued 1 time(s)" in log, log[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from"] and Path(metrics["resumed_from"]).parent == run_dir
    assert (run_dir / "final" / "model.safetensors").is_file()
    # every update logged once: the resumed run rewrote what came after its checkpoint
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [*range(1, metrics["updates"] + 1), metrics["updates"]]
    return log, run_dir


def test_signalled_job_is_requeued_and_resumes_from_its_checkpoint(chain, slurm, tiny_data_root):
    root, _ = chain
    log, _ = signal_mid_stage_and_finish(root, "requeue", 640, slurm, tiny_data_root)
    # one process, run by srun itself: its exit status is the stage's, 75 after the checkpoint
    assert "stopped with status 75" in log


@pytest.mark.skipif(not (REPO / "conf" / "accelerate" / "ddp.yaml").is_file(),
                    reason="needs the launch configs in conf/accelerate/")
def test_two_process_stage_through_accelerate_launch_is_requeued_and_resumes(chain, slurm, tiny_data_root):
    root, _ = chain
    env = {**slurm, "ALIGN_PROCS_PER_NODE": "2", "ALIGN_ACCELERATE_CONFIG": "conf/accelerate/ddp.yaml",
           "ALIGN_ACCELERATE_ARGS": "--mixed_precision no", "ALIGN_MAIN_PORT": str(free_port())}
    log, run_dir = signal_mid_stage_and_finish(root, "two-processes", 384, env, tiny_data_root,
                                               sbatch=("--cpus-per-task=2",))
    assert "1 node(s) x 2 process(es)" in log and "resuming from" in log
    assert "world_size: 2" in (run_dir / "config.resolved.yaml").read_text()
