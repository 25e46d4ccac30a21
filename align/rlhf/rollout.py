"""PPO's sampler: temperature-only sampling from left-padded prompts with a key/value cache, stopping at EOS.

It samples what `generate(do_sample=True, temperature=t, top_k=0, top_p=1.0)` samples, without generate's per-step
machinery (logits processors, stopping criteria, model-input preparation) and without `torch.multinomial`, which on
a CPU draws a random number per vocabulary entry: together they cost more than the forward pass of a small policy.
Positions skip the left padding, as in every teacher-forced pass. After the prompt's pass through transformers, a
GPT-2 policy decodes through align.rlhf.gpt2_decoding, any other model through transformers' forward.
"""

from __future__ import annotations

import torch

from align.modeling.forward import position_ids
from align.rlhf.gpt2_decoding import GPT2Decoder, supports


def inverse_cdf_sample(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """(B,) the token of each row whose cumulative-probability interval holds its uniform draw in [0, 1).

    Exact for any distribution: token i is drawn with probability probs[i]; a zero-probability token never is. The
    cumulative sum is in float64 so that rounding over a large vocabulary cannot move mass between tokens.
    """
    cdf = probs.double().cumsum(dim=-1)
    # The first token whose cumulative probability reaches a target in (0, total]: a zero-probability token's
    # interval is empty at either end of the vocabulary. Scaled by the total, as probs need not sum to 1 exactly.
    targets = (1.0 - uniforms.double()[:, None]) * cdf[:, -1:]
    return torch.searchsorted(cdf, targets)[:, 0]


class TransformersDecoder:
    """Decoding through the model's own forward and cache, for the models align.rlhf.gpt2_decoding does not cover;
    called as GPT2Decoder is. The mask stays 2D: a model's own attention (eager, sliding window) builds its mask
    from it."""

    def __init__(self, lm, prefill_cache, attention_mask: torch.Tensor, max_new_tokens: int):
        self.lm, self.cache, self.attention_mask = lm, prefill_cache, attention_mask

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.attention_mask = torch.cat([self.attention_mask, self.attention_mask.new_ones(len(tokens), 1)], dim=1)
        outputs = self.lm(input_ids=tokens[:, None], attention_mask=self.attention_mask, position_ids=positions,
                          cache=self.cache, use_cache=True)
        return outputs.logits[:, -1]


@torch.no_grad()
def sample_responses(lm, queries: torch.Tensor, pad_id: int, eos_id: int, max_new_tokens: int,
                     temperature: float, never: list[int] | tuple[int, ...] = ()) -> torch.Tensor:
    """(B, T <= max_new_tokens) tokens sampled from softmax(logits / temperature) without the `never` tokens
    (core.tokens.never_sampled: the pad and the start-of-turn token), from torch's global random stream; after a
    row's EOS only pad. Stops once every row has ended."""
    attention_mask = (queries != pad_id).long()
    positions = position_ids(attention_mask)
    prefill = lm(input_ids=queries, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                 logits_to_keep=1)
    logits = prefill.logits[:, -1]
    decoder = GPT2Decoder if supports(lm) else TransformersDecoder
    decode = decoder(lm, prefill.cache, attention_mask, max_new_tokens)
    del prefill  # GPT2Decoder has copied the prompt's keys and values into its own cache
    batch = queries.shape[0]
    unfinished = torch.ones(batch, dtype=torch.bool, device=queries.device)
    tokens = []
    for step in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        probs[:, never] = 0.0  # inverse_cdf_sample renormalises, and never draws a zero-probability token
        uniforms = torch.rand(batch, dtype=torch.float64, device=queries.device)
        next_tokens = torch.where(unfinished, inverse_cdf_sample(probs, uniforms), pad_id)
        tokens.append(next_tokens)
        unfinished &= next_tokens != eos_id
        if step == max_new_tokens - 1 or not unfinished.any():
            break
        positions = positions[:, -1:] + 1
        logits = decode(next_tokens, positions)
    return torch.stack(tokens, dim=1)
