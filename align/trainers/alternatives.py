"""PPO's slot filled by one of TRL's trainers instead: RLOO or GRPO against our reward model, or DPO on the pairs.

Chosen with ppo.algorithm (conf/ablation/rloo.yaml, grpo.yaml, dpo.yaml); `python -m align.ppo` hands over to
train() here. The run writes what a PPO run writes, into the same directory (cfg.paths.ppo), so align.eval and
align.report compare every algorithm alike: final/, metrics.jsonl (a row per optimizer step with objective/score,
objective/kl, time/update_s, episodes and, every ppo.gold_eval_every steps, eval/gold_score), metrics.json (with
eval_sft_* and eval_ppo_*), config.resolved.yaml, provenance.json.

The same budget and knobs as PPO. Policy and reference start from ppo.policy_init (SFT), dropout off.
- RLOO, GRPO: ppo.num_generations completions per prompt, ppo.batch_size completions per optimizer step (one step per
  sampled batch), ppo.total_episodes completions in all, as PPO samples ppo.total_episodes responses. Sampling as PPO
  samples (ppo.temperature, no top-k/top-p, ppo.response_tokens, stopping at <|im_end|>); the reward is our reward
  model read at the EOS with the EOS trick (align.trainers.rm_reward); beta = ppo.kl_coef (RLOO: k1 KL in the reward,
  as PPO; GRPO: k3 KL in the loss); clip range ppo.cliprange; TRL's defaults otherwise.
- DPO: ppo.batch_size preference pairs per step, ppo.total_episodes pairs in all, from data.prefs_train; beta =
  ppo.dpo_beta; TRL's sigmoid loss. Offline: no samples during training, so its metrics.jsonl has no objective/*.

Reads   cfg.ppo.policy_init, cfg.ppo.reward_model (RLOO, GRPO), cfg.data.prompts_train or cfg.data.prefs_train
Writes  cfg.paths.ppo/, as align.ppo
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from align.core.config import Config
from align.core.console import print0
from align.core.contracts import training_row
from align.core.errors import UserError
from align.core.records import read_records
from align.core.tokens import chat_ids, never_sampled
from align.evaluation.judging import check_judge, final_gold_evaluation, gold_evaluation
from align.modeling.models import disable_dropout, load_causal_lm, load_reward_scorer, load_tokenizer
from align.runtime.distributed import main_process_first
from align.runtime.runs import MetricsLog, finish_run, require_stage_output, start_run, update_rows
from align.trainers.callbacks import reliability_callbacks
from align.trainers.rm_reward import RewardModelReward
from align.trainers.stage_setup import last_checkpoint, log_tensorboard_to, train_from, trainer_arguments
from data_prep.prepare import ensure_prepared

ONLINE = ("rloo", "grpo")


def train(cfg: Config) -> dict:
    s = cfg.ppo
    upstreams = [(s.policy_init, "align.sft")] + [(s.reward_model, "align.rm")] * (s.algorithm in ONLINE)
    for upstream, stage in upstreams:
        require_stage_output(upstream, cfg.paths.root, f"run `python -m {stage}` with the same overrides first")
    if s.ptx_coef > 0 or s.lora.enabled:
        raise UserError(f"ppo.ptx_coef and ppo.lora apply to PPO only, not to ppo.algorithm={s.algorithm}")
    if cfg.distributed.deepspeed_zero_stage == 3:  # the RM reward's KL and the gold judge use the plain policy
        raise UserError(f"ppo.algorithm={s.algorithm} is not supported under DeepSpeed ZeRO-3: launch with zero2.yaml "
                        "or ddp.yaml")
    per_step = s.batch_size * cfg.distributed.world_size
    steps = s.total_episodes // per_step
    if steps < 1:
        raise UserError(f"ppo.total_episodes={s.total_episodes} is less than one batch ({per_step})")
    if s.algorithm in ONLINE and s.batch_size % s.num_generations:
        raise UserError(f"ppo.batch_size={s.batch_size} is not divisible by ppo.num_generations={s.num_generations}")
    run_dir = Path(cfg.paths.ppo)
    start_run(run_dir, cfg, "ppo")
    log_tensorboard_to(run_dir)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")

    data_file = cfg.data.prompts_train if s.algorithm in ONLINE else cfg.data.prefs_train
    with main_process_first():
        ensure_prepared(cfg.data, [data_file, cfg.data.prompts_eval if cfg.data.judge else None])
    check_judge(cfg.data)  # tried on the held-out prompts before any model is loaded
    tokenizer = load_tokenizer(cfg.model, path=s.policy_init)
    policy = load_causal_lm(cfg.model, tokenizer, s.policy_init, cfg.seed, "ppo.policy_init")
    reference = load_causal_lm(cfg.model, tokenizer, s.policy_init, cfg.seed, "ppo.policy_init")
    reference.requires_grad_(False)
    reference.eval()
    for lm in (policy, reference):
        disable_dropout(lm)

    def length(messages: list[dict], generation_prompt: bool) -> int:
        return len(chat_ids(tokenizer, messages, generation_prompt))

    gold_settings = dataclasses.replace(cfg.eval, num_prompts=s.gold_eval_prompts)
    callbacks = [TrainingLog(metrics_log, s.algorithm, per_step, s.gold_eval_every,
                             lambda model: gold_evaluation(model, tokenizer, cfg.data, gold_settings, cfg.seed)),
                 *reliability_callbacks(metrics_log, s.save_total_limit)]
    args = alternative_arguments(cfg, run_dir, steps)
    records, _ = read_records(data_file, "prompt" if s.algorithm in ONLINE else "pair", cfg.data.on_bad_record)
    if s.algorithm in ONLINE:
        kept = [training_row(r, "prompt") for r in records if length(r["prompt"], True) <= s.max_prompt_tokens]
        trainer = online_trainer(cfg, args, policy, reference, tokenizer, kept, callbacks)
    else:
        max_length = s.max_prompt_tokens + s.response_tokens
        kept = [{k: v for k, v in training_row(r, "pair").items() if k != "margin"} for r in records
                if max(length(r["prompt"] + r[side], False) for side in ("chosen", "rejected")) <= max_length]
        trainer = dpo_trainer(cfg, args, policy, reference, tokenizer, kept, callbacks, max_length)
    if len(kept) < len(records):
        print0(f"dropped {len(records) - len(kept)} of {len(records)} records of {data_file} longer than "
              f"ppo.max_prompt_tokens (+ ppo.response_tokens for pairs)")

    last = last_checkpoint(run_dir, s.resume)
    train_from(trainer, last, steps)

    # Final: the plain Hugging Face directory first, so that nothing after training can lose it, then the judged
    # evaluation of the policy next to its reference (the same numbers PPO writes).
    trainer.save_model(str(run_dir / "final"))
    rows = update_rows(metrics_log.rows())
    last_row = rows[-1] if rows else {}
    results = {"algorithm": s.algorithm, "updates": steps, "episodes": steps * per_step,
               "final_kl": last_row.get("objective/kl"), "final_score": last_row.get("objective/score"),
               "resumed_from": last, "dropped_long_records": len(records) - len(kept)}
    trained = trainer.accelerator.unwrap_model(trainer.model)
    for label, lm in (("sft", reference), ("ppo", trained)):
        results.update(final_gold_evaluation(label, lm, tokenizer, cfg.data, cfg.eval, cfg.seed))
    finish_run(run_dir, metrics_log, steps, "ppo", results)
    return results


def alternative_arguments(cfg: Config, run_dir: Path, steps: int) -> dict:
    """What RLOOConfig, GRPOConfig and DPOConfig share: PPO's optimizer, schedule, batch and checkpoint settings."""
    s = cfg.ppo
    return trainer_arguments(
        cfg, run_dir,
        max_steps=steps,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=s.lr,
        lr_scheduler_type="linear" if s.lr_schedule == "linear" else "constant",
        warmup_steps=0,
        weight_decay=0.01,  # torch's AdamW default, which PPO's optimizer uses
        adam_epsilon=s.adam_eps,
        max_grad_norm=s.max_grad_norm,
        logging_steps=1,
        save_strategy="steps" if s.save_every else "no",
        save_steps=max(s.save_every, 1),
        disable_dropout=True,
    )


