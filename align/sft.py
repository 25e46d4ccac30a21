"""Stage 1: supervised fine-tuning on chat demonstrations (InstructGPT step 1).

Minimises the negative log-likelihood of the assistant turns (their end-of-turn EOS included, so the model learns
to stop); user turns and padding are masked out of the loss. Built on TRL's SFTTrainer.

    python -m align.sft +experiment=tiny                 # offline, CPU
    python -m align.sft +experiment=small                # gpt2 on Alpaca from the hub
    accelerate launch --config_file conf/accelerate/zero2.yaml -m align.sft +experiment=small   # several GPUs

Reads   cfg.data.sft_train / sft_eval (built on first use by data_prep), cfg.sft.init_from (hub name, directory, or
        null for a model built from cfg.model.scratch)
Writes  cfg.paths.sft/: final/ (plain Hugging Face model + tokenizer + chat template), checkpoint-N/,
        metrics.jsonl, metrics.json, config.resolved.yaml, provenance.json, tensorboard/
"""

from __future__ import annotations

import random
from pathlib import Path

import hydra
from omegaconf import DictConfig

from align.core.config import Config
from align.core.console import print0
from align.core.contracts import training_row
from align.core.errors import UserError
from align.core.records import read_records
from align.core.tokens import chat_ids, replies_past_budgets, reply_tokens
from align.runtime.distributed import drop_launcher_arguments, main_process_first
from align.runtime.runs import MetricsLog, finish_run, run_stage, start_run
from data_prep.prepare import ensure_prepared

REPLIES_CHECKED = 1000  # demonstrations whose reply lengths are held against the sampling budgets


def train(cfg: Config) -> dict:
    from datasets import Dataset
    from trl import SFTConfig

    from align.evaluation.judging import check_judge, gold_evaluation
    from align.modeling.models import load_causal_lm, load_tokenizer, set_attention_dropout
    from align.trainers.sft_trainer import sft_arguments, sft_trainer
    from align.trainers.stage_setup import (
        last_checkpoint,
        log_tensorboard_to,
        save_final,
        stage_callbacks,
        train_from,
    )

    run_dir = Path(cfg.paths.sft)
    start_run(run_dir, cfg, "sft")
    log_tensorboard_to(run_dir)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")

    # 1. data: built on first use, every record checked, and the judge tried on it, before any model is loaded
    with main_process_first():
        ensure_prepared(cfg.data, [cfg.data.sft_train, cfg.data.sft_eval,
                                    cfg.data.prompts_eval if cfg.data.judge else None])
    train_records, train_report = read_records(cfg.data.sft_train, "sft", cfg.data.on_bad_record)
    eval_records, eval_report = read_records(cfg.data.sft_eval, "sft", cfg.data.on_bad_record)
    check_judge(cfg.data)

    # 2. model and tokenizer (chat tokens, distinct pad, eos = end of turn)
    tokenizer = load_tokenizer(cfg.model)
    model = load_causal_lm(cfg.model, tokenizer, cfg.sft.init_from, cfg.seed)
    set_attention_dropout(model, cfg.sft.attention_dropout)
    # A conversation cut at max_length would train on a reply without its end of turn: left out and counted, as the
    # RM does, unless packing cuts rows across conversations by design ("wrapped").
    too_long = {}
    if not (cfg.sft.packing and cfg.sft.packing_strategy == "wrapped"):
        for split, records in (("train", train_records), ("eval", eval_records)):
            kept = [r for r in records if len(chat_ids(tokenizer, r["messages"])) <= cfg.sft.max_length]
            too_long[split] = len(records) - len(kept)
            records[:] = kept
        if any(too_long.values()):
            print0(f"left out conversations longer than sft.max_length={cfg.sft.max_length} tokens: {too_long}")
        if not train_records or not eval_records:
            raise UserError(f"no conversation fits sft.max_length={cfg.sft.max_length} tokens: {too_long}")

    # An answer longer than the sampling budgets is cut in PPO and in the evaluation: said before training, on a
    # sample of the demonstrations (a task of one's own with longer answers than the experiment's needs higher ones).
    sample = random.Random(cfg.seed).sample(train_records, min(len(train_records), REPLIES_CHECKED))
    for warning in replies_past_budgets([reply_tokens(tokenizer, r["messages"]) for r in sample],
                                        {"ppo.response_tokens": cfg.ppo.response_tokens,
                                         "eval.max_new_tokens": cfg.eval.max_new_tokens}):
        print0(f"warning: {warning}")

    # 3. trainer: loss on assistant tokens only, through the template's {% generation %} markers
    trainer = sft_trainer(
        cfg.sft.trl_fused_lm_head,
        model=model,
        args=SFTConfig(**sft_arguments(cfg, run_dir)),
        train_dataset=Dataset.from_list([training_row(r, "sft") for r in train_records]),
        eval_dataset=Dataset.from_list([training_row(r, "sft") for r in eval_records]),
        processing_class=tokenizer,
        callbacks=stage_callbacks(metrics_log, "sft", cfg.sft),
    )

    # 4. train, continuing from the last checkpoint of this run directory if there is one
    last = last_checkpoint(run_dir, cfg.sft.resume)
    train_loss = train_from(trainer, last, cfg.sft.max_steps)

    # 5. the plain Hugging Face model directory first (nothing after training can lose it), then the final evaluation
    save_final(trainer, run_dir / "final")
    metrics = {"train_loss": train_loss, "global_step": trainer.state.global_step,
               "resumed_from": last, **trainer.evaluate()}
    metrics.update({f"eval_{k}": v for k, v in gold_evaluation(model, tokenizer, cfg.data, cfg.eval, cfg.seed).items()})
    metrics["dropped_records"] = {r.path: dict(r.dropped) for r in (train_report, eval_report)}
    metrics["dropped_too_long"] = too_long
    finish_run(run_dir, metrics_log, trainer.state.global_step, "sft", metrics)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_stage(train, cfg)


if __name__ == "__main__":
    drop_launcher_arguments()
    main()
