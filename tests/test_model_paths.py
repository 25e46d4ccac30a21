"""A model key pointed at something that is not that model: one clear error naming the path, never a traceback or a
model quietly made up (a reward model's random head)."""

from __future__ import annotations

import pytest
from helpers import tiny_config

from align.core.errors import UserError
from align.modeling.models import load_causal_lm, load_reward_scorer


@pytest.fixture
def saved_lm(tokenizer, tiny_data_root, tmp_path):
    model_cfg = tiny_config(f"paths.data={tiny_data_root}").model
    lm = load_causal_lm(model_cfg, tokenizer, None, 0)
    lm.save_pretrained(tmp_path / "sft" / "final")
    tokenizer.save_pretrained(tmp_path / "sft" / "final")
    (tmp_path / "sft" / "metrics.json").write_text("{}")
    return model_cfg, tmp_path / "sft"


def test_a_language_model_is_refused_as_a_reward_model(saved_lm, tokenizer):
    model_cfg, run = saved_lm
    with pytest.raises(UserError, match=f"{run / 'final'} is not a reward model .*random head"):
        load_reward_scorer(model_cfg, tokenizer, str(run / "final"), seed=0)


def test_a_run_directory_a_file_or_cut_weights_are_refused_naming_the_path(saved_lm, tokenizer, tmp_path):
    model_cfg, run = saved_lm
    (tmp_path / "records.jsonl").write_text('{"a": 1}\n')
    for path in (run, tmp_path / "records.jsonl"):
        with pytest.raises(UserError, match=f"cannot load model from {path} "):
            load_causal_lm(model_cfg, tokenizer, str(path), 0)
    weights = run / "final" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match=f"cannot load model from {run / 'final'} "):
        load_causal_lm(model_cfg, tokenizer, str(run / "final"), 0)
