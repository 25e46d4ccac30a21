"""Teacher-forced numbers for sampled completions: their log-probability under any LM, their reward-model score.

Completions are laid out the way PPO lays out a rollout: prompts left-padded to one width, responses after them,
right-padded, so the response of every row starts at the same column and positions skip the padding.
"""

from __future__ import annotations

import torch

from align.evaluation.sampling import Completion
from align.modeling.forward import left_pad, lm_logits, response_logprobs
from align.modeling.reward_model import reward_at_eos


def rollout_layout(completions: list[Completion], pad_id: int):
    """(input_ids (B, W + T), W): left-padded prompts of width W, then right-padded responses of length T."""
    prompts, _ = left_pad([c.prompt_ids for c in completions], pad_id)
    length = max(max(len(c.response_ids) for c in completions), 1)
    responses = torch.tensor([c.response_ids + [pad_id] * (length - len(c.response_ids)) for c in completions])
    return torch.cat([prompts, responses], dim=1), prompts.shape[1]


def response_logprob_sums(lm, completions: list[Completion], pad_id: int, temperature: float, batch_size: int):
    """(N,) sum over each response's tokens of log pi(token | prefix), logits divided by `temperature`."""
    lm.eval()
    sums = []
    for start in range(0, len(completions), batch_size):
        batch = completions[start : start + batch_size]
        input_ids, width = rollout_layout(batch, pad_id)
        with torch.no_grad():
            logprobs = response_logprobs(lm_logits(lm, input_ids, pad_id, width), input_ids[:, width:],
                                            temperature)
        lengths = torch.tensor([len(c.response_ids) for c in batch])
        mask = torch.arange(logprobs.shape[1])[None, :] < lengths[:, None]
        sums.append((logprobs * mask).sum(dim=1))
    return torch.cat(sums)


def reward_scores(rm, completions: list[Completion], pad_id: int, batch_size: int):
    """(N,) the reward model's score of each prompt + response, read at the response's last token (its EOS)."""
    rm.eval()
    scores = []
    for start in range(0, len(completions), batch_size):
        input_ids, _ = rollout_layout(completions[start : start + batch_size], pad_id)
        with torch.no_grad():
            scores.append(reward_at_eos(rm, input_ids, (input_ids != pad_id).long()))
    return torch.cat(scores)
