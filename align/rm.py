"""Stage 2: the reward model (InstructGPT step 2).

Learns a scalar r(x, y) from preference pairs with the Bradley-Terry loss
-log sigmoid(r(x, y_chosen) - r(x, y_rejected)) (optional per-pair margin, optional reward centering), read at the
EOS that ends the response. Built on TRL's RewardTrainer, initialised from the SFT model, dropout off. After
training the RM is shifted so that SFT demonstrations score a mean of 0 (InstructGPT section 3.5); the shift is
stored in the weights.

    python -m align.rm +experiment=tiny                  # offline, CPU, after `python -m align.sft +experiment=tiny`
    python -m align.rm +experiment=small                 # gpt2 on Anthropic HH-RLHF

Reads   cfg.rm.init_from (default ${paths.sft}/final), cfg.data.prefs_train / prefs_eval, cfg.rm.normalize_on
Writes  cfg.paths.rm/: final/ (AutoModelForSequenceClassification directory + tokenizer + chat template),
        eval.json (accuracy, margins, calibration, length bias, gold agreement, on the held-out pairs and on the
        policy's own answers), metrics.jsonl, metrics.json, ...;
        with rm.restarts > 1, each restart's checkpoints in restart-<k>/ and their held-out accuracies in eval.json
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import hydra
from omegaconf import DictConfig

from align.core.config import Config
from align.core.console import is_main_process, print0
from align.core.contracts import training_row
from align.core.errors import UserError
from align.core.records import read_records
from align.core.tokens import chat_ids
from align.runtime.checkpoints import write_atomic
from align.runtime.distributed import drop_launcher_arguments, forget_accelerator, main_process_first
from align.runtime.runs import MetricsLog, finish_run, require_stage_output, run_stage, start_run
from data_prep.prepare import ensure_prepared

TYPICAL_SAMPLE = 2000  # training pairs whose chosen replies set the implicit score's typical length


def train(cfg: Config) -> dict:
    from datasets import Dataset

    from align.evaluation.judging import check_judge
    from align.evaluation.rm_eval import accuracy, evaluate_pairs, held_out_overstates
    from align.modeling.implicit_reward import typical_tokens
    from align.modeling.models import load_tokenizer
    from align.modeling.reward_model import score, shift_scores
    from align.trainers.stage_setup import log_tensorboard_to, save_final

    if cfg.rm.audit and cfg.paths.rm != cfg.paths.rm_audit:
        cfg = audit_config(cfg)
    run_dir = Path(cfg.paths.rm)
    s = cfg.rm
    require_stage_output(s.init_from, cfg.paths.root, "run `python -m align.sft` with the same overrides first")
    start_run(run_dir, cfg, "rm")
    log_tensorboard_to(run_dir)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")
    if s.restarts > 1:  # the restarts log their steps in their own directories; this log gets the final row only
        metrics_log.keep_first(0)

    # 1. data: pairs to train and evaluate on, demonstrations to normalise on; every record checked, and the judge
    # tried, first
    with main_process_first():
        ensure_prepared(cfg.data, [cfg.data.prefs_train, cfg.data.prefs_eval, s.normalize_on,
                                   cfg.data.prompts_eval if cfg.data.judge else None])
    train_pairs, train_report = read_records(cfg.data.prefs_train, "pair", cfg.data.on_bad_record)
    eval_pairs, eval_report = read_records(cfg.data.prefs_eval, "pair", cfg.data.on_bad_record)
    reference, _ = read_records(s.normalize_on, "sft", cfg.data.on_bad_record)
    if s.normalize_samples > 0:
        reference = reference[: s.normalize_samples]
    judge = check_judge(cfg.data)
    with_margin = sum("margin" in p for p in train_pairs)
    if 0 < with_margin < len(train_pairs):  # the dataset's columns come from the first pair: all or none
        raise UserError(f"{cfg.data.prefs_train}: {with_margin} of {len(train_pairs)} pairs have a margin; give "
                        "every pair one, or none")
    typical_sample = [p["prompt"] + p["chosen"] for p in train_pairs[:TYPICAL_SAMPLE]]  # before the empty-reply copies
    train_pairs = with_empty_rejected(train_pairs, s.empty_rejected, cfg.seed)

    # 2-4. model, trainer, training, as many times as rm.restarts asks: which checks an RM learns varies with its
    # seed (head initialisation, pair order), and its accuracy on the held-out pairs' own labels tells which runs
    # learned more (docs/ablations.md). One model is in memory at a time.
    tokenizer = load_tokenizer(cfg.model, path=s.init_from)

    # The score is read at the EOS, so a conversation that does not fit is left out, never cut (TRL's filter does
    # the same for training pairs).
    def fits(messages: list[dict]) -> bool:
        return len(chat_ids(tokenizer, messages)) <= s.max_length

    n_eval, n_reference = len(eval_pairs), len(reference)
    eval_pairs = [p for p in eval_pairs if fits(p["prompt"] + p["chosen"]) and fits(p["prompt"] + p["rejected"])]
    reference = [r for r in reference if fits(r["messages"])]
    if not reference or not eval_pairs:
        raise UserError(f"nothing left to normalise on or evaluate within rm.max_length={s.max_length}: "
                        f"{n_eval} held-out pairs, {n_reference} demonstrations before")

    # TRL tokenises the pairs it is given as messages; the datasets it made for the first restart serve the others
    datasets = {split: Dataset.from_list([training_row(p, "pair") for p in pairs])
                for split, pairs in (("train", train_pairs), ("eval", eval_pairs))}

    # the implicit RM's score per reply token, scaled to this length (align.modeling.implicit_reward)
    typical = typical_tokens(tokenizer, typical_sample) if s.kind == "implicit" and s.length_normalize else None

    def fit_restart(k: int) -> tuple:
        out_dir = run_dir if s.restarts == 1 else run_dir / f"restart-{k}"
        log = metrics_log if s.restarts == 1 else MetricsLog(out_dir / "metrics.jsonl")
        rm, trainer, result = fit_one(cfg, tokenizer, datasets, out_dir, cfg.seed + k, log)
        if s.kind == "implicit":
            rm.typical_tokens = typical
        datasets.update(train=trainer.train_dataset, eval=trainer.eval_dataset)
        return rm, trainer, result

    restarts, chosen = [], 0
    for k in range(s.restarts):
        rm, trainer, result = fit_restart(k)
        if s.restarts > 1:
            result["accuracy"] = accuracy(rm, tokenizer, eval_pairs, s.eval_batch_size)
            print0(f"restart {k} (seed {cfg.seed + k}): held-out accuracy {result['accuracy']:.3f}")
            if not restarts or result["accuracy"] > restarts[chosen]["accuracy"]:
                chosen = k
        restarts.append(result)
        if k != s.restarts - 1:
            del rm, trainer
    if chosen != s.restarts - 1:  # back to the chosen restart, from its last checkpoint: nothing trains again
        del rm, trainer
        rm, trainer, _ = fit_restart(chosen)
    too_long = {"train": len(train_pairs) - restarts[chosen]["train_pairs"], "eval": n_eval - len(eval_pairs),
                "reference": n_reference - len(reference)}
    if any(too_long.values()):
        print0(f"left out conversations longer than rm.max_length={s.max_length} tokens: {too_long}")

    # 5. normalise: the reference demonstrations score a mean of 0 in the saved model
    offset = score(rm, tokenizer, [r["messages"] for r in reference], s.eval_batch_size).mean().item()
    shift_scores(rm, offset)

    # 6. save the plain Hugging Face directory first (nothing after training can lose it), then evaluate on held-out
    # pairs
    save_final(trainer, run_dir / "final")
    if s.kind == "implicit" and is_main_process():  # the LM is saved; the scorer also needs its beta and reference
        rm.save(run_dir / "final", s.init_from)
    evaluation = evaluate_pairs(rm, tokenizer, eval_pairs, judge, s.eval_batch_size)
    evaluation.update(check_on_policy(cfg, rm, tokenizer, judge))
    if held_out_overstates(evaluation):
        print0(f"warning: this RM agrees with the gold judge on {evaluation['gold_agreement']:.2f} of the held-out "
               f"pairs but on {evaluation['policy_gold_agreement']:.2f} of {evaluation['policy_decided_pairs']} pairs "
               "of ppo.policy_init's own answers: it tells that model's mistakes apart less well than the held-out "
               "pairs show, and PPO against it may not fix them (docs/ablations.md, \"A task nobody tuned for\")")
    if evaluation.get("checks_at_chance"):  # a weak link, by name, before PPO spends its time on it
        by_check = evaluation["gold_agreement_by_check"]
        weak = ", ".join(f"`{check}` ({by_check[check]['agreement']:.2f} of {by_check[check]['pairs']} pairs)"
                         for check in evaluation["checks_at_chance"])
        print0(f"warning: on the held-out pairs that differ in one check only, this RM agrees with the gold judge no "
               f"more often than chance on {weak}: PPO cannot learn those checks from it. The implicit reward model "
               "(rm.kind=implicit, the tiny experiment's; PPO against it at ppo.kl_coef >= rm.beta x ppo.temperature) "
               "reads copies a classifier misses; another RM seed may learn them (rm.restarts=2 keeps the better of "
               "two by held-out accuracy; docs/ablations.md)")
    if s.restarts > 1:
        evaluation["restarts"] = {"chosen": chosen, "seeds": [r["seed"] for r in restarts],
                                  "accuracy": [r["accuracy"] for r in restarts]}
    metrics = {"train_loss": restarts[chosen]["train_loss"], "global_step": trainer.state.global_step,
               "resumed_from": restarts[chosen]["resumed_from"], "normalization_offset": offset,
               "normalization_samples": len(reference), **evaluation,
               "dropped_too_long": too_long,
               "dropped_records": {r.path: dict(r.dropped) for r in (train_report, eval_report)}}
    if is_main_process():
        write_atomic(run_dir / "eval.json", json.dumps(evaluation, indent=2) + "\n")
    finish_run(run_dir, metrics_log, trainer.state.global_step, "rm", metrics)
    return metrics


def check_on_policy(cfg: Config, rm, tokenizer, judge) -> dict:
    """eval.json's policy_* numbers (align.evaluation.rm_eval.policy_check): the RM against the judge on answers of
    the model PPO starts from. {} for an audit RM (PPO never trains on it), without a judge or held-out prompts, with
    rm.policy_check_samples below 2, with several processes (the check samples from a model loaded outside
    DeepSpeed) or without a local ppo.policy_init; the last two say so."""
    from align.evaluation.rm_eval import policy_check
    from align.modeling.models import load_causal_lm

    s, policy_init = cfg.rm, cfg.ppo.policy_init
    audit_rm = cfg.paths.rm == cfg.paths.rm_audit
    if audit_rm or judge is None or cfg.data.prompts_eval is None or s.policy_check_samples < 2:
        return {}
    if cfg.distributed.world_size > 1:
        print0("the RM's check on the policy's own answers is left out: it runs in one process")
        return {}
    if not Path(policy_init).is_dir():
        print0(f"the RM's check on the policy's own answers is left out: ppo.policy_init={policy_init} is not a "
               "local model directory")
        return {}
    records, _ = read_records(cfg.data.prompts_eval, "prompt", cfg.data.on_bad_record)
    if not records:
        return {}
    policy = load_causal_lm(cfg.model, tokenizer, policy_init, cfg.seed, "ppo.policy_init")
    return policy_check(rm, policy, tokenizer, [r["prompt"] for r in records[: s.policy_check_prompts]], judge,
                        s.policy_check_samples, cfg.eval, cfg.seed)


def fit_one(cfg: Config, tokenizer, datasets: dict, out_dir: Path, seed: int, metrics_log: MetricsLog) -> tuple:
    """One RM trained with `seed` in `out_dir` (continuing from its last checkpoint there) on datasets["train"],
    evaluated on datasets["eval"]: the model as its readers score with it, its trainer, and what the run's metrics
    report of it."""
    from align.trainers.stage_setup import last_checkpoint, train_from

    forget_accelerator()  # the restart before this one built its own
    s = cfg.rm
    build = implicit_trainer if s.kind == "implicit" else classifier_trainer
    trainer, rm = build(cfg, tokenizer, datasets, out_dir, seed, metrics_log)
    last = last_checkpoint(out_dir, s.resume)
    train_loss = train_from(trainer, last, s.max_steps)
    return rm, trainer, {"seed": seed, "train_loss": train_loss, "resumed_from": last,
                         "train_pairs": len(trainer.train_dataset)}


def classifier_trainer(cfg: Config, tokenizer, datasets: dict, out_dir: Path, seed: int, metrics_log: MetricsLog):
    """TRL's RewardTrainer on a one-label classifier from the SFT trunk (new head, dropout off): Bradley-Terry, with
    the pair's margin if the data has one; pairs over max_length are dropped. (trainer, the classifier)."""
    from trl import RewardConfig, RewardTrainer

    from align.modeling.models import load_reward_model
    from align.trainers import stage_setup

    s = cfg.rm
    rm = load_reward_model(cfg.model, tokenizer, s.init_from, seed)
    args = RewardConfig(**stage_setup.trainer_arguments(
        dataclasses.replace(cfg, seed=seed), out_dir, **stage_setup.settings_arguments(s), max_length=s.max_length,
        center_rewards_coefficient=s.center_rewards_coefficient, disable_dropout=True))
    trainer = RewardTrainer(model=rm, args=args, train_dataset=datasets["train"], eval_dataset=datasets["eval"],
                            processing_class=tokenizer, callbacks=stage_setup.stage_callbacks(metrics_log, "rm", s))
    return trainer, rm


