"""Reward models: load, score conversations at their end-of-turn EOS, and normalise.

A reward model here is a GPT-2 sequence classifier with one label. Its score for a conversation is the head's output
at the EOS that ends the last assistant turn. The chat template ends a finished conversation exactly on that EOS, and
the classifier pools at the rightmost non-pad token, so plain `AutoModelForSequenceClassification` reads the same
position as this module does.

Normalisation (InstructGPT section 3.5): after training, the mean score of a reference set of demonstrations is
folded into the model so that it scores them at mean 0 for anyone who loads it. GPT-2's classification head has no
bias, so the shift goes into the bias of the final layer norm, whose output feeds only the head:
w . (ln(h) + b - m w / |w|^2) = w . (ln(h) + b) - m.
"""

from __future__ import annotations

import torch

from align.core.tokens import chat_ids
from align.modeling.forward import position_ids
from align.modeling.implicit_reward import ImplicitRewardModel
from align.runtime.distributed import gathered


def reward_at_eos(rm, input_ids, attention_mask):
    """(B,) scores of left- or right-padded sequences that end on their EOS (or on their last token)."""
    return rm(input_ids=input_ids, attention_mask=attention_mask,
              position_ids=position_ids(attention_mask)).logits[:, 0]


def score(rm, tokenizer, conversations: list[list[dict]], batch_size: int = 32):
    """(N,) scores of finished conversations (the last turn an assistant's), in the order given."""
    rm.eval()
    scores = []
    for start in range(0, len(conversations), batch_size):
        batch = [chat_ids(tokenizer, c) for c in conversations[start : start + batch_size]]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in batch])
        attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch])
        with torch.no_grad():
            scores.append(reward_at_eos(rm, input_ids, attention_mask))
    return torch.cat(scores)


def shift_scores(rm, offset: float) -> None:
    """Make every score `offset` lower, exactly, by moving the final layer norm's bias (see the module docstring); an
    implicit reward model keeps its offset beside the weights (implicit_reward.json)."""
    if isinstance(rm, ImplicitRewardModel):
        rm.offset += offset
        return
    bias = rm.transformer.ln_f.bias
    with gathered([bias, rm.score.weight]), torch.no_grad():
        w = rm.score.weight[0]
        bias -= offset * w / w.dot(w)
    rm.config.reward_offset = getattr(rm.config, "reward_offset", 0.0) + offset