def online_trainer(cfg: Config, args: dict, policy, reference, tokenizer, prompts: list[dict], callbacks: list):
    """TRL's RLOOTrainer or GRPOTrainer on the prompts, rewarded by our reward model."""
    s = cfg.ppo
    reward_model = load_reward_scorer(cfg.model, load_tokenizer(cfg.model, path=s.reward_model), s.reward_model,
                                      cfg.seed)
    reward = RewardModelReward(reward_model, tokenizer, s.missing_eos_mode, s.missing_eos_penalty, s.batch_size,
                               policy=policy, reference=reference, temperature=s.temperature)
    config_class, trainer_class = (RLOOConfig, RLOOTrainer) if s.algorithm == "rloo" else (GRPOConfig, GRPOTrainer)
    config = config_class(**args, num_generations=s.num_generations, max_completion_length=s.response_tokens,
                          temperature=s.temperature, top_k=0, top_p=1.0, beta=s.kl_coef, epsilon=s.cliprange,
                          generation_kwargs={"suppress_tokens": never_sampled(tokenizer)})
    return trainer_class(model=policy, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(prompts),
                         processing_class=tokenizer, callbacks=callbacks)


def dpo_trainer(cfg: Config, args: dict, policy, reference, tokenizer, pairs: list[dict], callbacks: list,
                max_length: int):
    """TRL's DPOTrainer on the preference pairs, the SFT model as reference."""
    config = DPOConfig(**args, beta=cfg.ppo.dpo_beta, max_length=max_length)
    return DPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=Dataset.from_list(pairs),
                      processing_class=tokenizer, callbacks=callbacks)


class TrainingLog(TrainerCallback):
    """One metrics.jsonl row per optimizer step, shaped like PPO's: the step's wall time, episodes so far, the gold
    judge every `gold_every` steps, our rollout metrics (objective/*, rollout/*) as they are, and TRL's own logs
    under `<algorithm>/`."""

    def __init__(self, metrics_log: MetricsLog, algorithm: str, episodes_per_step: int, gold_every: int, judge):
        self.metrics_log, self.algorithm = metrics_log, algorithm
        self.episodes_per_step, self.gold_every, self.judge = episodes_per_step, gold_every, judge
        self.started, self.pending = 0.0, {}

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        self.pending = {"time/update_s": time.perf_counter() - self.started, "episodes": step * self.episodes_per_step}
        if self.gold_every and (step % self.gold_every == 0 or step == state.max_steps):
            # sample() restores the RNG state, so this leaves the run's own sampling untouched
            started, training = time.perf_counter(), model.training
            self.pending.update({f"eval/{k}": v for k, v in self.judge(model).items()})
            self.pending["time/gold_eval_s"] = time.perf_counter() - started
            model.train(training)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.pending:  # the Trainer's end-of-training summary
            return
        ours = ("objective/", "rollout/")
        row = {k if k.startswith(ours) else f"{self.algorithm}/{k}": v for k, v in (logs or {}).items()}
        self.metrics_log.write(state.global_step, {**row, **self.pending})
        self.pending = {}
