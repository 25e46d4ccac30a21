"""`distributed.mixed_precision=bf16` on the CPU: each stage runs a few steps under bf16 autocast (what a GPU user
gets), its numbers stay finite, and what it saves is fp32 safetensors."""

from __future__ import annotations

import json
import math

import pytest
from helpers import run_module

pytestmark = pytest.mark.slow


def saved_dtypes(final) -> set:
    from safetensors import safe_open

    with safe_open(str(final / "model.safetensors"), "pt") as f:
        return {f.get_tensor(name).dtype for name in f.keys()}


def test_every_stage_trains_under_bf16_and_saves_fp32(tmp_path, tiny_data_root):
    import torch

    common = ("+experiment=tiny", f"paths.root={tmp_path}", f"paths.data={tiny_data_root}",
              "distributed.mixed_precision=bf16")
    steps = {"sft": ("sft.max_steps=3", "sft.logging_steps=1", "sft.eval_steps=3", "sft.save_steps=3"),
             "rm": ("rm.max_steps=3", "rm.logging_steps=1", "rm.eval_steps=3", "rm.save_steps=3"),
             "ppo": ("ppo.total_episodes=64", "ppo.log_every=1", "ppo.gold_eval_every=0")}
    for stage, overrides in steps.items():
        result = run_module(f"align.{stage}", *common, *overrides)
        assert result.returncode == 0, (stage, result.stderr[-3000:])
    run = tmp_path / "tiny"
    for directory in ("sft", "rm", "ppo-baseline"):
        assert saved_dtypes(run / directory / "final") == {torch.float32}, directory
    sft_losses = [row["sft/loss"] for row in map(json.loads, (run / "sft" / "metrics.jsonl").read_text().splitlines())
                  if "sft/loss" in row]
    assert len(sft_losses) == 3 and all(math.isfinite(x) for x in sft_losses)
    rm_eval = json.loads((run / "rm" / "eval.json").read_text())
    assert 0.0 <= rm_eval["accuracy"] <= 1.0 and math.isfinite(rm_eval["mean_margin"])
    ppo_rows = [row for row in map(json.loads, (run / "ppo-baseline" / "metrics.jsonl").read_text().splitlines())
                if "objective/kl" in row]
    assert len(ppo_rows) == 2  # two updates of 32 episodes
    for row in ppo_rows:
        for key in ("objective/kl", "objective/score", "policy/pg_loss", "value/loss"):
            assert math.isfinite(row[key]), (key, row)
