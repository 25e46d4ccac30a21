"""The teacher-forced forward of any causal LM on a padded batch: positions, logits, per-token log-probabilities and
entropy. PPO, evaluation and the reward models all read a model through these, so every pass sees the same positions.
"""

from __future__ import annotations

from collections.abc import Callable

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


def response_passes(forward: Callable[[torch.Tensor, int], tuple], query_responses: torch.Tensor, pad_id: int,
                    context_length: int, rows_per_pass: int) -> tuple:
    """`forward(input_ids, response_from)` -> a tuple of (b, T, ...) tensors over the response (or None), run over a
    left-padded batch of queries + responses (B, C + T) in passes of `rows_per_pass` rows of similar prompt length,
    each pass without the left padding all its rows share; the tensors come back (B, T, ...) in the batch's order.
    0 (or at least B): one pass over the whole batch.

    Every pad column costs a full column of compute. A pass has a fixed cost too, so fewer rows per pass pay off when
    prompts differ in length and the model is large next to that cost (GPT-2 124M on a CPU: one row per pass).
    """
    if rows_per_pass <= 0 or rows_per_pass >= len(query_responses):
        return forward(query_responses, context_length)
    pads = (query_responses[:, :context_length] == pad_id).sum(dim=1)  # all on the left: queries are left-padded
    order = pads.argsort(descending=True, stable=True)
    outputs = []
    for rows in order.split(rows_per_pass):
        cut = int(pads[rows].min())
        outputs.append(forward(query_responses[rows, cut:], context_length - cut))
    inverse = order.argsort()
    return tuple(None if parts[0] is None else torch.cat(parts)[inverse] for parts in zip(*outputs, strict=True))


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
