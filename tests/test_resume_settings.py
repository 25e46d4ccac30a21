"""A stage run again into a directory holding a checkpoint resumes it only with the settings that made it: other ones
that decide what it trains are refused before anything is written, naming each key with both values; what a resume may
change (the step cap, logging, evaluating and saving, the process layout, the same directories spelled otherwise)
resumes. No training: a run directory as a pre-empted run leaves it, and start_run, which decides."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import tiny_config

from align.core.config import to_yaml
from align.core.errors import UserError
from align.runtime import checkpoints
from align.runtime.runs import start_run


def config(root, *overrides: str, stage: str = "sft"):
    return tiny_config(f"paths.root={root}", "paths.data=data", *overrides, stage=stage)


def preempted(root, *overrides: str, stage: str = "sft", checkpoint: str = "checkpoint-270") -> Path:
    """The run directory of `stage` after a run with these overrides wrote `checkpoint` (complete) and stopped."""
    cfg = config(root, *overrides, stage=stage)
    run_dir = Path(getattr(cfg.paths, stage))
    start_run(run_dir, cfg, stage)
    (run_dir / checkpoint).mkdir(parents=True)
    checkpoints.mark_complete(run_dir / checkpoint, metrics_rows=0)
    return run_dir


def refusal(run_dir: Path, cfg, stage: str = "sft") -> str:
    """The message start_run refuses with; the run directory's files are as they were."""
    before = {name: (run_dir / name).read_bytes() for name in ("config.resolved.yaml", "provenance.json")}
    with pytest.raises(UserError) as refused:
        start_run(run_dir, cfg, stage)
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    return str(refused.value)


def test_other_learning_rate_and_data_are_refused_naming_both_values(tmp_path):
    """The tester's case: pre-empted at lr 3e-3 on the tiny data, run again with another rate and file."""
    run_dir = preempted(tmp_path)
    message = refusal(run_dir, config(tmp_path, "sft.max_steps=280", "sft.lr=1e-5",
                                      "data.sft_train=/some/other.jsonl"))
    assert str(run_dir / "checkpoint-270") in message
    assert "sft.lr: 0.003 then, 1e-05 now" in message
    assert ("data.sft_train: '${paths.data}/tiny_world-seed0/tiny_world/sft.train.jsonl' then, '/some/other.jsonl' "
            "now") in message
    assert "max_steps" not in message  # a step cap raised to train on is no difference
    assert "another run_name" in message and "sft.resume=false" in message


@pytest.mark.parametrize("overrides, key", [
    (["seed=1"], "seed: 0 then, 1 now"),
    (["sft.batch_size=32"], "sft.batch_size: 64 then, 32 now"),
    (["sft.lr_scheduler=constant"], "sft.lr_scheduler: 'cosine' then, 'constant' now"),
    (["sft.init_from=gpt2"], "sft.init_from: None then, 'gpt2' now"),
    (["model.scratch.n_layer=2"], "model.scratch.n_layer: 4 then, 2 now"),
])
def test_what_decides_the_training_is_refused(tmp_path, overrides, key):
    assert key in refusal(preempted(tmp_path), config(tmp_path, *overrides))


@pytest.mark.parametrize("change", [
    "sft.max_steps=280", "sft.logging_steps=1", "sft.eval_steps=7", "sft.save_steps=9", "sft.save_total_limit=5",
    "sft.eval_batch_size=8", "sft.dataloader_workers=2", "sft.gradient_checkpointing=true", "distributed=single",
    "distributed.mixed_precision=bf16", "logger=tensorboard", "eval.num_prompts=5", "rm.lr=0.1",
])
def test_what_a_resume_may_change_resumes_and_is_recorded(tmp_path, change):
    run_dir = preempted(tmp_path)
    cfg = config(tmp_path, change)
    start_run(run_dir, cfg, "sft")
    assert (run_dir / "config.resolved.yaml").read_text() == to_yaml(cfg)


def test_the_same_directories_spelled_otherwise_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = preempted("runs")  # relative to the working directory, then absolute
    start_run(run_dir, tiny_config(f"paths.root={tmp_path}/runs", f"paths.data={tmp_path}/data"), "sft")


def test_starting_over_or_a_checkpoint_cut_short_is_no_resume(tmp_path):
    run_dir = preempted(tmp_path)
    start_run(run_dir, config(tmp_path, "sft.lr=1e-5", "sft.resume=false"), "sft")  # the stage removes them
    (run_dir / "checkpoint-270" / checkpoints.MARKER).unlink()  # never resumed from, and removed
    start_run(run_dir, config(tmp_path, "sft.lr=1e-4"), "sft")


def test_ppo_resumes_with_more_episodes_but_not_with_another_rate_or_sft_model(tmp_path):
    run_dir = preempted(tmp_path, stage="ppo", checkpoint="checkpoint-3")
    assert "ppo.lr: 0.0003 then, 0.001 now" in refusal(run_dir, config(tmp_path, "ppo.lr=1e-3", stage="ppo"), "ppo")
    # an earlier stage's step cap is not this one's: it changed the SFT model PPO started from and measures KL to
    assert "sft.max_steps: -1 then, 500 now" in refusal(run_dir, config(tmp_path, "sft.max_steps=500", stage="ppo"),
                                                        "ppo")
    start_run(run_dir, config(tmp_path, "ppo.total_episodes=12800", "ppo.save_every=1", stage="ppo"), "ppo")


def test_an_rm_restarts_checkpoint_counts(tmp_path):
    run_dir = preempted(tmp_path, "rm.restarts=2", stage="rm", checkpoint="restart-1/checkpoint-3")
    message = refusal(run_dir, config(tmp_path, "rm.restarts=2", "rm.beta=0.1", stage="rm"), "rm")
    assert "rm.beta: 0.3 then, 0.1 now" in message and str(run_dir / "restart-1" / "checkpoint-3") in message
