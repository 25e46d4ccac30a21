"""Every stage under `accelerate launch` with the repo's launch configs, for real: 2 CPU processes over gloo.

SFT and RM under ZeRO-2 and ZeRO-3, PPO under DDP, ZeRO-2 and ZeRO-3 (generation included), a few steps each on
the tiny world. Different layouts of the same run must agree (weights, reduced metrics), the saved model loads in
plain transformers like a one-process one, and a PPO run resumes exactly with the same number of processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
from helpers import REPO, tiny_config
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

LAUNCH_TIMEOUT = 300  # seconds per launch: a generous bound (launch times: docs/benchmarks.md)
NORMALIZE_SAMPLES = 100
SHORT = {
    "sft": ["sft.max_steps=6", "sft.logging_steps=2", "sft.eval_steps=6", "sft.save_steps=3", "eval.num_prompts=20"],
    "rm": ["rm.max_steps=6", "rm.logging_steps=2", "rm.eval_steps=6", "rm.save_steps=3",
           f"rm.normalize_samples={NORMALIZE_SAMPLES}"],
    # 2 updates of 2 x 32 episodes: a third one's rollout can already tell DDP's float rounding from ZeRO's by one
    # sampled token of a near-uniform policy, and then the runs part. A constant learning rate: the resume test
    # extends a finished 1-update run to 2 updates, and a decaying schedule depends on the total.
    "ppo": ["ppo.total_episodes=128", "ppo.save_every=1", "ppo.lr_schedule=constant", "eval.num_prompts=20"],
    "pretrain": ["pretrain.max_steps=6", "pretrain.logging_steps=2", "pretrain.eval_steps=6", "pretrain.save_steps=3"],
}
SHORT["pipeline"] = list(dict.fromkeys(SHORT["pretrain"] + SHORT["sft"] + SHORT["rm"] + SHORT["ppo"]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: str, stage: str, *overrides: str, env: dict, succeed: bool = True) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file conf/accelerate/<config>.yaml -m align.<stage>` with 2 CPU processes, on a
    port of its own; on a timeout the launcher and every rank are killed (they share a new process group). Fails the
    test unless the launch ends with status 0 (`succeed`) or another status (not `succeed`)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"conf/accelerate/{config}.yaml",
               "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port()),
               "-m", f"align.{stage}", "+experiment=tiny", *SHORT[stage], *overrides]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{config} {stage} did not finish in {LAUNCH_TIMEOUT} s:\n{stderr[-3000:]}")
    assert (process.returncode == 0) == succeed, f"{config} {stage} ended with {process.returncode}:\n{stderr[-5000:]}"
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def launch_env() -> dict:
    """The environment of every launch, after DeepSpeed's CPU communication op is compiled once (slow the first time:
    docs/benchmarks.md; cached under TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions, so later sessions skip
    it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "DS_ACCELERATOR": "cpu"}
    build = ("from deepspeed.accelerator import get_accelerator; "
             "get_accelerator().create_op_builder('ShareMemCommBuilder').load()")
    subprocess.run([sys.executable, "-c", build], env=env, check=True, capture_output=True, timeout=600)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data_root):
    """The runs root: SFT, RM and PPO under ZeRO-2 in tiny/, the runs of other layouts next to them."""
    return tmp_path_factory.mktemp("distributed")


def common(runs, tiny_data_root) -> list[str]:
    return [f"paths.root={runs}", f"paths.data={tiny_data_root}"]


@pytest.fixture(scope="module")
def sft_zero2(runs, tiny_data_root, launch_env):
    launch("zero2", "sft", *common(runs, tiny_data_root), env=launch_env)
    return runs / "tiny" / "sft"


@pytest.fixture(scope="module")
def rm_zero2(sft_zero2, runs, tiny_data_root, launch_env):
    launch("zero2", "rm", *common(runs, tiny_data_root), "rm.restarts=2", env=launch_env)
    return runs / "tiny" / "rm"


def recorded_layout(run_dir) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(run_dir / "config.resolved.yaml").distributed)


def max_difference(a_dir, b_dir) -> float:
    """Largest absolute difference between two saved models' weights (the names they share must be all of b's)."""
    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    assert set(b) <= set(a)
    return max((a[k] - b[k]).abs().max().item() for k in b)


def test_sft_zero2_trains_records_its_layout_and_saves_a_plain_model(sft_zero2, tiny_data_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.modeling.models import load_causal_lm, load_tokenizer

    rows = [json.loads(line) for line in (sft_zero2 / "metrics.jsonl").read_text().splitlines()]
    losses = [r["sft/loss"] for r in rows if "sft/loss" in r]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert rows[-1]["sft/final/global_step"] == 6
    assert recorded_layout(sft_zero2) == {"name": "launcher", "mixed_precision": "no", "world_size": 2,
                                          "deepspeed_zero_stage": 2, "deepspeed_offload": "none"}
    assert (sft_zero2 / "checkpoint-6").is_dir()

    model = AutoModelForCausalLM.from_pretrained(sft_zero2 / "final")
    tokenizer = AutoTokenizer.from_pretrained(sft_zero2 / "final")
    cfg = tiny_config(f"paths.data={tiny_data_root}")
    one_process = load_causal_lm(cfg.model, load_tokenizer(cfg.model), None, cfg.seed)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in one_process.state_dict().items()}
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # still tied
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "words 3"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] > ids.shape[1]


