"""The task's gold judge: loading it, and scoring a model with it on held-out prompts (where the task has one)."""

from __future__ import annotations

import importlib
from statistics import mean
from types import ModuleType

from align.core.config import DataConfig, EvalConfig
from align.core.records import read_records
from align.evaluation.sampling import sample


def load_judge(data: DataConfig) -> ModuleType | None:
    """The module `data_prep.<data.judge>` (it has gold_score(prompt, response, ended=True) -> float in [0, 1]), or
    None when the task has no judge. Named by the config, so it is imported by name."""
    return None if data.judge is None else importlib.import_module(f"data_prep.{data.judge}")


def gold_evaluation(model, tokenizer, data: DataConfig, settings: EvalConfig, seed: int) -> dict[str, float]:
    """Mean gold score, EOS rate and response length on data.prompts_eval; {} when the task has no judge."""
    judge = load_judge(data)
    if judge is None or data.prompts_eval is None:
        return {}
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


def final_gold_evaluation(label: str, model, tokenizer, data: DataConfig, settings: EvalConfig,
                          seed: int) -> dict[str, float]:
    """gold_evaluation's numbers under `eval_<label>_`: what a PPO-slot run writes for its policy ("ppo") and for
    the SFT model it started from ("sft"), so that every algorithm's metrics.json compares alike."""
    return {f"eval_{label}_{k}": v for k, v in gold_evaluation(model, tokenizer, data, settings, seed).items()}
