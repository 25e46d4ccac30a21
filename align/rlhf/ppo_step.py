"""One PPO update after the rollout, in three calls the stage makes in order: score the sampled batch, turn the scores
into per-token rewards and advantages, optimise. Each is a function of the models and tensors it is given, so one
update on a tiny model runs in a unit test exactly as it runs in `align/ppo.py`.

Shapes: B episodes, C the (left-padded) query width, T response tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from align.core.config import PPOSettings
from align.modeling.forward import entropy, lm_logits, response_logprobs
from align.modeling.reward_model import reward_at_eos
from align.rlhf import losses as L
from align.rlhf.policy_value import response_values


@dataclass
class Batch:
    """A scored rollout; `shape` fills in the rewards and advantages."""

    query_responses: torch.Tensor  # (B, C + T) left-padded queries, then responses padded after their EOS
    responses: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T) 1 on response tokens up to and including the EOS
    context_length: int  # C
    logprobs: torch.Tensor  # (B, T) of the policy that sampled, at the sampling temperature
    ref_logprobs: torch.Tensor  # (B, T) of the frozen reference, at the same temperature
    values: torch.Tensor  # (B, T) the value of the state before each response token
    raw_scores: torch.Tensor  # (B,) the reward model's score at each response's EOS
    scores: torch.Tensor  # (B,) after the missing-EOS penalty
    has_eos: torch.Tensor  # (B,) bool
    entropy: torch.Tensor  # (B, T) of the sampling policy
    kl: torch.Tensor | None = None  # (B, T) per-token KL estimate, 0 on pads
    rewards: torch.Tensor | None = None  # (B, T)
    advantages: torch.Tensor | None = None  # (B, T) whitened if ppo.whiten_advantages
    returns: torch.Tensor | None = None  # (B, T) the value targets: raw advantages + values
    # With one minibatch, the scoring pass's (logprobs, values) with their graph: the first epoch's forward, as the
    # weights have not moved since (dropout is off), so that pass is not run twice
    first_forward: tuple[torch.Tensor, torch.Tensor] | None = None


Reward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (query_responses, responses) -> (B,) scores


def rm_reward(reward_model: nn.Module, pad_id: int) -> Reward:
    """The reward model's score of each query + response, read at the response's EOS."""
    return lambda query_responses, responses: reward_at_eos(reward_model, query_responses,
                                                            (query_responses != pad_id).long())


def judge_reward(gold_score: Callable[[str, str, bool], float], tokenizer, prompts: list[str], eos_id: int) -> Reward:
    """The task's gold judge (its score function) as the reward, for the batch whose prompts (as
    contracts.judged_prompt writes them) are `prompts`: the oracle a reward model stands in for. A response that
    never ended is judged unfinished."""

    def reward(query_responses: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        ended = (responses == eos_id).any(dim=1).tolist()
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)  # pads and the EOS are special tokens
        return torch.tensor([float(gold_score(p, t, e)) for p, t, e in zip(prompts, texts, ended, strict=True)],
                            device=responses.device)

    return reward


def score(model: nn.Module, as_reference: Callable[[], AbstractContextManager[nn.Module]], reward: Reward,
          queries: torch.Tensor, sampled: torch.Tensor, pad_id: int, eos_id: int, ppo: PPOSettings) -> Batch:
    """Step 2: the policy's and the reference's log-probabilities of the sampled responses, the values, and the
    reward of each response (rm_reward or judge_reward), with the missing-EOS penalty. `model` is the PolicyAndValue
    module; `as_reference()` a context that holds the frozen reference, and only the reference's pass runs in it (with
    LoRA the reference is the policy with its adapter disabled). With one minibatch the policy's pass keeps its graph
    for the first epoch (Batch.first_forward)."""
    responses, mask = L.truncate_after_eos(sampled, eos_id, pad_id)
    query_responses = torch.cat([queries, responses], dim=1)
    context_length = queries.shape[1]
    keep_graph = ppo.num_minibatches == 1
    with torch.set_grad_enabled(keep_graph):
        logits, all_values = model(query_responses, pad_id, context_length)
        logprobs = response_logprobs(logits, responses, ppo.temperature)
        values = response_values(all_values, context_length)
    with torch.no_grad():
        with as_reference() as reference:
            ref_logits = lm_logits(reference, query_responses, pad_id, context_length)
        raw_scores = reward(query_responses, responses)
    has_eos = (responses == eos_id).any(dim=1)
    return Batch(
        query_responses=query_responses, responses=responses, mask=mask, context_length=context_length,
        logprobs=logprobs.detach(),
        ref_logprobs=response_logprobs(ref_logits, responses, ppo.temperature),
        values=values.detach(),
        raw_scores=raw_scores,
        scores=L.apply_missing_eos_penalty(raw_scores, has_eos, ppo.missing_eos_mode, ppo.missing_eos_penalty),
        has_eos=has_eos,
        entropy=entropy(logits, ppo.temperature),
        first_forward=(logprobs, values) if keep_graph else None,
    )


def shape(batch: Batch, kl_coef: float, ppo: PPOSettings) -> Batch:
    """Steps 3 and 4: per-token rewards (-kl_coef * KL on every token, the score on the EOS), then GAE advantages
    (whitened over the batch) and the value targets, which come from the raw advantages."""
    batch.kl = L.kl_per_token(batch.logprobs, batch.ref_logprobs, ppo.kl_estimator) * batch.mask
    rewards = L.shape_rewards(batch.scores, batch.kl, batch.mask, kl_coef)
    if ppo.whiten_rewards:
        rewards = L.masked_whiten(rewards, batch.mask, shift_mean=False)
    advantages, batch.returns = L.gae(rewards, batch.values, batch.mask, ppo.gamma, ppo.lam)
    if ppo.whiten_advantages:
        advantages = L.masked_whiten(advantages, batch.mask)
    batch.rewards, batch.advantages = rewards, advantages
    return batch


def ptx_batches(texts: list[str], tokenizer, batch_size: int, max_length: int, generator):
    """Endless (B, L) batches of pretraining text for PPO-ptx, each text ending on EOS, right-padded. A batch is drawn
    with `generator` (the run's sampling generator) only when it is taken, so the draws interleave with the
    minibatch order exactly as they are used."""
    while True:
        picks = torch.randint(len(texts), (batch_size,), generator=generator).tolist()
        yield tokenizer([texts[i] + tokenizer.eos_token for i in picks], return_tensors="pt", padding=True,
                        truncation=True, max_length=max_length)["input_ids"]


def ptx_loss(model: nn.Module, ptx_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The language-model loss on a batch of pretraining text (PPO-ptx, InstructGPT C.4), pads ignored."""
    logits, _ = model(ptx_ids, pad_id, with_values=False)
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ptx_ids[:, 1:].flatten(),
                                       ignore_index=pad_id)