def test_sft_zero3_matches_zero2(sft_zero2, runs, tiny_data_root, launch_env):
    root = runs / "sft-zero3"
    launch("zero3", "sft", f"paths.root={root}", f"paths.data={tiny_data_root}", env=launch_env)
    run_dir = root / "tiny" / "sft"
    assert recorded_layout(run_dir)["deepspeed_zero_stage"] == 3
    # the same batches in the same order: only the order of floating-point sums differs
    assert max_difference(sft_zero2 / "final", run_dir / "final") < 1e-3


def rm_mean_score_on_its_normalisation_set(rm_dir, data_root) -> float:
    """The saved RM's mean score, loaded as every reader loads it, on the demonstrations it was normalised on."""
    from transformers import AutoTokenizer

    from align.core.records import read_records
    from align.modeling.models import load_reward_scorer
    from align.modeling.reward_model import score

    cfg = tiny_config(f"paths.data={data_root}", stage="rm")
    reference, _ = read_records(cfg.rm.normalize_on, "sft", "error")
    tokenizer = AutoTokenizer.from_pretrained(rm_dir / "final")
    rm = load_reward_scorer(cfg.model, tokenizer, str(rm_dir / "final"), seed=0)
    return score(rm, tokenizer, [r["messages"] for r in reference[:NORMALIZE_SAMPLES]]).mean().item()


@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_rm_trains_and_saves_a_normalised_model(config, rm_zero2, runs, tiny_data_root, launch_env):
    rm_dir = rm_zero2
    if config == "zero3":
        rm_dir = runs / "rm-zero3"
        launch("zero3", "rm", *common(runs, tiny_data_root), "rm.restarts=2", f"paths.rm={rm_dir}", env=launch_env)
        assert max_difference(rm_zero2 / "final", rm_dir / "final") < 1e-3
    assert recorded_layout(rm_dir)["deepspeed_zero_stage"] == int(config[-1])
    evaluation = json.loads((rm_dir / "eval.json").read_text())
    assert evaluation["pairs"] > 0 and 0 <= evaluation["accuracy"] <= 1
    # two restarts, each its own Trainer (and Accelerator) in the same processes
    assert len(evaluation["restarts"]["accuracy"]) == 2 and (rm_dir / "restart-1" / "checkpoint-6").is_dir()
    # the normalisation shift made it into the saved weights (under ZeRO-3 the layer it moves is sharded)
    assert abs(rm_mean_score_on_its_normalisation_set(rm_dir, tiny_data_root)) < 1e-3


def test_the_pipeline_runs_every_stage_in_one_launch(runs, tiny_data_root, launch_env):
    # each stage, and each RM restart, builds its own Accelerator in the same processes; the RM a classifier here
    # (the tests above launch the tiny experiment's implicit one)
    root = runs / "pipeline"
    launch("zero2", "pipeline", f"paths.root={root}", f"paths.data={tiny_data_root}", "+ablation=pretrained_base",
           "rm.kind=classifier", "ppo.kl_coef=0.1", env=launch_env)
    for stage in ("pretrain", "sft-pretrained_base", "rm-pretrained_base", "ppo-pretrained_base"):
        assert (root / "tiny" / stage / "final" / "model.safetensors").is_file(), stage
        assert recorded_layout(root / "tiny" / stage)["world_size"] == 2
    assert json.loads((root / "tiny" / "eval-pretrained_base" / "eval.json").read_text())["models"]["ppo"]["prompts"]


@pytest.fixture(scope="module")
def ppo_run(rm_zero2, runs, tiny_data_root, launch_env):
    """PPO from the ZeRO-2 SFT and RM under a launch config, run once per config; returns its run directory."""
    done = {}

    def run(config: str):
        if config not in done:
            launch(config, "ppo", *common(runs, tiny_data_root), f"variant={config}", env=launch_env)
            done[config] = runs / "tiny" / f"ppo-{config}"
        return done[config]

    return run


def update_rows(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "objective/kl" in row]


@pytest.mark.parametrize("config", ["ddp", "zero2", "zero3"])
def test_ppo_under_each_layout_matches_ddp(config, ppo_run):
    from transformers import AutoModelForCausalLM

    run_dir = ppo_run(config)
    layout = recorded_layout(run_dir)
    assert layout["world_size"] == 2 and layout["deepspeed_zero_stage"] == {"ddp": 0, "zero2": 2, "zero3": 3}[config]
    rows = update_rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["episodes"] == 2 * 2 * 32
    assert rows[0]["objective/kl"] == pytest.approx(0, abs=1e-5)  # step 0: the policy is the reference
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["eval_ppo_eos_rate"] <= 1
    # the final model: gathered from the shards under ZeRO-3, loadable as is, and the same as DDP's (metrics reduced
    # over ranks the same way), up to the order of floating-point sums
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    reference = ppo_run("ddp")
    assert max_difference(reference / "final", run_dir / "final") < 1e-5
    for mine, ddp in zip(rows, update_rows(reference)):
        for key in ("objective/score", "objective/kl", "policy/clipfrac", "value/loss", "rollout/response_tokens"):
            assert mine[key] == pytest.approx(ddp[key], abs=1e-4), key


