"""Judged evaluation: any set of models on the same held-out prompts, sampled the same way.

    python -m align.eval +experiment=tiny                          # base, SFT and PPO of the tiny run
    python -m align.eval +experiment=tiny eval.models.base=null '+eval.models.mine=/path/to/model'

For every model: the gold judge's score (where the task has a judge), the reward model's score (normalised, so the SFT
demonstrations score 0 on average), the KL to the reference model, response length and EOS rate; and its win rate
against the reference on the same prompts, by the reward model and by the gold judge (a tie counts half).
The KL is the one PPO pays for: on a model's own samples, the mean over prompts of
sum_t [log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)], logits divided by the sampling temperature.
All models are read with one tokenizer: the chat tokenizer of this run (the reference's, or model.name_or_path's).

Reads   eval.models, eval.reward_model, data.prompts_eval
Writes  paths.eval/: eval.json (numbers), report.md (table and responses side by side), eval.png (scores against KL),
        responses.jsonl (every response with its scores), config.resolved.yaml, provenance.json
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

import hydra
from omegaconf import DictConfig

from align.core.config import Config
from align.core.console import is_main_process, print0
from align.core.errors import UserError
from align.core.records import read_records
from align.core.tokens import chat_ids
from align.runtime.distributed import drop_launcher_arguments, main_process_first
from align.runtime.runs import require_stage_output, run_stage, start_run
from data_prep.prepare import ensure_prepared

BASE = "base"  # the label value meaning "what SFT starts from": sft.init_from, or model.scratch with the run's seed


def win_rate(scores: list[float], reference_scores: list[float]) -> float:
    """Share of prompts on which a model's response scores above the reference's; a tie counts half."""
    if len(scores) != len(reference_scores) or not scores:
        raise ValueError("win_rate needs two equally long, non-empty lists of scores")
    return mean(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, reference_scores))


def unconfirmed_gains(summary: dict[str, dict], reference: str, margin: float = 0.05) -> list[str]:
    """Models whose edge over the reference by the training RM's win rate the audit RM does not confirm: less than
    half of it left. A policy optimised against an RM finds that RM's errors; an RM trained on other pairs does not
    share them all, so a gain only the training RM sees is likely not a gain (over-optimisation, Gao et al. 2022)."""
    warnings = []
    for label, row in summary.items():
        if label == reference or "audit_rm_win_rate" not in row or "rm_win_rate" not in row:
            continue
        edge, confirmed = row["rm_win_rate"] - 0.5, row["audit_rm_win_rate"] - 0.5
        if edge > margin and confirmed < edge / 2:
            warnings.append(f"{label} beats {reference} on {row['rm_win_rate']:.0%} of prompts by the training RM but "
                            f"on {row['audit_rm_win_rate']:.0%} by the audit RM: its gains may be the training RM's "
                            "errors (over-optimisation); compare the gold or human judgement before trusting them")
    return warnings


def evaluate(cfg: Config) -> dict:
    from tqdm import tqdm

    from align.evaluation.judging import check_judge, check_rates
    from align.evaluation.sampling import sample
    from align.evaluation.scoring import response_logprob_sums, reward_scores
    from align.evaluation.tables import print_table, write_plot, write_report
    from align.modeling.models import load_causal_lm, load_reward_model, load_tokenizer

    e = cfg.eval
    models = {label: name for label, name in e.models.items() if name is not None}
    if e.reference not in models:
        raise UserError(f"eval.reference={e.reference!r} is not one of eval.models ({', '.join(models)})")
    for label, name in [*models.items(), ("reward model", e.reward_model), ("audit reward model",
                                                                             e.audit_reward_model)]:
        if name is not None:
            require_stage_output(name, cfg.paths.root, f"the {label} model; run its stage with the same overrides "
                                 f"first, or set eval.models.{label} (eval.reward_model, eval.audit_reward_model) to "
                                 "another directory or null")
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
    prompts = [r["prompt"] for r in records
               if len(chat_ids(tokenizer, r["prompt"], generation_prompt=True)) <= e.max_prompt_tokens]
    dropped_long_prompts = len(records) - len(prompts)
    if dropped_long_prompts:
        print0(f"left out {dropped_long_prompts} prompts longer than eval.max_prompt_tokens={e.max_prompt_tokens}")
    prompts = prompts[: e.num_prompts] if e.num_prompts > 0 else prompts

    def load_lm(name: str):
        return load_causal_lm(cfg.model, tokenizer, cfg.sft.init_from if name == BASE else name, cfg.seed)

    # 1. sample: every model answers every prompt with the same sampling settings and seed
    completions, own_logprobs = {}, {}
    for label, name in tqdm(models.items(), desc="sampling", disable=not is_main_process()):
        lm = load_lm(name)
        completions[label] = sample(lm, tokenizer, prompts, e.max_new_tokens, e.temperature, e.batch_size, cfg.seed)
        if e.temperature > 0:
            own_logprobs[label] = response_logprob_sums(lm, completions[label], pad_id, e.temperature, e.batch_size)
        del lm

    # 2. KL to the reference, on each model's own samples (undefined for greedy decoding)
    kl = {}
    if e.temperature > 0:
        reference = load_lm(reference_path)
        for label in models:
            ref_logprobs = response_logprob_sums(reference, completions[label], pad_id, e.temperature, e.batch_size)
            kl[label] = (own_logprobs[label] - ref_logprobs).tolist()
        del reference

    # 3. the reward model's score of every response
    rm_scores, audit_scores = {}, {}
    for scores, path in ((rm_scores, e.reward_model), (audit_scores, e.audit_reward_model)):
        if path is not None:
            rm = load_reward_model(cfg.model, tokenizer, path, cfg.seed)
            scores.update({label: reward_scores(rm, completions[label], pad_id, e.batch_size).tolist()
                           for label in models})
            del rm

    # 4. the gold judge's score, where the task has one
    gold = {}
    if judge is not None:
        gold = {label: [judge.score(prompt[-1]["content"], c.text, c.ended)
                        for prompt, c in zip(prompts, completions[label])] for label in models}

    # 5. summary: one row per model; win rates against the reference
    summary = {}
    for label, name in models.items():
        row = {"model": name, "prompts": len(prompts),
               "response_tokens": mean(c.n_tokens for c in completions[label]),
               "eos_rate": mean(c.ended for c in completions[label])}
        if gold:
            row["gold_score"] = mean(gold[label])
            if judge.details is not None:  # which of the task's checks the model passes: a weak link shows by name
                row["gold_checks"] = check_rates(judge, [p[-1]["content"] for p in prompts],
                                                 [c.text for c in completions[label]],
                                                 [c.ended for c in completions[label]])
            row["gold_win_rate"] = win_rate(gold[label], gold[e.reference])
        if rm_scores:
            row["rm_score"] = mean(rm_scores[label])
            row["rm_win_rate"] = win_rate(rm_scores[label], rm_scores[e.reference])
        if audit_scores:
            row["audit_rm_score"] = mean(audit_scores[label])
            row["audit_rm_win_rate"] = win_rate(audit_scores[label], audit_scores[e.reference])
        if kl:
            row["kl"] = mean(kl[label])
        summary[label] = row
    warnings = unconfirmed_gains(summary, e.reference)  # shown under the table and in the report

    # 6. write: numbers, every response, the report and the plot
    results = {"reference": e.reference, "temperature": e.temperature, "max_new_tokens": e.max_new_tokens,
               "seed": cfg.seed, "prompts_file": cfg.data.prompts_eval, "dropped_long_prompts": dropped_long_prompts,
               "models": summary, "warnings": warnings}
    if is_main_process():
        with open(run_dir / "responses.jsonl", "w", encoding="utf-8") as f:
            for i, prompt in enumerate(prompts):
                f.write(json.dumps({"prompt": prompt, "responses": {
                    label: {"text": completions[label][i].text, "ended": completions[label][i].ended,
                            **({"gold": gold[label][i]} if gold else {}),
                            **({"rm": rm_scores[label][i]} if rm_scores else {}),
                            **({"audit_rm": audit_scores[label][i]} if audit_scores else {}),
                            **({"kl": kl[label][i]} if kl else {})}
                    for label in models}}) + "\n")
        write_report(run_dir / "report.md", results, prompts[: e.report_samples],
                     {label: [c.text if c.ended else c.text + " [no EOS]" for c in completions[label]]
                      for label in models})
        write_plot(run_dir / "eval.png", results)
        (run_dir / "eval.json").write_text(json.dumps(results, indent=2) + "\n")  # last: it marks the run finished
        print_table(results)
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_stage(evaluate, cfg, preemptible=False)  # seconds of work and nothing to checkpoint: SIGTERM ends it


if __name__ == "__main__":
    drop_launcher_arguments()
    main()
