"""One decoding step of a GPT-2 language model, run through its own modules with a preallocated key/value cache.

The sampler decodes one token at a time. For the small policies PPO is measured on, transformers' forward for one token
(its mask preparation, cache object and output classes) cost more than the step's arithmetic; the same tokens decode
faster through this (docs/benchmarks.md). The modules are GPT-2's own (layer norms, attention projections, MLP, LM
head), so LoRA adapters inside them take part and the weights are the model's; what this adds is the attention over the
cached keys, which `supports` limits to GPT-2's default attention settings. Anything else is decoded through
transformers (align.rlhf.rollout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def language_model(lm: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (whose LoRA layers sit inside it), or `lm` itself."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def supports(lm: nn.Module) -> bool:
    """A GPT-2 LM whose attention is plain scaled dot-product attention (GPT-2's defaults), without dropout (as PPO
    runs it: the step leaves dropout out)."""
    config = language_model(lm).config
    no_dropout = not lm.training or all(m.p == 0 for m in lm.modules() if isinstance(m, nn.Dropout))
    return (config.model_type == "gpt2" and config.scale_attn_weights and not config.scale_attn_by_inverse_layer_idx
            and not config.reorder_and_upcast_attn and not config.add_cross_attention and no_dropout)


class GPT2Decoder:
    """Decodes after a transformers prefill: takes over its cache and computes the next-token logits of each step."""

    def __init__(self, lm: nn.Module, prefill_cache, attention_mask: torch.Tensor, max_new_tokens: int):
        self.lm = language_model(lm)
        config = self.lm.config
        self.heads, self.width = config.n_head, config.n_embd
        # The keys each new token attends to, in the (B, 1, query, key) boolean form attention takes as it is: the
        # prompt's own tokens (not its left padding) and every sampled one. Each step uses the part up to its key.
        sampled = attention_mask.new_ones(attention_mask.shape[0], max_new_tokens, dtype=torch.bool)
        self.attends = torch.cat([attention_mask.bool(), sampled], dim=1)[:, None, None]
        self.keys, self.values = [], []
        for layer in prefill_cache.layers:  # (B, heads, prompt, head_dim) each
            batch, heads, prompt, head_dim = layer.keys.shape
            keys = layer.keys.new_empty(batch, heads, prompt + max_new_tokens, head_dim)
            values = torch.empty_like(keys)
            keys[:, :, :prompt], values[:, :, :prompt] = layer.keys, layer.values
            self.keys.append(keys)
            self.values.append(values)
        self.length = prompt  # keys filled so far

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, V) logits after `tokens` (B,) at `positions` (B, 1)."""
        transformer, batch, step = self.lm.transformer, tokens.shape[0], self.length
        hidden = transformer.wte(tokens[:, None]) + transformer.wpe(positions)
        mask = self.attends[..., : step + 1]
        for block, keys, values in zip(transformer.h, self.keys, self.values):
            query, key, value = block.attn.c_attn(block.ln_1(hidden)).split(self.width, dim=2)
            keys[:, :, step] = key.view(batch, self.heads, -1)
            values[:, :, step] = value.view(batch, self.heads, -1)
            attended = F.scaled_dot_product_attention(query.view(batch, 1, self.heads, -1).transpose(1, 2),
                                                      keys[:, :, : step + 1], values[:, :, : step + 1],
                                                      attn_mask=mask)
            hidden = hidden + block.attn.c_proj(attended.transpose(1, 2).reshape(batch, 1, self.width))
            hidden = hidden + block.mlp(block.ln_2(hidden))
        self.length += 1
        return self.lm.lm_head(transformer.ln_f(hidden))[:, 0]
