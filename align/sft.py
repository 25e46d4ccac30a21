"""Stage 1: supervised fine-tuning on chat demonstrations (InstructGPT step 1).

Minimises the negative log-likelihood of the assistant turns (their end-of-turn EOS included, so the model learns
to stop); user turns and padding are masked out of the loss. Built on TRL's SFTTrainer.

    python -m align.sft +experiment=tiny                 # offline, CPU, about a minute
    python -m align.sft +experiment=small                # gpt2 on Alpaca from the hub
    accelerate launch -m align.sft +experiment=small     # several processes

Reads   cfg.data.sft_train / sft_eval (built on first use by data_prep), cfg.sft.init_from (hub name, directory, or
        null for a model built from cfg.model.scratch)
Writes  cfg.paths.sft/: final/ (plain Hugging Face model + tokenizer + chat template), checkpoint-N/,
        metrics.jsonl, metrics.json, config.resolved.yaml, provenance.json, tensorboard/
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from align.config import Config
from align.runs import MetricsLog, is_main_process, run_stage, start_run


def train(cfg: Config) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    from align.data import read_records
    from align.judging import gold_evaluation
    from align.models import load_causal_lm, load_tokenizer
    from data_prep.prepare import ensure_prepared

    run_dir = Path(cfg.paths.sft)
    start_run(run_dir, cfg)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")

    # 1. data: built on first use, every record checked before any model is loaded
    ensure_prepared(cfg.data)
    train_records, train_report = read_records(cfg.data.sft_train, "sft", cfg.data.on_bad_record)
    eval_records, eval_report = read_records(cfg.data.sft_eval, "sft", cfg.data.on_bad_record)
    for report in (train_report, eval_report):
        if report.dropped:
            print(f"dropped {sum(report.dropped.values())} malformed records from {report.path}: "
                  f"{dict(report.dropped)}; first: {report.first_problems}")

    # 2. model and tokenizer (chat tokens, distinct pad, eos = end of turn)
    tokenizer = load_tokenizer(cfg.model)
    model = load_causal_lm(cfg.model, tokenizer, cfg.sft.init_from, cfg.seed)

    # 3. trainer: loss on assistant tokens only, through the template's {% generation %} markers
    s = cfg.sft
    args = SFTConfig(
        output_dir=str(run_dir),
        num_train_epochs=s.epochs,
        max_steps=s.max_steps,
        learning_rate=s.lr,
        lr_scheduler_type=s.lr_scheduler,
        warmup_steps=s.warmup_ratio,  # a float below 1 is a fraction of the total steps
        weight_decay=s.weight_decay,
        adam_beta1=s.adam_beta1,
        adam_beta2=s.adam_beta2,
        adam_epsilon=s.adam_eps,
        max_grad_norm=s.max_grad_norm,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        per_device_eval_batch_size=s.eval_batch_size,
        max_length=s.max_length,
        packing=s.packing,
        assistant_only_loss=True,
        logging_steps=s.logging_steps,
        eval_strategy="steps",
        eval_steps=s.eval_steps,
        save_strategy="steps",
        save_steps=s.save_steps,
        save_total_limit=s.save_total_limit,
        seed=cfg.seed,
        bf16=cfg.distributed.mixed_precision == "bf16",
        fp16=cfg.distributed.mixed_precision == "fp16",
        report_to=["tensorboard"] if cfg.logger.tensorboard else [],
        dataloader_num_workers=s.dataloader_workers,
    )

    # transformers 5 takes the TensorBoard directory from the environment only; without it, a timestamped folder.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")

    class LogToJsonl(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            metrics_log.write(state.global_step, {f"sft/{k}": v for k, v in (logs or {}).items()})

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_records),
        eval_dataset=Dataset.from_list(eval_records),
        processing_class=tokenizer,
        callbacks=[LogToJsonl()],
    )

    # 4. train, continuing from the last checkpoint of this run directory if there is one
    last = get_last_checkpoint(str(run_dir)) if s.resume and run_dir.is_dir() else None
    if last:
        print(f"resuming from {last}")
    result = trainer.train(resume_from_checkpoint=last)

    # 5. final evaluation and the plain Hugging Face model directory
    metrics = {"train_loss": result.training_loss, "global_step": trainer.state.global_step,
               "resumed_from": last, **{k: v for k, v in trainer.evaluate().items()}}
    metrics.update({f"eval_{k}": v for k, v in gold_evaluation(model, tokenizer, cfg.data, cfg.eval, cfg.seed).items()})
    metrics["dropped_records"] = {r.path: dict(r.dropped) for r in (train_report, eval_report)}
    trainer.save_model(str(run_dir / "final"))
    if is_main_process():
        metrics_log.write(trainer.state.global_step, {f"sft/final/{k}": v for k, v in metrics.items()
                                                      if isinstance(v, (int, float))})
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(json.dumps(metrics, indent=2))
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_stage(train, cfg)


if __name__ == "__main__":
    main()