def implicit_trainer(cfg: Config, tokenizer, datasets: dict, out_dir: Path, seed: int, metrics_log: MetricsLog):
    """rm.kind=implicit: TRL's DPOTrainer (beta = rm.beta) on the SFT model against a frozen copy of itself.
    (trainer, the two as one scorer: align.modeling.implicit_reward); the policy trains in place."""
    from trl import DPOConfig, DPOTrainer

    from align.modeling.implicit_reward import ImplicitRewardModel
    from align.modeling.models import load_causal_lm
    from align.trainers import stage_setup

    s = cfg.rm
    if not Path(s.init_from).is_dir():
        raise UserError(f"rm.kind=implicit scores against the model it starts from, so rm.init_from must be a local "
                        f"directory (an SFT model's final/): {s.init_from!r} is not")
    policy, reference = (load_causal_lm(cfg.model, tokenizer, s.init_from, seed, "rm.init_from") for _ in range(2))
    reference.requires_grad_(False)
    reference.eval()
    args = DPOConfig(**stage_setup.trainer_arguments(
        dataclasses.replace(cfg, seed=seed), out_dir, **stage_setup.settings_arguments(s), max_length=s.max_length,
        beta=s.beta, disable_dropout=True))  # in both models
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=datasets["train"],
                         eval_dataset=datasets["eval"], processing_class=tokenizer,
                         callbacks=stage_setup.stage_callbacks(metrics_log, "rm", s))
    return trainer, ImplicitRewardModel(policy, reference, s.beta, 0.0, tokenizer)


