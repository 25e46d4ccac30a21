"""Score a model on held-out prompts with the task's gold judge (where the task has one)."""

from __future__ import annotations

import importlib
from statistics import mean

from align.core.config import DataConfig, EvalConfig
from align.core.records import read_records
from align.evaluation.sampling import sample


def gold_evaluation(model, tokenizer, data: DataConfig, settings: EvalConfig, seed: int) -> dict[str, float]:
    """Mean gold score, EOS rate and response length on data.prompts_eval; {} when the task has no judge."""
    if data.judge is None or data.prompts_eval is None:
        return {}
    judge = importlib.import_module(f"data_prep.{data.judge}")
    records, _ = read_records(data.prompts_eval, "prompt", "error")
    if settings.num_prompts > 0:
        records = records[: settings.num_prompts]
    prompts = [r["prompt"] for r in records]
    completions = sample(model, tokenizer, prompts, settings.max_new_tokens, settings.temperature,
                         settings.batch_size, seed)
    scores = [judge.gold_score(p[-1]["content"], c.text, c.ended) for p, c in zip(prompts, completions)]
    return {
        "gold_score": mean(scores),
        "eos_rate": mean(c.ended for c in completions),
        "response_tokens": mean(c.n_tokens for c in completions),
    }