def optimise(model: nn.Module, optimizer, scheduler, accelerator, batch: Batch, ppo: PPOSettings, pad_id: int,
             generator: torch.Generator, ptx_batches: Iterator[torch.Tensor],
             require_finite: Callable[[str, object], None]) -> list[dict]:
    """Step 5: ppo.ppo_epochs passes over the batch in ppo.num_minibatches shuffled minibatches, each one optimizer
    step on the clipped policy loss + vf_coef x the clipped value loss (+ ptx_coef x the LM loss on pretraining text),
    then one step of the learning-rate schedule. `require_finite(name, value)` stops the run on a NaN or inf before
    the step that would use it. Returns each minibatch's statistics."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    minibatch_size = ppo.batch_size // ppo.num_minibatches
    stats = []
    for _ in range(ppo.ppo_epochs):
        for idx in torch.randperm(ppo.batch_size, generator=generator).split(minibatch_size):
            if batch.first_forward is not None and ppo.num_minibatches == 1:  # the first epoch's only minibatch
                logprobs, values = (t[idx] for t in batch.first_forward)
                batch.first_forward = None  # its graph is freed by the backward below
            else:
                logits, all_values = model(batch.query_responses[idx], pad_id, batch.context_length)
                logprobs = response_logprobs(logits, batch.responses[idx], ppo.temperature)
                values = response_values(all_values, batch.context_length)
            pg_loss, pg_stats = L.policy_loss(logprobs, batch.logprobs[idx], batch.advantages[idx], batch.mask[idx],
                                              ppo.cliprange)
            vf_loss, vf_stats = L.value_loss(values, batch.values[idx], batch.returns[idx], batch.mask[idx],
                                             ppo.cliprange_value)
            loss = pg_loss + ppo.vf_coef * vf_loss
            require_finite("loss", loss)
            lm_loss = torch.zeros(())
            if ppo.ptx_coef > 0:
                lm_loss = ptx_loss(model, next(ptx_batches).to(accelerator.device), pad_id)
                loss = loss + ppo.ptx_coef * lm_loss
            accelerator.backward(loss)  # one backward per step: under DeepSpeed it also steps the optimizer
            require_finite("gradient norm", accelerator.clip_grad_norm_(trainable, ppo.max_grad_norm))
            optimizer.step()
            optimizer.zero_grad()
            stats.append({**pg_stats, **vf_stats, "pg_loss": pg_loss.detach(), "vf_loss": vf_loss.detach(),
                          "ptx_loss": lm_loss.detach()})
    scheduler.step()  # once per update on every rank (accelerate's wrapper would step it once per process)
    return stats
