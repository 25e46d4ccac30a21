"""What the Trainer-based stages share (SFT, RM, and TRL's trainers in PPO's place): arguments from the config,
callbacks, resume."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_model
from transformers import TrainerCallback, TrainerState

from align.core.config import Config, TrainerSettings
from align.core.console import is_main_process, print0
from align.runtime import checkpoints
from align.runtime.distributed import barrier
from align.runtime.runs import MetricsLog
from align.trainers.callbacks import reliability_callbacks


def log_tensorboard_to(run_dir: Path) -> None:
    """Point the Trainer's TensorBoard log into the run directory: transformers 5 takes that directory from the
    environment only, and without it writes a timestamped folder of its own."""
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")


def trainer_arguments(cfg: Config, run_dir: Path, **own) -> dict:
    """The keyword arguments of any TRL trainer config of ours (SFTConfig, RewardConfig, RLOOConfig, GRPOConfig,
    DPOConfig): what they all share, from the config, then the trainer's `own` settings."""
    shared = dict(
        output_dir=str(run_dir),
        seed=cfg.seed,
        bf16=cfg.distributed.mixed_precision == "bf16",
        fp16=cfg.distributed.mixed_precision == "fp16",
        # transformers refuses bf16 without a GPU unless told the CPU is meant (accelerate autocasts on the CPU)
        use_cpu=cfg.distributed.mixed_precision == "bf16" and not torch.cuda.is_available(),
        report_to=["tensorboard"] if cfg.logger.tensorboard else [],
        save_strategy="steps",
        save_total_limit=None,  # align.trainers.callbacks removes old checkpoints once the new one is complete
        activation_checkpointing=False,  # TRL's configs turn it on unless told otherwise
        dataloader_pin_memory=torch.cuda.is_available(),  # pinned memory serves a GPU only
        # several processes: keep the process group align.runtime.distributed joined (a Trainer's own has no CPU
        # backend)
        accelerator_config={"use_configured_state": cfg.distributed.world_size > 1},
    )
    return {**shared, **own}


def settings_arguments(s: TrainerSettings) -> dict:
    """The Trainer settings of the SFT and RM stages (sft:, rm:) as TRL config arguments."""
    return dict(
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
        logging_steps=s.logging_steps,
        eval_strategy="steps",
        eval_steps=s.eval_steps,
        save_steps=s.save_steps,
        dataloader_num_workers=s.dataloader_workers,
        activation_checkpointing=s.gradient_checkpointing,
    )


def stage_callbacks(metrics_log: MetricsLog, prefix: str, s: TrainerSettings) -> list:
    """metrics.jsonl, complete checkpoints, stopping on SIGTERM/SIGUSR1, and the non-finite guard."""
    return [jsonl_callback(metrics_log, prefix), *reliability_callbacks(metrics_log, s.save_total_limit)]


def jsonl_callback(metrics_log: MetricsLog, prefix: str):
    """A TrainerCallback that copies every Trainer log line into metrics.jsonl under `prefix/`."""
    class LogToJsonl(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            metrics_log.write(state.global_step, {f"{prefix}/{k}": v for k, v in (logs or {}).items()})

    return LogToJsonl()


def train_from(trainer, checkpoint: str | None, max_steps: int) -> float | None:
    """trainer.train(resume_from_checkpoint=checkpoint); returns the mean training loss of the steps trained now
    (None if none). A checkpoint at max_steps is a finished training, so only its weights and state are loaded:
    resumed there, the Trainer trains one step past max_steps (it checks the limit after a step, not before)."""
    if checkpoint is not None and max_steps > 0:
        state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
        if state.global_step >= max_steps:
            load_model(trainer.model, str(Path(checkpoint) / "model.safetensors"))
            trainer.state = state
            return None
    return trainer.train(resume_from_checkpoint=checkpoint).training_loss


def save_final(trainer, directory: Path) -> None:
    """trainer.save_model(directory), also for a trainer whose run was finished before: train_from then only loads the
    last checkpoint's weights, DeepSpeed never wraps them, and transformers' DeepSpeed save would look for its engine.
    Unwrapped, the model is whole on every process, so the main process saves it as is."""
    if trainer.is_deepspeed_enabled and trainer.model_wrapped is trainer.model:
        if is_main_process():
            trainer.model.save_pretrained(directory)
            trainer.processing_class.save_pretrained(directory)
        barrier()
    else:
        trainer.save_model(str(directory))


def last_checkpoint(run_dir: Path, resume: bool) -> str | None:
    """The newest complete checkpoint to resume from, announced, or None for a fresh start; metrics.jsonl is cut
    back to what was logged when that checkpoint was written."""
    last = checkpoints.resume_point(run_dir, resume)
    MetricsLog(run_dir / "metrics.jsonl").keep_first(checkpoints.metrics_rows(last) if last else 0)
    if last:
        print0(f"resuming from {last}")
    return str(last) if last else None
