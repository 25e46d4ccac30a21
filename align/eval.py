"""Judged evaluation: any set of models on the same held-out prompts, sampled the same way.

    python -m align.eval +experiment=tiny                          # base, SFT and PPO of the tiny run
    python -m align.eval +experiment=tiny eval.models.base=null '+eval.models.mine=/path/to/model'

For every model: the gold judge's score (where the task has a judge), the reward model's score (normalised, so the SFT
demonstrations score 0 on average), the KL to the reference model, response length and EOS rate; and its win rate
against the reference on the same prompts, by the reward model and by the gold judge (a tie counts half); by
category too where the prompts have one. With a judge, each model's greedy answers are judged too (eval.greedy_gold):
a gain in sampled gold can hide a loss in the answers a model is most sure of, and that gets a warning.
A prompt with follow-ups (MT-bench's second turn) is answered turn by turn, each after the model's own earlier
answers, and each later turn is a row of its own ("<model> turn 2").
The KL is the one PPO pays for: on a model's own samples, the mean over prompts of
sum_t [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)], logits divided by the sampling temperature.
All models are read with one tokenizer: the chat tokenizer of this run (the reference's, or model.name_or_path's).

Reads   eval.models, eval.reward_model, data.prompts_eval
Writes  paths.eval/: eval.json (numbers), report.md (table and responses side by side), eval.png (scores against KL),
        responses.jsonl (every response with its scores), config.resolved.yaml, provenance.json
"""

from __future__ import annotations

import json
from math import sqrt
from pathlib import Path
from statistics import mean, stdev

import hydra
from omegaconf import DictConfig

from align.core.config import Config
from align.core.console import is_main_process, print0
from align.core.contracts import judged_prompt
from align.core.errors import UserError
from align.core.records import read_records
from align.core.tokens import chat_ids
from align.runtime.checkpoints import write_atomic
from align.runtime.distributed import drop_launcher_arguments, main_process_first
from align.runtime.runs import require_stage_output, run_stage, start_run
from data_prep.prepare import ensure_prepared

BASE = "base"  # the label value meaning "what SFT starts from": sft.init_from, or model.scratch with the run's seed


def win_rate(scores: list[float], reference_scores: list[float]) -> float:
    """Share of prompts on which a model's response scores above the reference's; a tie counts half."""
    if len(scores) != len(reference_scores) or not scores:
        raise ValueError("win_rate needs two equally long, non-empty lists of scores")
    return mean(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, reference_scores))


def unconfirmed_gains(summary: dict[str, dict], reference: str, sensitivity: float = 1.0,
                      margin: float = 0.05) -> list[str]:
    """Models whose edge over the reference by the training RM's win rate the audit RM does not confirm: less than
    half of what it would show. A policy optimised against an RM finds that RM's errors; an RM trained on other pairs
    does not share them all, so a gain only the training RM sees is likely not a gain (over-optimisation, Gao et al.
    2022). A weaker audit RM sees a real gain smaller, by `sensitivity` (audit_sensitivity)."""
    warnings = []
    for label, row in summary.items():
        if label == reference or "audit_rm_win_rate" not in row or "rm_win_rate" not in row:
            continue
        edge, confirmed = row["rm_win_rate"] - 0.5, row["audit_rm_win_rate"] - 0.5
        if edge > margin and confirmed < sensitivity * edge / 2:
            warnings.append(f"{label} beats {reference} on {row['rm_win_rate']:.0%} of prompts by the training RM but "
                            f"on {row['audit_rm_win_rate']:.0%} by the audit RM: its gains may be the training RM's "
                            "errors (over-optimisation); compare the gold or human judgement before trusting them")
    return warnings


def audit_sensitivity(reward_model: str | None, audit_reward_model: str | None) -> float | None:
    """How much of a real gain the audit RM can show, relative to the training RM: (a - 0.5) / (t - 0.5) of their
    accuracies on the same held-out pairs, within [0, 1]; None when either is unknown (an RM from elsewhere).

    An RM that ranks a pair right with probability a sees a true win rate 0.5 + e as 0.5 + e (2a - 1), so an audit RM
    blind to part of the task confirms a real gain only in part; label noise in the held-out pairs scales both
    accuracies' distance from chance alike and cancels.
    """
    rm_accuracy, audit_accuracy = held_out_accuracy(reward_model), held_out_accuracy(audit_reward_model)
    if rm_accuracy is None or audit_accuracy is None or rm_accuracy <= 0.5:
        return None
    return min(1.0, max(0.0, (audit_accuracy - 0.5) / (rm_accuracy - 0.5)))


