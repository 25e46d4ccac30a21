"""How models are set up for training: the fused GELU kernel in place of gpt2's, SFT's attention dropout."""

from __future__ import annotations

import copy

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

from align.modeling.models import set_attention_dropout, use_fused_gelu


def small_gpt2(**overrides) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_layer=2, n_embd=32, n_head=2, n_positions=64, **overrides))


def test_fused_gelu_computes_the_same_function_and_says_so_in_the_config():
    original = small_gpt2().eval()
    fused = copy.deepcopy(original)
    use_fused_gelu(fused)
    assert original.config.activation_function == "gelu_new"
    assert fused.config.activation_function == "gelu_pytorch_tanh"
    assert type(fused.transformer.h[0].mlp.act) is not type(original.transformer.h[0].mlp.act)
    ids = torch.randint(100, (3, 20))
    with torch.no_grad():
        assert torch.allclose(fused(ids).logits, original(ids).logits, atol=1e-5)
    # Saved and loaded again, the model builds the fused kernel from its config.
    rebuilt = GPT2LMHeadModel(fused.config)
    assert type(rebuilt.transformer.h[0].mlp.act) is type(fused.transformer.h[0].mlp.act)


def test_attention_dropout_changes_only_the_attention_weights_dropout():
    model = small_gpt2(attn_pdrop=0.1, resid_pdrop=0.1, embd_pdrop=0.1)
    set_attention_dropout(model, None)  # null: the model's own
    assert all(m.attn_dropout.p == 0.1 for m in model.modules() if isinstance(m, GPT2Attention))
    set_attention_dropout(model, 0.0)
    attention = [m for m in model.modules() if isinstance(m, GPT2Attention)]
    assert len(attention) == 2 and all(m.attn_dropout.p == 0.0 for m in attention)
    assert all(m.resid_dropout.p == 0.1 for m in attention) and model.transformer.drop.p == 0.1
    assert model.config.attn_pdrop == 0.0 and model.config.resid_pdrop == 0.1
