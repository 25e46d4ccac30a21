"""Stage 0: pretraining (the GPT-1/GPT-2 step): next-token prediction on plain text.

Trains a causal LM on documents of plain text, every token in the loss, documents concatenated with an EOS between
them into full rows (pretrain.packing). From scratch (pretrain.init_from null builds model.scratch), or continued from
a pretrained model on text of one's own. Built on TRL's SFTTrainer, whose language-modelling path takes
`{"text": ...}` records; SFT then starts from the result: sft.init_from=${paths.pretrain}/final.

    python -m align.pretrain +experiment=tiny                    # offline, CPU: the tiny world's web
    python -m align.pretrain +experiment=small pretrain.init_from=gpt2 data.pretrain_train=my_text.jsonl

Reads   cfg.data.pretrain_train / pretrain_eval ({"text": ...} per line), cfg.pretrain.init_from
Writes  cfg.paths.pretrain/: final/ (plain Hugging Face causal LM + tokenizer), checkpoint-N/, metrics.jsonl,
        metrics.json (eval_loss and perplexity on the held-out text, at the start and at the end), ...
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
from omegaconf import DictConfig

from align.core.config import Config
from align.core.contracts import training_row
from align.core.errors import UserError
from align.core.records import read_records
from align.runtime.distributed import drop_launcher_arguments, main_process_first
from align.runtime.runs import MetricsLog, finish_run, run_stage, start_run
from data_prep.prepare import ensure_prepared


def train(cfg: Config) -> dict:
    from datasets import Dataset
    from trl import SFTConfig

    from align.modeling.models import load_causal_lm, load_tokenizer
    from align.trainers.sft_trainer import sft_trainer
    from align.trainers.stage_setup import (
        last_checkpoint,
        log_tensorboard_to,
        save_final,
        settings_arguments,
        stage_callbacks,
        train_from,
        trainer_arguments,
    )

    s = cfg.pretrain
    if cfg.data.pretrain_train is None or cfg.data.pretrain_eval is None:
        raise UserError("pretraining needs plain text: set data.pretrain_train and data.pretrain_eval to JSONL files "
                        'of {"text": ...} records (the tiny worlds write them)')
    run_dir = Path(cfg.paths.pretrain)
    start_run(run_dir, cfg, "pretrain")
    log_tensorboard_to(run_dir)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")

    # 1. data: built on first use, every record checked
    with main_process_first():
        ensure_prepared(cfg.data, [cfg.data.pretrain_train, cfg.data.pretrain_eval])
    train_records, train_report = read_records(cfg.data.pretrain_train, "text", cfg.data.on_bad_record)
    eval_records, eval_report = read_records(cfg.data.pretrain_eval, "text", cfg.data.on_bad_record)

    # 2. model and tokenizer: the chat tokens are in the vocabulary already, for SFT; plain text never uses them
    tokenizer = load_tokenizer(cfg.model)
    model = load_causal_lm(cfg.model, tokenizer, s.init_from, cfg.seed, "pretrain.init_from")

    # 3. trainer: every token of the text in the loss, the EOS that ends each document included
    last = last_checkpoint(run_dir, s.resume)
    args = SFTConfig(**trainer_arguments(
        cfg, run_dir,
        **settings_arguments(s),
        max_length=s.max_length,
        packing=s.packing,
        packing_strategy="wrapped",
        dataset_text_field="text",
        eval_on_start=last is None,  # the starting model's held-out loss, the number pretraining is measured from
    ))
    trainer = sft_trainer(
        False,
        model=model,
        args=args,
        train_dataset=Dataset.from_list([training_row(r, "text") for r in train_records]),
        eval_dataset=Dataset.from_list([training_row(r, "text") for r in eval_records]),
        processing_class=tokenizer,
        callbacks=stage_callbacks(metrics_log, "pretrain", s),
    )

    # 4. train, continuing from the last checkpoint of this run directory if there is one
    train_loss = train_from(trainer, last, s.max_steps)

    # 5. the plain Hugging Face model directory first (nothing after training can lose it), then the final evaluation
    save_final(trainer, run_dir / "final")
    metrics = {"train_loss": train_loss, "global_step": trainer.state.global_step, "resumed_from": last,
               **trainer.evaluate()}
    metrics["eval_perplexity"] = math.exp(metrics["eval_loss"])
    start = [r for r in metrics_log.rows() if r["step"] == 0 and "pretrain/eval_loss" in r]
    if start:
        metrics["initial_eval_loss"] = start[0]["pretrain/eval_loss"]
        metrics["initial_eval_perplexity"] = math.exp(metrics["initial_eval_loss"])
    metrics["dropped_records"] = {r.path: dict(r.dropped) for r in (train_report, eval_report)}
    finish_run(run_dir, metrics_log, trainer.state.global_step, "pretrain", metrics)
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_stage(train, cfg)


if __name__ == "__main__":
    drop_launcher_arguments()
    main()
