"""Stage 3: PPO against the reward model (InstructGPT step 3), written out here on accelerate.

Maximises E[r(x, y) - beta * KL(pi(.|x) || pi_SFT(.|x))] (+ gamma * LM loss on pretraining text for PPO-ptx) with
PPO: per-token KL penalty, the RM score on the EOS, GAE, whitened advantages, clipped policy and value losses.
Policy and frozen reference start from the SFT model (with `ppo.lora.enabled`, the policy and value model train
LoRA adapters and the reference is the policy with its adapter disabled); a separate value model starts from the
reward model; the reward model is frozen. Dropout is off in all four. Every PPO detail is a tested pure function in
align/rlhf/losses.py.

Sampling: temperature only (top_k 0, top_p 1), stopping at the end-of-turn EOS or after ppo.response_tokens; the
tokens after a response's first EOS are padding. A response without EOS gets the EOS-trick penalty.

    python -m align.ppo +experiment=tiny                 # offline, CPU, after align.sft and align.rm
    python -m align.ppo +experiment=small
    python -m align.ppo +experiment=tiny +ablation=grpo  # TRL's RLOO, GRPO or DPO in PPO's place (ppo.algorithm):
                                                         # align/trainers/alternatives.py

Reads   cfg.ppo.policy_init (${paths.sft}/final), cfg.ppo.value_init / reward_model (${paths.rm}/final),
        cfg.data.prompts_train, cfg.data.ptx_train (PPO-ptx)
Writes  cfg.paths.ppo/: final/ (plain Hugging Face causal LM + tokenizer + chat template), metrics.jsonl,
        metrics.json, config.resolved.yaml, provenance.json
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import hydra
from omegaconf import DictConfig

from align.core.config import Config
from align.core.console import is_main_process, print0
from align.core.contracts import judged_prompt
from align.core.errors import UserError
from align.core.records import read_records
from align.core.tokens import chat_ids, never_sampled
from align.runtime.distributed import (
    barrier,
    deepspeed_settings,
    drop_launcher_arguments,
    main_process_first,
    prepare_frozen,
)
from align.runtime.preemption import Preempted, stop_request
from align.runtime.runs import MetricsLog, finish_run, require_stage_output, run_stage, start_run
from data_prep.prepare import ensure_prepared


def train(cfg: Config) -> dict:
    import torch
    from accelerate import Accelerator

    from align.evaluation.judging import check_judge, final_gold_evaluation, gold_evaluation
    from align.modeling.forward import left_pad
    from align.modeling.implicit_reward import ImplicitRewardModel, kl_coef_floor
    from align.modeling.models import (
        context_size,
        disable_dropout,
        load_causal_lm,
        load_reward_model,
        load_reward_scorer,
        load_tokenizer,
    )
    from align.rlhf import alarms, ppo_checkpoint, ppo_step
    from align.rlhf import losses as L
    from align.rlhf.policy_value import PolicyAndValue, adapter_disabled, add_lora, unwrapped_for_generation
    from align.rlhf.rollout import sample_responses
    from align.runtime import checkpoints
    from align.runtime.guards import require_all_finite, require_finite

    ppo = cfg.ppo
    upstreams = ((ppo.policy_init, "align.sft"), (ppo.reward_model, "align.rm"), (ppo.value_init, "align.rm"))
    for upstream, stage in upstreams:
        require_stage_output(upstream, cfg.paths.root, f"run `python -m {stage}` with the same overrides first")
    if ppo.lora.enabled and cfg.distributed.deepspeed_zero_stage == 3:
        raise UserError("ppo.lora.enabled is not supported under DeepSpeed ZeRO-3: launch with zero2.yaml or ddp.yaml")
    if ppo.batch_size % ppo.num_minibatches:
        raise UserError(f"ppo.batch_size={ppo.batch_size} is not divisible by "
                        f"ppo.num_minibatches={ppo.num_minibatches}")
    accelerator = Accelerator(mixed_precision=cfg.distributed.mixed_precision)
    deepspeed_settings(accelerator, ppo.batch_size // ppo.num_minibatches, ppo.max_grad_norm)
    run_dir = Path(cfg.paths.ppo)
    start_run(run_dir, cfg, "ppo")
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")
    stop = stop_request()  # SIGTERM/SIGUSR1: finish the update, checkpoint, exit PREEMPTED

    # Data: prompts rendered with the generation prompt; pretraining text for PPO-ptx.
    with main_process_first():
        ensure_prepared(cfg.data, [cfg.data.prompts_train, cfg.data.prompts_eval if cfg.data.judge else None,
                                   cfg.data.ptx_train if ppo.ptx_coef > 0 else None])
    task_judge = check_judge(cfg.data)  # tried on the held-out prompts before any model is loaded
    tokenizer = load_tokenizer(cfg.model, path=ppo.policy_init)
    pad_id, eos_id, never = tokenizer.pad_token_id, tokenizer.eos_token_id, never_sampled(tokenizer)
    prompt_records, _ = read_records(cfg.data.prompts_train, "prompt", cfg.data.on_bad_record)
    rendered = [(chat_ids(tokenizer, r["prompt"], generation_prompt=True), judged_prompt(r["prompt"]))
                for r in prompt_records]
    kept = [(ids, text) for ids, text in rendered if len(ids) <= ppo.max_prompt_tokens]
    too_long = len(rendered) - len(kept)
    if not kept:
        raise UserError(f"none of the {len(rendered)} prompts of {cfg.data.prompts_train} fits "
                        f"ppo.max_prompt_tokens={ppo.max_prompt_tokens}: raise it, or use shorter prompts")
    if too_long:
        print0(f"dropped {too_long} prompts longer than ppo.max_prompt_tokens={ppo.max_prompt_tokens}")
    prompts, prompt_texts = [ids for ids, _ in kept], [text for _, text in kept]
    ptx_texts = []
    if ppo.ptx_coef > 0:
        if cfg.data.ptx_train is None:
            raise UserError("ppo.ptx_coef > 0 needs pretraining text: set data.ptx_train")
        ptx_records, _ = read_records(cfg.data.ptx_train, "text", cfg.data.on_bad_record)
        ptx_texts = [r["text"] for r in ptx_records]

    # Models: policy and reference from SFT, value from the RM, the RM frozen; dropout off in all four. With LoRA the
    # reference is the policy with its adapter disabled.
    policy = load_causal_lm(cfg.model, tokenizer, ppo.policy_init, cfg.seed, "ppo.policy_init")
    positions = context_size(policy)
    if positions is not None and ppo.max_prompt_tokens + ppo.response_tokens > positions:
        raise UserError(f"ppo.max_prompt_tokens={ppo.max_prompt_tokens} and ppo.response_tokens={ppo.response_tokens} "
                        f"exceed the model's {positions} positions: lower one of them")
    reference = None if ppo.lora.enabled else load_causal_lm(cfg.model, tokenizer, ppo.policy_init, cfg.seed,
                                                                "ppo.policy_init")
    value = load_reward_model(cfg.model, tokenizer, ppo.value_init, cfg.seed, "ppo.value_init")
    judge = task_judge if ppo.reward == "judge" else None
    if ppo.reward == "judge" and judge is None:
        raise UserError("ppo.reward=judge needs the task's gold judge: data.judge is null")
    reward_model = load_reward_scorer(cfg.model, tokenizer, ppo.reward_model, cfg.seed)
    floor = kl_coef_floor(reward_model.beta, ppo.temperature) if isinstance(reward_model, ImplicitRewardModel) else 0
    if ppo.reward == "rm" and ppo.kl_coef < floor:
        # a KL sweep runs below the floor on purpose, so this warns rather than refuses
        print0(f"warning: {ppo.reward_model} is an implicit reward model with beta {reward_model.beta}, and "
               f"ppo.kl_coef {ppo.kl_coef} is below beta x ppo.temperature ({floor:.3g}): there PPO's best policy "
               "leaves the data, where that reward grows without bound (expect the KL to run away and gold to fall; "
               "docs/stages.md)")
    if ppo.lora.enabled:
        policy, value = add_lora(policy, value, ppo.lora.r, ppo.lora.alpha, ppo.lora.target_modules)
    for frozen in (reference, reward_model):
        if frozen is not None:
            frozen.requires_grad_(False)
            frozen.eval()
    model = PolicyAndValue(policy, value)
    disable_dropout(model)
    disable_dropout(reward_model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=ppo.lr, eps=ppo.adam_eps, fused=True)
    world = accelerator.num_processes
    num_updates = ppo.total_episodes // (ppo.batch_size * world)
    if num_updates < 1:
        raise UserError(f"ppo.total_episodes={ppo.total_episodes} is less than one batch ({ppo.batch_size * world})")

    def lr_factor(step: int) -> float:
        return 1.0 - step / num_updates if ppo.lr_schedule == "linear" else 1.0

    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped_model = accelerator.unwrap_model(model)  # the same module all run long
    # Stepped once per update on every rank (accelerate's wrapper would step it once per process, or per DeepSpeed step)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    reward_model = prepare_frozen(reward_model, accelerator)
    if reference is not None:
        reference = prepare_frozen(reference, accelerator)
        disable_dropout(reference)

    @contextmanager
    def as_reference():
        """The frozen SFT model: its own copy, or the policy with its LoRA adapter disabled."""
        if reference is not None:
            yield reference
        else:
            with adapter_disabled(unwrapped_model.policy) as sft:
                yield sft

    # One prompt order for every rank (from the seed); different sampling seeds per rank.
    order = torch.Generator().manual_seed(cfg.seed)
    sampling = torch.Generator().manual_seed(cfg.seed + 100003 * accelerator.process_index)
    torch.manual_seed(cfg.seed + 100003 * accelerator.process_index)
    prompt_queue: list[int] = []

    def next_prompts() -> list[int]:
        """This rank's share of the next batch of prompts, as indices into `prompts`."""
        needed = ppo.batch_size * world
        while len(prompt_queue) < needed:
            prompt_queue.extend(torch.randperm(len(prompts), generator=order).tolist())
        taken = [prompt_queue.pop(0) for _ in range(needed)]
        return taken[accelerator.process_index :: world]

    ptx_stream = ppo_step.ptx_batches(ptx_texts, tokenizer, ppo.ptx_batch_size,
                                      ppo.max_prompt_tokens + ppo.response_tokens, sampling)
    kl_coef, first_update, resumed_from = ppo.kl_coef, 1, checkpoints.resume_point(run_dir, ppo.resume)
    metrics_log.keep_first(checkpoints.metrics_rows(resumed_from) if resumed_from else 0)
    if resumed_from is not None:
        loop = ppo_checkpoint.load(resumed_from, accelerator, model, optimizer, scheduler)
        kl_coef, first_update = loop["kl_coef"], loop["update"] + 1
        order.set_state(loop["order"])
        sampling.set_state(loop["sampling"])
        prompt_queue[:] = loop["prompt_queue"].tolist()
        print0(f"resuming from {resumed_from} (update {loop['update']} of {num_updates})")
    alarm_state = alarms.AlarmState()
    gold_eval_settings = dataclasses.replace(cfg.eval, num_prompts=ppo.gold_eval_prompts)
    for update in range(first_update, num_updates + 1):
        start = time.perf_counter()
        # 1. rollout: sample responses to a batch of prompts from the current policy              (B, T)
        mine = next_prompts()
        queries = left_pad([prompts[i] for i in mine], pad_id)[0].to(accelerator.device)
        with unwrapped_for_generation(model, unwrapped_model, accelerator) as unwrapped:
            sampled = sample_responses(unwrapped.policy, queries, pad_id, eos_id, ppo.response_tokens, ppo.temperature,
                                       never)
        rollout_s = time.perf_counter() - start

        # 2. score: old logprobs and values, reference logprobs, RM score at the EOS (or the judge's); the EOS trick
        score_start = time.perf_counter()
        reward = ppo_step.rm_reward(reward_model, pad_id) if judge is None else \
            ppo_step.judge_reward(judge.score, tokenizer, [prompt_texts[i] for i in mine], eos_id)
        batch = ppo_step.score(model, as_reference, reward, queries, sampled, pad_id, eos_id, ppo)
        require_finite("reward", batch.raw_scores, run_dir, update, "PPO update")

        # 3. shape rewards: -beta * KL per token, the score added on the EOS
        # 4. advantages: GAE over response tokens, then whitened over the batch
        batch = ppo_step.shape(batch, kl_coef, ppo)

        # 5. optimise: ppo_epochs x minibatches of clipped policy + clipped value loss (+ ptx); the lr schedule
        update_start = time.perf_counter()
        score_s = update_start - score_start
        lr = scheduler.get_last_lr()[0]  # this update's: optimise steps the schedule for the next one
        stats = ppo_step.optimise(model, optimizer, scheduler, accelerator, batch, ppo, pad_id, sampling, ptx_stream,
                                  partial(require_finite, run_dir=run_dir, step=update, unit="PPO update"))

        # 6. log (reduced over ranks)
        metrics = {
            "objective/score": batch.raw_scores.mean(),
            "objective/score_with_eos_penalty": batch.scores.mean(),
            "objective/kl": batch.kl.sum(dim=1).mean(),
            "objective/non_score_reward": (batch.rewards.sum(dim=1) - batch.scores).mean(),
            "objective/rlhf_reward": batch.rewards.sum(dim=1).mean(),
            "rollout/response_tokens": batch.mask.sum(dim=1).float().mean(),
            "rollout/eos_rate": batch.has_eos.float().mean(),
            **{f"policy/{k}": torch.stack([st[k] for st in stats]).mean()
               for k in ("clipfrac", "approx_kl", "ratio", "pg_loss")},
            "policy/entropy": L.masked_mean(batch.entropy, batch.mask),
            "value/loss": torch.stack([st["vf_loss"] for st in stats]).mean(),
            "value/clipfrac": torch.stack([st["vf_clipfrac"] for st in stats]).mean(),
            "ptx/loss": torch.stack([st["ptx_loss"] for st in stats]).mean(),
        }
        metrics = {k: accelerator.reduce(v.float().to(accelerator.device), "mean").item() for k, v in metrics.items()}
        metrics.update({"kl_coef": kl_coef, "lr": lr, "time/rollout_s": rollout_s,
                        "time/score_s": score_s, "time/update_s": time.perf_counter() - update_start,
                        "episodes": update * ppo.batch_size * world})
        if ppo.adaptive_kl:  # on the KL of all ranks, so that every rank keeps the same coefficient
            kl_coef = L.adaptive_kl_coef(kl_coef, metrics["objective/kl"], ppo.kl_target, ppo.kl_horizon,
                                         ppo.batch_size * world)
        if ppo.gold_eval_every and (update % ppo.gold_eval_every == 0 or update == num_updates):
            # The gold judge along training next to the proxy score, for the over-optimisation curve (Gao et al.
            # 2022); sample() restores the RNG state, so this leaves the run's own sampling untouched.
            gold_start = time.perf_counter()
            with unwrapped_for_generation(model, unwrapped_model, accelerator) as unwrapped:
                gold = gold_evaluation(unwrapped.policy, tokenizer, cfg.data, gold_eval_settings, cfg.seed)
            metrics.update({f"eval/{k}": v for k, v in gold.items()})
            metrics["time/gold_eval_s"] = time.perf_counter() - gold_start
        require_all_finite(metrics, run_dir, update, "PPO update")
        warnings, alarm_state = alarms.check(metrics, alarm_state)
        for warning in warnings:
            print0(f"warning (update {update}): {warning}")
        metrics["alarms"] = len(warnings)
        metrics_log.write(update, metrics)
        if update % ppo.log_every == 0 or update == num_updates:
            print0(f"update {update}/{num_updates}: score {metrics['objective/score']:.3f} "
                  f"kl {metrics['objective/kl']:.3f} eos {metrics['rollout/eos_rate']:.2f} "
                  f"clipfrac {metrics['policy/clipfrac']:.3f} ({metrics['time/rollout_s']:.2f}s rollout, "
                  f"{metrics['time/update_s']:.2f}s update)")
        stopping = stop.requested()  # the same answer on every rank
        if stopping or ppo.save_every and update % ppo.save_every == 0:
            loop = {"update": update, "kl_coef": kl_coef, "order": order.get_state(), "sampling": sampling.get_state(),
                    "prompt_queue": torch.tensor(prompt_queue, dtype=torch.long)}
            ppo_checkpoint.save(run_dir, update, accelerator, model, optimizer, scheduler, loop, ppo.save_total_limit,
                            len(metrics_log))
        if stopping:
            raise Preempted(f"stopped on {stop.describe()} after update {update}: wrote {run_dir}/checkpoint-{update}")

    # Final: the plain Hugging Face directory first (under ZeRO-3, with the policy's weights gathered), so that
    # nothing after training can lose it, then the judged evaluation of the policy next to its reference.
    barrier()  # the main process has logged the last update
    rows = metrics_log.rows()  # the main process's log; it covers updates run before a resume too
    last = rows[-1] if rows else {}
    results = {"updates": num_updates, "episodes": num_updates * ppo.batch_size * world,
               "final_kl": last.get("objective/kl"), "final_score": last.get("objective/score"),
               "resumed_from": str(resumed_from) if resumed_from else None, "dropped_long_prompts": too_long}
    with unwrapped_for_generation(model, unwrapped_model, accelerator) as unwrapped:
        if is_main_process():
            final_policy = unwrapped.policy
            if ppo.lora.enabled:  # a plain causal LM directory, no peft needed to load it; merged in a copy, as the
                # policy with its adapter disabled is still the reference evaluated below
                final_policy = copy.deepcopy(final_policy).merge_and_unload()
            final_policy.save_pretrained(run_dir / "final", safe_serialization=True)
            tokenizer.save_pretrained(run_dir / "final")
            del final_policy
        results.update(final_gold_evaluation("ppo", unwrapped.policy, tokenizer, cfg.data, cfg.eval, cfg.seed))
    with as_reference() as prepared_ref, \
            unwrapped_for_generation(prepared_ref, accelerator.unwrap_model(prepared_ref), accelerator) as ref:
        results.update(final_gold_evaluation("sft", ref, tokenizer, cfg.data, cfg.eval, cfg.seed))
    finish_run(run_dir, metrics_log, num_updates, "ppo", results)
    return results


def train_for(algorithm: str) -> Callable[[Config], dict]:
    """What fills the PPO slot: this file's train, or with ppo.algorithm rloo, grpo or dpo, TRL's trainer of that
    algorithm (align/trainers/alternatives.py), which writes the same outputs."""
    if algorithm == "ppo":
        return train
    from align.trainers.alternatives import train as train_alternative

    return train_alternative


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_stage(train_for(cfg.ppo.algorithm), cfg)


if __name__ == "__main__":
    drop_launcher_arguments()
    main()