def with_empty_rejected(pairs: list[dict], share: float, seed: int) -> list[dict]:
    """`pairs`, then for `share` of them (drawn with `seed`) the same prompt and chosen reply against an empty reply,
    with the pair's margin if it has one.

    A policy can end its response at once; an RM that never saw an empty reply has no reason to score it below a real
    one, and PPO then learns to stop early (eval.json's good_vs_empty measures it on the held-out pairs).
    """
    picked = random.Random(seed).sample(range(len(pairs)), round(share * len(pairs)))
    empty = [{"role": "assistant", "content": ""}]
    return pairs + [{**pairs[i], "rejected": empty} for i in sorted(picked)]


def audit_config(cfg: Config) -> Config:
    """The config of the audit RM: the stage's settings on pairs the training RM never saw (data.prefs_audit), with
    another seed, of kind rm.audit_kind, into paths.rm_audit. Its scores tell real gains of a policy from the training
    RM's errors, which a policy optimised against that RM finds (Gao et al. 2022: a proxy judged by a second model).
    An implicit audit RM would score against the same SFT model as an implicit training RM, and both grow without
    bound on the same text far from the data: by default the audit RM is a classifier, trained with
    rm.audit_settings where they are set."""
    if cfg.data.prefs_audit is None:
        raise UserError("rm.audit=true needs pairs of its own: set data.prefs_audit (the tiny world writes them)")
    data = dataclasses.replace(cfg.data, prefs_train=cfg.data.prefs_audit)
    paths = dataclasses.replace(cfg.paths, rm=cfg.paths.rm_audit)
    own = {k: v for k, v in dataclasses.asdict(cfg.rm.audit_settings).items() if v is not None}
    rm = dataclasses.replace(cfg.rm, kind=cfg.rm.audit_kind, **own)
    return dataclasses.replace(cfg, seed=cfg.seed + 1, data=data, paths=paths, rm=rm)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_stage(train, cfg)


if __name__ == "__main__":
    drop_launcher_arguments()
    main()