def held_out_accuracy(reward_model: str | None) -> float | None:
    """The accuracy on the held-out pairs that align.rm wrote next to the model (its run's eval.json); None for a
    reward model from elsewhere."""
    if reward_model is None or not Path(reward_model).is_dir():  # a hub name has no run around it
        return None
    report = Path(reward_model).parent / "eval.json"
    return json.loads(report.read_text()).get("accuracy") if report.is_file() else None


def greedy_losses(greedy_gold: dict[str, list[float]], sampled_gold: dict[str, float], reference: str) -> list[str]:
    """Models that look no worse than the reference by their sampled answers' gold score, but whose greedy answers
    meet the judge less often than the reference's beyond chance: the mean paired difference over prompts more than
    two standard errors below zero. PPO against an imperfect RM can raise the sampled gold score while moving a
    policy's most likely answer to where the RM is wrong; a model worse either way needs no warning to show it."""
    warnings = []
    for label, scores in greedy_gold.items():
        if label == reference or sampled_gold[label] < sampled_gold[reference]:
            continue
        diffs = [a - b for a, b in zip(scores, greedy_gold[reference], strict=True)]
        loss = -mean(diffs)
        if loss > 0 and loss > 2 * (stdev(diffs) / sqrt(len(diffs)) if len(diffs) > 1 else 0.0):
            warnings.append(f"{label}'s greedy answers score {mean(scores):.3f} by the gold judge, {reference}'s "
                            f"{mean(greedy_gold[reference]):.3f} ({len(diffs)} prompts, more than two standard errors "
                            "apart): whatever it gained in sampling, its most likely answers got worse")
    return warnings


def by_category(categories: list[str | None], scores: dict[str, list[float] | None]) -> dict[str, dict]:
    """Each category's prompts and mean scores (prompts without a category under "none")."""
    groups: dict[str, list[int]] = {}
    for n, category in enumerate(categories):
        groups.setdefault(category or "none", []).append(n)
    return {category: {"prompts": len(members),
                       **{key: mean(values[n] for n in members) for key, values in scores.items() if values}}
            for category, members in sorted(groups.items())}


def few_shot_examples(cfg: Config, eval_records: list[dict], judge, n_prompts: int, most: int) -> list[list]:
    """For each evaluation prompt, the solved examples eval.shots may show before it (none if no row asks for any):
    from eval.shot_examples, never an evaluation prompt, and only fully solved ones where the task has a judge."""
    from align.evaluation.few_shot import shots_for, solved_examples

    if most == 0:
        return [[] for _ in range(n_prompts)]
    if cfg.eval.shot_examples is None:
        raise UserError(f"eval.shots asks for {most} examples a prompt: set eval.shot_examples to SFT records")
    with main_process_first():
        ensure_prepared(cfg.data, [cfg.eval.shot_examples])
    records, _ = read_records(cfg.eval.shot_examples, "sft", cfg.data.on_bad_record)
    held_out = {judged_prompt(r["prompt"]) for r in eval_records}
    examples = solved_examples(records, held_out, judge)
    if len(examples) < most:
        raise UserError(f"eval.shots asks for {most} examples a prompt; {cfg.eval.shot_examples} has {len(examples)} "
                        "single-turn demonstrations that are not evaluation prompts"
                        + (" and that the judge scores in full" if judge is not None else ""))
    return shots_for(n_prompts, examples, most, cfg.seed)


def check_context(lm, prompt_ids: list[list[int]], max_new_tokens: int, row: str) -> None:
    """A prompt and its answer must fit the model's positions: examples before a question lengthen it."""
    from align.modeling.models import context_size

    limit = context_size(lm)
    longest = max(len(ids) for ids in prompt_ids)
    if limit is not None and longest + max_new_tokens > limit:
        raise UserError(f"{row}: a prompt of {longest} tokens and eval.max_new_tokens={max_new_tokens} exceed the "
                        f"model's {limit} positions; ask for fewer examples (eval.shots) or fewer new tokens")