def test_one_minibatch_reuses_the_scoring_pass_under_zero3_as_under_ddp(rm_zero2, runs, tiny_data_root, launch_env):
    """With one minibatch the first epoch's forward is the scoring pass's, graph and all; under ZeRO-3 that pass
    gathers each layer's weights, and the backward gathers them again (two updates, as SHORT says why)."""
    for config in ("ddp", "zero3"):
        launch(config, "ppo", *common(runs, tiny_data_root), "ppo.num_minibatches=1",
               f"variant=one-minibatch-{config}", env=launch_env)
    ddp, zero3 = (runs / "tiny" / f"ppo-one-minibatch-{config}" for config in ("ddp", "zero3"))
    assert max_difference(ddp / "final", zero3 / "final") < 1e-5
    for mine, reference in zip(update_rows(zero3), update_rows(ddp), strict=True):
        for key in ("objective/kl", "policy/approx_kl", "policy/clipfrac", "value/loss"):
            assert mine[key] == pytest.approx(reference[key], abs=1e-6), key


def test_ppo_zero3_resumes_exactly_with_the_same_world_size(ppo_run, runs, tiny_data_root, launch_env):
    """One update, then the same run asked for two: it resumes from checkpoint-1 (each rank its own shards and RNG)
    and ends with the same weights, bit for bit, as the run that did two in one go."""
    straight = ppo_run("zero3")
    args = (*common(runs, tiny_data_root), "variant=resumed")
    launch("zero3", "ppo", *args, "ppo.total_episodes=64", env=launch_env)
    checkpoint = runs / "tiny" / "ppo-resumed" / "checkpoint-1"
    assert sorted(p.name for p in checkpoint.glob("loop-rank*.pt")) == ["loop-rank0.pt", "loop-rank1.pt"]
    resumed = launch("zero3", "ppo", *args, env=launch_env)
    assert f"resuming from {checkpoint}" in resumed.stdout
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(runs / "tiny" / "ppo-resumed" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["objective/kl"] for r in update_rows(runs / "tiny" / "ppo-resumed")] == [
        r["objective/kl"] for r in update_rows(straight)]


@pytest.mark.parametrize("config", ["ddp", "zero2"])
def test_a_nan_on_one_rank_stops_every_rank_at_once(config, rm_zero2, runs, tiny_data_root, launch_env):
    """Rank 1's loss is NaN at update 2 and rank 0's is not: both stop before the optimizer step, naming the quantity,
    the update and the rank, instead of rank 0 waiting in the gradient all-reduce until the collective times out;
    update 1's checkpoint is the newest, complete one."""
    from align.runtime.checkpoints import is_complete

    env = {**launch_env, "ALIGN_TEST_INJECT_NAN": "loss@2", "ALIGN_TEST_INJECT_NAN_RANK": "1"}
    result = launch(config, "ppo", *common(runs, tiny_data_root), f"variant=nan-{config}", env=env, succeed=False)
    assert "non-finite loss (nan) at PPO update 2 on rank 1" in result.stderr, result.stderr[-3000:]
    assert "non-finite value at PPO update 2 on rank 1" in result.stderr  # rank 0 stopped too, for rank 1's reason
    run_dir = runs / "tiny" / f"ppo-nan-{config}"
    assert [p.name for p in run_dir.glob("checkpoint-*")] == ["checkpoint-1"] and is_complete(run_dir / "checkpoint-1")
    assert not (run_dir / "final").exists()


def test_a_nan_gradient_norm_under_deepspeed_stops_the_run_before_anything_is_saved(rm_zero2, runs, tiny_data_root,
                                                                                   launch_env):
    """Under ZeRO-2 the engine clips and steps inside the backward pass; accelerate hands PPO the norm DeepSpeed
    measured there: a NaN in it at update 2 stops both ranks, naming it, and update 1's checkpoint stays the newest."""
    from align.runtime.checkpoints import is_complete

    env = {**launch_env, "ALIGN_TEST_INJECT_NAN": "gradient norm@2"}
    result = launch("zero2", "ppo", *common(runs, tiny_data_root), "variant=nan-grad-zero2", env=env, succeed=False)
    assert "non-finite gradient norm (nan) at PPO update 2" in result.stderr, result.stderr[-3000:]
    run_dir = runs / "tiny" / "ppo-nan-grad-zero2"
    assert [p.name for p in run_dir.glob("checkpoint-*")] == ["checkpoint-1"] and is_complete(run_dir / "checkpoint-1")
    assert not (run_dir / "final").exists()
