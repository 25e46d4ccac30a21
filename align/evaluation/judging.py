"""The task's gold judge: loading it, and scoring a model with it on held-out prompts (where the task has one)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import mean

from align.core.config import DataConfig, EvalConfig
from align.core.console import print0
from align.core.contracts import judged_prompt
from align.core.errors import UserError
from align.core.records import read_records
from align.evaluation.sampling import sample


@dataclass(frozen=True)
class Judge:
    """A task's exact judge of a response to a prompt (the text of the last user turn)."""

    name: str  # as data.judge names it
    score: Callable[..., float]  # (prompt, response, ended=True) -> [0, 1]; 0 for a response that never ended
    details: Callable[[str, str], dict[str, bool]] | None  # (prompt, response) -> which of its checks it passes


def load_judge(data: DataConfig) -> Judge | None:
    """The judge data.judge names, or None when the task has none.

    `package.module:function` is any importable function (prompt, response, ended) -> score; a module of the same
    package may also offer `details`. A bare name (`tiny_world.judge`) is a module of data_prep with `gold_score` and
    optionally `gold_details`, the built-in tasks' judges.
    """
    if data.judge is None:
        return None
    module_name, _, function = data.judge.partition(":")
    if not function:
        module_name, function = f"data_prep.{module_name}", "gold_score"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserError(f"data.judge={data.judge!r}: cannot import {module_name} ({error}); name an importable "
                        "`package.module:function` (the working directory and PYTHONPATH are searched)") from None
    score = getattr(module, function, None)
    if not callable(score):
        raise UserError(f"data.judge={data.judge!r}: {module_name} has no function {function!r}")
    details = getattr(module, "gold_details" if function == "gold_score" else f"{function}_details", None)
    return Judge(data.judge, score, details if callable(details) else None)


NO_JUDGE = "no gold judge (data.judge is null): gold scores are left out"


def check_judge(data: DataConfig) -> Judge | None:
    """The task's judge, tried on every held-out prompt before any training: another task's judge left in place (the
    tiny world's, say), or one that fails on some prompts, would otherwise fail only at the first gold score, after
    training, before the stage is finished. None, with a one-line note, when the task has no judge, so that gold
    numbers missing from a run's output are never a surprise."""
    judge = load_judge(data)
    if judge is None:
        print0(NO_JUDGE)
        return None
    if data.prompts_eval is None:
        return judge  # nothing to judge: every gold evaluation is left out
    records, _ = read_records(data.prompts_eval, "prompt", data.on_bad_record)
    for number, record in enumerate(records, 1):
        prompt = judged_prompt(record["prompt"])
        try:
            for response, ended in (("", False), ("x", True)):
                value = float(judge.score(prompt, response, ended))
                if not math.isfinite(value):
                    raise ValueError(f"score({response!r}, ended={ended}) is {value}")
            if judge.details is not None:
                dict(judge.details(prompt, "x"))
        except Exception as error:  # whatever a user's judge raises: it does not fit these prompts
            raise UserError(f"data.judge={data.judge!r} fails on prompt {number} of data.prompts_eval="
                            f"{data.prompts_eval} ({prompt[:60]!r}): {type(error).__name__}: {error}. Is it this "
                            "task's judge? Set data.judge to the task's own `package.module:function`, or "
                            "data.judge=null to run without gold scores") from None
    return judge


def gold_evaluation(model, tokenizer, data: DataConfig, settings: EvalConfig, seed: int) -> dict[str, float]:
    """Mean gold score, EOS rate and response length on data.prompts_eval, and the pass rate of each of the judge's
    checks (`gold/<check>`, over the prompts that ask for it) where the judge reports them; {} without a judge."""
    judge = load_judge(data)
    if judge is None or data.prompts_eval is None:
        return {}
    records, _ = read_records(data.prompts_eval, "prompt", "error")
    if settings.num_prompts > 0:
        records = records[: settings.num_prompts]
    prompts = [judged_prompt(r["prompt"]) for r in records]
    completions = sample(model, tokenizer, [r["prompt"] for r in records], settings.max_new_tokens,
                         settings.temperature, settings.batch_size, seed)
    results = {
        "gold_score": mean(judge.score(p, c.text, c.ended) for p, c in zip(prompts, completions)),
        "eos_rate": mean(c.ended for c in completions),
        "response_tokens": mean(c.n_tokens for c in completions),
    }
    if judge.details is not None:
        results.update({f"gold/{check}": rate for check, rate in
                        check_rates(judge, prompts, [c.text for c in completions], [c.ended for c in completions])
                        .items()})
    return results


def check_rates(judge: Judge, prompts: list[str], responses: list[str], ended: list[bool]) -> dict[str, float]:
    """For each of the judge's checks, the fraction of the prompts asking for it whose response passes it (a response
    that never ended passes nothing, as it scores 0)."""
    passed: dict[str, list[bool]] = {}
    for prompt, response, done in zip(prompts, responses, ended):
        for check, ok in judge.details(prompt, response).items():
            passed.setdefault(check, []).append(ok and done)
    return {check: mean(oks) for check, oks in sorted(passed.items())}


def final_gold_evaluation(label: str, model, tokenizer, data: DataConfig, settings: EvalConfig,
                          seed: int) -> dict[str, float]:
    """gold_evaluation's numbers under `eval_<label>_`: what a PPO-slot run writes for its policy ("ppo") and for
    the SFT model it started from ("sft"), so that every algorithm's metrics.json compares alike."""
    return {f"eval_{label}_{k}": v for k, v in gold_evaluation(model, tokenizer, data, settings, seed).items()}