def evaluate(cfg: Config) -> dict:
    from tqdm import tqdm

    from align.evaluation.few_shot import as_zero_shot_chat, chat_prompt, plain_text_prompt
    from align.evaluation.judging import check_judge, check_rates
    from align.evaluation.multi_turn import next_turn, turn_label, turn_prompt
    from align.evaluation.sampling import line_end_ids, sample_ids
    from align.evaluation.scoring import response_logprob_sums, reward_scores
    from align.evaluation.tables import print_table, write_plot, write_report
    from align.modeling.models import load_causal_lm, load_reward_scorer, load_tokenizer

    e = cfg.eval
    models = {label: name for label, name in e.models.items() if name is not None}
    if e.reference not in models:
        raise UserError(f"eval.reference={e.reference!r} is not one of eval.models ({', '.join(models)})")
    for what, key, name in [*((f"the {label} model", f"eval.models.{label}", name) for label, name in models.items()),
                            ("the reward model", "eval.reward_model", e.reward_model),
                            ("the audit reward model", "eval.audit_reward_model", e.audit_reward_model)]:
        if name is not None:
            require_stage_output(name, cfg.paths.root, f"{what}; run its stage with the same overrides first, or set "
                                 f"{key} to another directory or null")
    for key, labels in (("eval.shots", e.shots), ("eval.plain_text", e.plain_text)):
        if unknown := [label for label in labels if label not in e.models]:
            raise UserError(f"{key} names {unknown}, which are not among eval.models ({', '.join(models)})")
    if e.shots.get(e.reference, [0]) != [0] or e.reference in e.plain_text:
        raise UserError(f"eval.reference={e.reference!r} is what every row is compared with: keep it zero-shot, in the "
                        "chat format (out of eval.shots and eval.plain_text)")
    if cfg.data.prompts_eval is None:
        raise UserError("data.prompts_eval is not set: the evaluation needs held-out prompts")
    run_dir = Path(cfg.paths.eval)
    start_run(run_dir, cfg)

    with main_process_first():
        ensure_prepared(cfg.data, [cfg.data.prompts_eval])
    records, _ = read_records(cfg.data.prompts_eval, "prompt", cfg.data.on_bad_record)
    judge = check_judge(cfg.data)  # tried on these prompts before any model samples
    reference_path = models[e.reference]
    tokenizer = load_tokenizer(cfg.model, path=None if reference_path == BASE else reference_path)
    pad_id = tokenizer.pad_token_id
    lengths = [len(chat_ids(tokenizer, r["prompt"], generation_prompt=True)) for r in records]
    kept = [r for r, length in zip(records, lengths) if length <= e.max_prompt_tokens]
    if not kept:
        raise UserError(f"none of the {len(records)} prompts of {cfg.data.prompts_eval} fits eval.max_prompt_tokens="
                        f"{e.max_prompt_tokens}: the shortest has {min(lengths)} tokens; raise eval.max_prompt_tokens "
                        "(the prompt and eval.max_new_tokens must fit the model's positions), or use shorter prompts")
    dropped_long_prompts = len(records) - len(kept)
    if dropped_long_prompts:
        print0(f"left out {dropped_long_prompts} prompts longer than eval.max_prompt_tokens={e.max_prompt_tokens}")
    kept = kept[: e.num_prompts] if e.num_prompts > 0 else kept
    prompts = [r["prompt"] for r in kept]
    followups = [r.get("followups") or [] for r in kept]
    turns = 1 + max(map(len, followups), default=0)

    def load_lm(name: str):
        return load_causal_lm(cfg.model, tokenizer, cfg.sft.init_from if name == BASE else name, cfg.seed,
                              "eval.models (base: sft.init_from)")

    # the evaluation's rows: a model zero-shot, or once per number of examples eval.shots gives it, and a zero-shot
    # chat row once more for each later turn of the prompts that have follow-ups (MT-bench's second turn)
    rows = {(label if e.shots.get(label, [0]) == [0] else f"{label} {k}-shot"): (label, k, 1)
            for label in models for k in e.shots.get(label) or [0]}
    first_turn_row = {label: row for row, (label, k, _) in rows.items() if k == 0 and label not in e.plain_text}
    rows |= {turn_label(label, t): (label, 0, t) for label in first_turn_row for t in range(2, turns + 1)}
    shots = few_shot_examples(cfg, records, judge, len(prompts), max(k for _, k, _ in rows.values()))

    # 1. sample: every row answers every prompt with the same sampling settings and seed. A row shown examples, or
    # prompted as plain text, is scored as if its answer had been given to the bare question in the chat format: the
    # reward model reads it there, and it has no KL to the reference (another context). A later turn answers the
    # conversation so far, its own earlier answers in it.
    completions, own_logprobs, indices, greedy = {}, {}, {}, {}
    judge_greedy = e.greedy_gold and judge is not None and e.temperature > 0
    plain_stops = line_end_ids(tokenizer) if e.plain_text else []  # a decode of every token: once
    for label, name in tqdm(models.items(), desc="sampling", disable=not is_main_process()):
        lm = load_lm(name)
        for row, (_, k, _) in ((r, v) for r, v in rows.items() if v[0] == label and v[2] == 1):
            plain = label in e.plain_text
            if plain:
                prompt_ids = [tokenizer(plain_text_prompt(p[-1]["content"], s[:k]))["input_ids"]
                              for p, s in zip(prompts, shots)]
            else:
                prompt_ids = [chat_ids(tokenizer, chat_prompt(p, s[:k]), generation_prompt=True)
                              for p, s in zip(prompts, shots)]
            check_context(lm, prompt_ids, e.max_new_tokens, row)
            sampled = sample_ids(lm, tokenizer, prompt_ids, e.max_new_tokens, e.temperature, e.batch_size, cfg.seed,
                                 plain_stops if plain else [tokenizer.eos_token_id])
            indices[row] = list(range(len(prompts)))
            if k == 0 and not plain:
                completions[row] = sampled
                if judge_greedy:
                    greedy[row] = sample_ids(lm, tokenizer, prompt_ids, e.max_new_tokens, 0.0, e.batch_size, cfg.seed,
                                             [tokenizer.eos_token_id])
            else:
                completions[row] = [as_zero_shot_chat(tokenizer, p, c) for p, c in zip(prompts, sampled)]
        conversations = dict(enumerate(prompts))
        for turn in range(2, turns + 1) if label in first_turn_row else ():
            before = first_turn_row[label] if turn == 2 else turn_label(label, turn - 1)
            answers = {i: c.text for i, c in zip(indices[before], completions[before])}
            conversations = next_turn(conversations, answers, followups, turn)
            row = turn_label(label, turn)
            indices[row] = sorted(conversations)
            prompt_ids = [chat_ids(tokenizer, conversations[i], generation_prompt=True) for i in indices[row]]
            check_context(lm, prompt_ids, e.max_new_tokens, row)
            completions[row] = sample_ids(lm, tokenizer, prompt_ids, e.max_new_tokens, e.temperature, e.batch_size,
                                          cfg.seed, [tokenizer.eos_token_id])
        if e.temperature > 0:
            for row in (r for r, (m, k, _) in rows.items() if m == label and k == 0 and label not in e.plain_text):
                own_logprobs[row] = response_logprob_sums(lm, completions[row], pad_id, e.temperature, e.batch_size)
        del lm

    # 2. KL to the reference, on each row's own samples (undefined for greedy decoding)
    kl = {}
    if e.temperature > 0:
        reference = load_lm(reference_path)
        for row in own_logprobs:
            ref_logprobs = response_logprob_sums(reference, completions[row], pad_id, e.temperature, e.batch_size)
            kl[row] = (own_logprobs[row] - ref_logprobs).tolist()
        del reference

    # 3. the reward model's score of every response
    rm_scores, audit_scores = {}, {}
    for scores, path, key in ((rm_scores, e.reward_model, "eval.reward_model"),
                              (audit_scores, e.audit_reward_model, "eval.audit_reward_model")):
        if path is not None:
            rm = load_reward_scorer(cfg.model, tokenizer, path, cfg.seed, key)
            scores.update({row: reward_scores(rm, completions[row], pad_id, e.batch_size).tolist()
                           for row in rows})
            del rm

    # 4. the gold judge's score, where the task has one; a later turn is judged with the follow-ups asked so far
    judged = {row: [turn_prompt(prompts[i], followups[i], turn) for i in indices[row]]
              for row, (_, _, turn) in rows.items()}
    gold, greedy_gold = {}, {}
    if judge is not None:
        gold = {row: [judge.score(p, c.text, c.ended) for p, c in zip(judged[row], completions[row])]
                for row in rows}
        greedy_gold = {row: [judge.score(p, c.text, c.ended) for p, c in zip(judged[row], greedy[row])]
                       for row in greedy}

    # 5. summary: one row per model (per number of examples, per turn); win rates against the reference's same turn
    summary = {}
    for label, (model_label, k, turn) in rows.items():
        reference_row = turn_label(e.reference, turn)
        texts, ended = [c.text for c in completions[label]], [c.ended for c in completions[label]]
        row = {"model": models[model_label], "shots": k, "plain_text": model_label in e.plain_text,
               **({"turn": turn} if turns > 1 else {}),
               "prompts": len(indices[label]), "response_tokens": mean(c.n_tokens for c in completions[label]),
               "eos_rate": mean(ended)}
        if gold:
            row["gold_score"] = mean(gold[label])
            if judge.details is not None:  # which of the task's checks the model passes: a weak link shows by name
                row["gold_checks"] = check_rates(judge, judged[label], texts, ended)
            row["gold_win_rate"] = win_rate(gold[label], gold[reference_row])
        if label in greedy_gold:
            row["greedy_gold_score"] = mean(greedy_gold[label])
        if rm_scores:
            row["rm_score"] = mean(rm_scores[label])
            row["rm_win_rate"] = win_rate(rm_scores[label], rm_scores[reference_row])
        if audit_scores:
            row["audit_rm_score"] = mean(audit_scores[label])
            row["audit_rm_win_rate"] = win_rate(audit_scores[label], audit_scores[reference_row])
        if label in kl:
            row["kl"] = mean(kl[label])
        categories = [kept[i].get("category") for i in indices[label]]
        if any(c is not None for c in categories):  # a weak category shows by name, as a weak check does
            row["by_category"] = by_category(categories, {"gold_score": gold.get(label),
                                                          "rm_score": rm_scores.get(label)})
        summary[label] = row
    sensitivity = audit_sensitivity(e.reward_model, e.audit_reward_model) if audit_scores else None
    warnings = unconfirmed_gains(summary, e.reference, 1.0 if sensitivity is None else sensitivity)
    if e.reference in greedy_gold:
        warnings += greedy_losses(greedy_gold, {label: row["gold_score"] for label, row in summary.items()},
                                  e.reference)

    # 6. write: numbers, every response, the report and the plot
    results = {"reference": e.reference, "temperature": e.temperature, "max_new_tokens": e.max_new_tokens,
               "seed": cfg.seed, "prompts_file": cfg.data.prompts_eval, "dropped_long_prompts": dropped_long_prompts,
               "models": summary, "warnings": warnings,
               **({"audit_sensitivity": sensitivity} if sensitivity is not None else {})}
    if is_main_process():
        position = {row: {i: n for n, i in enumerate(indices[row])} for row in rows}
        with open(run_dir / "responses.jsonl", "w", encoding="utf-8") as f:
            for i, (record, prompt) in enumerate(zip(kept, prompts)):
                answers = {}
                for label in (r for r in rows if i in position[r]):
                    n = position[label][i]
                    answers[label] = {"text": completions[label][n].text, "ended": completions[label][n].ended,
                                      **({"gold": gold[label][n]} if gold else {}),
                                      **({"rm": rm_scores[label][n]} if rm_scores else {}),
                                      **({"audit_rm": audit_scores[label][n]} if audit_scores else {}),
                                      **({"kl": kl[label][n]} if label in kl else {}),
                                      **({"greedy": greedy[label][n].text, "greedy_gold": greedy_gold[label][n]}
                                         if label in greedy_gold else {})}
                f.write(json.dumps({**{key: record[key] for key in ("id", "category") if key in record},
                                    "prompt": prompt, **({"followups": followups[i]} if followups[i] else {}),
                                    "responses": answers}) + "\n")

        def shown(label: str, i: int) -> str:
            if i not in position[label]:
                return "-"  # this prompt has no such turn
            c = completions[label][position[label][i]]
            return c.text if c.ended else c.text + " [no EOS]"

        write_report(run_dir / "report.md", results, [judged_prompt(p, followups[i])  # every user turn, a line each
                                                       for i, p in enumerate(prompts[: e.report_samples])],
                     {label: [shown(label, i) for i in range(min(len(prompts), e.report_samples))] for label in rows})
        write_plot(run_dir / "eval.png", results)
        write_atomic(run_dir / "eval.json", json.dumps(results, indent=2) + "\n")  # last: it marks the run finished
        print_table(results)
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_stage(evaluate, cfg, preemptible=False)  # seconds of work and nothing to checkpoint: SIGTERM ends it


if __name__ == "__main__":
    drop_launcher_arguments()
    main()
