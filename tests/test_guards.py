"""A NaN in a loss, a reward or a gradient stops the run, names the step and the quantity, and keeps the last good
checkpoint; NaNs are injected with the test-only ALIGN_TEST_INJECT_NAN hook (align/runtime/faults.py), or by a reward
model whose weights on disk hold a NaN."""

from __future__ import annotations

import shutil

import pytest
import torch
from helpers import run_module
from safetensors.torch import load_file, save_file

from align.runtime.checkpoints import is_complete, numbered
from align.runtime.guards import NonFinite, require_finite


def test_require_finite_names_quantity_step_and_last_checkpoint(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "checkpoint_complete").write_text("")
    require_finite("loss", torch.tensor([1.0, 2.0]), tmp_path, 5)
    require_finite("kl", 0.5, tmp_path, 5, "update")
    with pytest.raises(NonFinite, match=r"non-finite reward \(inf\) at update 7: .*checkpoint-4"):
        require_finite("reward", torch.tensor([0.0, float("inf")]), tmp_path, 7, "update")
    with pytest.raises(NonFinite, match=r"non-finite loss \(nan\) at step 1: .*none"):
        require_finite("loss", float("nan"), tmp_path / "empty", 1)


def assert_stopped(result, message: str, run_dir, kept: int) -> None:
    """Exit status 2 with one message (no traceback), checkpoint-<kept> the newest, complete, with finite weights."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    checkpoint = numbered(run_dir)[-1]
    assert checkpoint.name == f"checkpoint-{kept}" and is_complete(checkpoint)
    weights = load_file(checkpoint / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (run_dir / "final").exists()


@pytest.mark.slow
def test_sft_stops_on_a_nan_loss(tmp_path, tiny_data_root):
    result = run_module("align.sft", "+experiment=tiny", f"paths.root={tmp_path}", f"paths.data={tiny_data_root}",
                        "sft.max_steps=40", "sft.save_steps=10", "sft.eval_steps=1000",
                        env={"ALIGN_TEST_INJECT_NAN": "output@25"})
    # SFT's forward returns logits only (its loss is taken from them after): the guard reads those.
    assert_stopped(result, "non-finite logits (nan) at step 25", tmp_path / "tiny" / "sft", kept=20)


@pytest.mark.slow
def test_pretraining_stops_on_a_nan_loss(tmp_path, tiny_data_root):
    result = run_module("align.pretrain", "+experiment=tiny", f"paths.root={tmp_path}",
                        f"paths.data={tiny_data_root}", "pretrain.max_steps=30", "pretrain.save_steps=10",
                        "pretrain.eval_steps=1000", env={"ALIGN_TEST_INJECT_NAN": "output@15"})
    assert_stopped(result, "non-finite logits (nan) at step 15", tmp_path / "tiny" / "pretrain", kept=10)


@pytest.mark.slow
@pytest.mark.parametrize("kind, quantity", [("classifier", "logits"), ("implicit", "loss")])
def test_rm_stops_on_a_nan_reward(kind, quantity, tiny_sft_dir, tmp_path, tiny_data_root):
    # the classifier's forward returns its scores, DPO's its loss: the guard reads what there is
    root = tiny_sft_dir.parent.parent
    result = run_module("align.rm", "+experiment=tiny", f"paths.root={root}", f"paths.data={tiny_data_root}",
                        f"paths.rm={tmp_path}/rm", "rm.max_steps=30", "rm.save_steps=10", "rm.eval_steps=1000",
                        "rm.restarts=2", f"rm.kind={kind}", env={"ALIGN_TEST_INJECT_NAN": "output@15"})
    # in the first of two restarts: nothing after it runs
    assert_stopped(result, f"non-finite {quantity} (nan) at step 15", tmp_path / "rm" / "restart-0", kept=10)
    assert not (tmp_path / "rm" / "restart-1").exists() and not (tmp_path / "rm" / "final").exists()


@pytest.mark.slow
@pytest.mark.parametrize("quantity, message", [("loss", "non-finite loss (nan) at PPO update 3"),
                                               ("reward", "non-finite reward (nan) at PPO update 3")])
def test_ppo_stops_on_a_nan_loss_or_reward(tiny_rm_dir, tiny_data_root, quantity, message):
    root = tiny_rm_dir.parent.parent
    result = run_module("align.ppo", "+experiment=tiny", f"paths.root={root}", f"paths.data={tiny_data_root}",
                        "ppo.total_episodes=320", "ppo.save_every=1", f"variant=nan-{quantity}",
                        env={"ALIGN_TEST_INJECT_NAN": f"{quantity}@3"})
    assert_stopped(result, message, root / "tiny" / f"ppo-nan-{quantity}", kept=2)


@pytest.mark.slow
def test_ppo_stops_on_a_reward_model_with_a_nan_weight(tiny_rm_dir, tiny_data_root, tmp_path):
    """No hook: the reward model on disk is broken, so its scores are NaN from the first update."""
    broken = tmp_path / "broken-rm"
    shutil.copytree(tiny_rm_dir / "final", broken)
    weights = load_file(broken / "model.safetensors")
    weights["transformer.ln_f.weight"][0] = float("nan")  # under the classifier's head and the LM's alike
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    root = tiny_rm_dir.parent.parent
    result = run_module("align.ppo", "+experiment=tiny", f"paths.root={root}", f"paths.data={tiny_data_root}",
                        f"ppo.reward_model={broken}", "ppo.total_episodes=320", "variant=broken-rm")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "non-finite reward (nan) at PPO update 1" in result.stderr
    assert "the last good checkpoint is none" in result.stderr and "Traceback" not in result.stderr
