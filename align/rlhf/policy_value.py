"""The trained pair of PPO: the policy and a separate value model, as one module for accelerate and DeepSpeed.

Both see the same query+response tokens. Positions come from the attention mask, so left-padded prompts get the
positions they would have unpadded, in every teacher-forced pass (rollout, reference and training alike).
"""

from __future__ import annotations

import torch
from torch import nn

from align.reward import position_ids


class PolicyAndValue(nn.Module):
    """policy: a causal LM; value: a one-label sequence classifier (started from the reward model)."""

    def __init__(self, policy: nn.Module, value: nn.Module):
        super().__init__()
        self.policy = policy
        self.value = value

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Read by TRL's unwrap_model_for_generation, which gathers ZeRO-3 weights for generation."""
        return False

    def forward(self, input_ids: torch.Tensor, pad_id: int, with_values: bool = True):
        """(policy logits (B, L, V), value head outputs (B, L) or None) for every position."""
        logits = lm_logits(self.policy, input_ids, pad_id)
        if not with_values:
            return logits, None
        mask = (input_ids != pad_id).long()
        return logits, head_outputs(self.value, input_ids, mask, position_ids(mask))


def lm_logits(lm: nn.Module, input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, L, V) logits of a causal LM on a padded batch, attention and positions from `input_ids != pad_id`."""
    mask = (input_ids != pad_id).long()
    return lm(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask)).logits


def head_outputs(classifier: nn.Module, input_ids, attention_mask, positions) -> torch.Tensor:
    """(B, L) the one-label head at every position (what a sequence classifier pools from at one position)."""
    hidden = classifier.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                   position_ids=positions).last_hidden_state
    return classifier.score(hidden)[..., 0]


def response_logprobs(logits: torch.Tensor, query_response: torch.Tensor, context_length: int, temperature: float):
    """(logprobs, entropy), each (B, T): of each response token under logits / temperature.

    The logits at position p predict token p + 1, hence the slice one to the left of the response.
    """
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    logits = logits[:, context_length - 1 : -1].float() / temperature
    responses = query_response[:, context_length:]
    return selective_log_softmax(logits, responses), entropy_from_logits(logits)


def response_values(values: torch.Tensor, context_length: int) -> torch.Tensor:
    """(B, T) the value of the state before each response token."""
    return values[:, context_length - 1 : -1]
