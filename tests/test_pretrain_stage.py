"""Stage 0, pretraining on plain text: the tiny world's web lowers the held-out perplexity, and SFT starts from it."""

from __future__ import annotations

import json

from helpers import tiny_config

from align.core.errors import UserError


def test_pretraining_lowers_perplexity_and_sft_starts_from_it(tiny_data_root, tmp_path):
    import pytest
    import torch
    from transformers import AutoModelForCausalLM

    from align.pipeline import run_pipeline

    def pipeline(*overrides: str) -> dict:
        return run_pipeline(tiny_config(
            f"paths.data={tiny_data_root}", f"paths.root={tmp_path}", "pretrain.max_steps=30",
            "pretrain.eval_steps=1000", "pretrain.save_steps=1000", "sft.max_steps=5", "sft.eval_steps=1000",
            "sft.logging_steps=1", "eval.num_prompts=10", *overrides, stage="pipeline"))

    pipeline("pipeline.stages=[pretrain,sft]", "sft.init_from=${paths.pretrain}/final")
    run_dir = tmp_path / "tiny" / "pretrain"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"held-out perplexity: {metrics['initial_eval_perplexity']:.1f} at the start, "
          f"{metrics['eval_perplexity']:.1f} after 30 steps")
    assert metrics["eval_perplexity"] < metrics["initial_eval_perplexity"] / 4
    assert metrics["eval_perplexity"] == pytest.approx(torch.tensor(metrics["eval_loss"]).exp().item())

    # a plain causal LM, loaded as any Hugging Face model is
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert model.config.n_layer == tiny_config().model.scratch.n_layer

    # SFT from the pretrained base starts from a lower loss than SFT from random weights, the same steps and seed
    pipeline("pipeline.stages=[sft]", "run_name=scratch", "sft.init_from=null")

    def first_losses(run: str) -> list[float]:
        rows = [json.loads(line) for line in (tmp_path / run / "sft" / "metrics.jsonl").read_text().splitlines()]
        return [r["sft/loss"] for r in rows if "sft/loss" in r][:2]

    pretrained, scratch = first_losses("tiny"), first_losses("scratch")
    print(f"SFT's first losses: {pretrained} from the pretrained base, {scratch} from random weights")
    assert pretrained[0] < scratch[0] - 1.0


def test_pretraining_without_text_is_refused_by_name(tmp_path):
    import pytest

    from align.pretrain import train

    cfg = tiny_config(f"paths.root={tmp_path}", "data.pretrain_eval=null", stage="pretrain")
    with pytest.raises(UserError, match="data.pretrain_train and data.pretrain_eval"):
        train(cfg)
