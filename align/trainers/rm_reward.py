"""Our reward model as the reward function of TRL's RLOO and GRPO trainers, scoring exactly as PPO scores.

TRL's own reward-model path re-renders prompt + completion as text through the chat template, which closes every
assistant turn with `<|im_end|>`: a response cut off by the token budget would then be scored as if it had ended, and
the EOS trick could not tell them apart. So this callable works on the token ids TRL sampled: the prompt as the
chat template renders it with the generation prompt (what PPO and TRL feed to generate), the completion up to and
including its first EOS, the score read at that EOS (align.evaluation.scoring.reward_scores), then
ppo.missing_eos_mode/penalty.

It also measures what PPO logs for each rollout, on the same completions: the raw RM score (objective/score) and
the KL to the reference summed over each response, k1 (objective/kl).
"""

from __future__ import annotations

import torch

from align.core.tokens import chat_ids
from align.evaluation.sampling import Completion
from align.evaluation.scoring import response_logprob_sums, reward_scores
from align.rlhf.losses import apply_missing_eos_penalty


class RewardModelReward:
    """A TRL reward function: (prompts, completion_ids) -> one score per completion."""

    __name__ = "reward_model"  # TRL names a callable reward's metrics after it

    def __init__(self, reward_model, tokenizer, missing_eos_mode: str, missing_eos_penalty: float, batch_size: int,
                 policy=None, reference=None, temperature: float = 1.0):
        self.reward_model = reward_model
        self.tokenizer = tokenizer
        self.missing_eos_mode = missing_eos_mode
        self.missing_eos_penalty = missing_eos_penalty
        self.batch_size = batch_size
        self.policy, self.reference, self.temperature = policy, reference, temperature

    def completions(self, prompts: list[list[dict]], completion_ids: list[list[int]]) -> list[Completion]:
        eos_id = self.tokenizer.eos_token_id
        rows = []
        for prompt, ids in zip(prompts, completion_ids, strict=True):
            ended = eos_id in ids
            ids = ids[: ids.index(eos_id) + 1] if ended else list(ids)
            prompt_ids = chat_ids(self.tokenizer, prompt, generation_prompt=True)
            rows.append(Completion(text="", ended=ended, n_tokens=len(ids), prompt_ids=prompt_ids, response_ids=ids))
        return rows

    def __call__(self, prompts, completion_ids, log_metric=None, **_) -> list[float]:
        completions = self.completions(prompts, completion_ids)
        pad_id = self.tokenizer.pad_token_id
        raw = reward_scores(self.reward_model, completions, pad_id, self.batch_size)
        has_eos = torch.tensor([c.ended for c in completions])
        scores = apply_missing_eos_penalty(raw, has_eos, self.missing_eos_mode, self.missing_eos_penalty)
        if log_metric is not None:
            log_metric("objective/score", raw.mean().item())
            log_metric("objective/score_with_eos_penalty", scores.mean().item())
            log_metric("rollout/eos_rate", has_eos.float().mean().item())
            log_metric("rollout/response_tokens", float(sum(c.n_tokens for c in completions)) / len(completions))
            if self.policy is not None and self.reference is not None:
                was_training = self.policy.training
                kl = (response_logprob_sums(self.policy, completions, pad_id, self.temperature, self.batch_size)
                      - response_logprob_sums(self.reference, completions, pad_id, self.temperature, self.batch_size))
                self.policy.train(was_training)
                log_metric("objective/kl", kl.mean().item())
        return scores.tolist()
