"""The teacher-forced forward of any causal LM on a padded batch: positions, logits, per-token log-probabilities and
entropy. PPO, evaluation and the reward models all read a model through these, so every pass sees the same positions.
"""

from __future__ import annotations

import torch
from torch import nn


def position_ids(attention_mask):
    """Positions that skip left padding, so a padded sequence sees the same positions as an unpadded one."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, W): the rows padded on the left to the longest, so that every row's last
    token sits in the last column, where generation continues from."""
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return input_ids, attention_mask


def lm_logits(lm: nn.Module, input_ids: torch.Tensor, pad_id: int, response_from: int | None = None) -> torch.Tensor:
    """Logits of a causal LM on a padded batch, attention and positions from `input_ids != pad_id`.

    (B, L, V) at every position; with response_from=C, (B, L - C, V): only the logits that predict tokens C..L-1 (the
    response), those at positions C-1..L-2. The LM head over the vocabulary is most of a small model's cost, and the
    prompt's logits are never used.
    """
    mask = (input_ids != pad_id).long()
    keep = 0 if response_from is None else torch.arange(response_from - 1, input_ids.shape[1] - 1,
                                                        device=input_ids.device)
    return lm(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=keep).logits


def response_logprobs(logits: torch.Tensor, responses: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, T) log-probability of each response token under softmax(logits / temperature).

    `logits` (B, T, V) are the ones that predict the response tokens (B, T): lm_logits(..., response_from=C) of the
    query + response, whose responses are query_response[:, C:]. A token's log-probability is minus its
    cross-entropy, whose fused kernel is the cheapest log-softmax with a gradient.
    """
    scaled = logits.float() / temperature
    return -torch.nn.functional.cross_entropy(scaled.flatten(0, 1), responses.flatten(),
                                              reduction="none").view_as(responses)


def entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, T) entropy of softmax(logits / temperature) at each position; a statistic, so without a gradient."""
    with torch.no_grad():
        log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)
        return -(log_probs.exp() * log_probs).sum(dim=-1)
