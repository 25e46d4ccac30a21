"""Loading models: tokenizers, causal LMs and reward models (GPT-2 family by hub name or path, or built from
scratch)."""

from __future__ import annotations

import os

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
)
from transformers.activations import ACT2FN, NewGELUActivation
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

from align.core.config import ModelConfig, ScratchArchitecture
from align.core.errors import UserError
from align.core.hub import load_local_or_hub
from align.core.tokens import add_chat_tokens
from align.runtime.distributed import gathered


def load_tokenizer(model: ModelConfig, path: str | None = None):
    """The tokenizer of `path` (a stage's output) or of the model config, always with the chat tokens added."""
    name = path or model.tokenizer or model.name_or_path
    if name is None:
        raise UserError("model.tokenizer or model.name_or_path must name a tokenizer")

    def load(name, local_files_only):
        return AutoTokenizer.from_pretrained(
            name, local_files_only=local_files_only, trust_remote_code=model.trust_remote_code
        )

    return add_chat_tokens(load_local_or_hub(load, name, "tokenizer", "model.tokenizer"))


def load_causal_lm(model: ModelConfig, tokenizer, init_from: str | None, seed: int,
                   key: str = "sft.init_from (or model.name_or_path)"):
    """A causal LM whose embeddings, pad, eos and generation settings match the chat tokenizer.

    init_from: hub name or directory to load; None builds `model.scratch` with random weights (seeded).
    """
    if init_from is None:
        if model.scratch is None:
            raise UserError("sft.init_from is null and model.scratch is not set: nothing to build the model from")
        torch.manual_seed(seed)
        lm = GPT2LMHeadModel(scratch_config(model.scratch, tokenizer))
    else:

        def load(name, local_files_only):
            return AutoModelForCausalLM.from_pretrained(
                name,
                local_files_only=local_files_only,
                trust_remote_code=model.trust_remote_code,
                dtype=torch.float32,
            )

        lm = load_local_or_hub(load, init_from, "model", key)
        if lm.get_input_embeddings().num_embeddings < len(tokenizer):
            # Mean-initialised new rows keep the first sampled turn tokens from dominating the softmax.
            lm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    set_chat_token_ids(lm, tokenizer)
    use_fused_gelu(lm)
    return lm


def scratch_config(arch: ScratchArchitecture, tokenizer, **extra):
    """The GPT2Config of a model built from scratch for this tokenizer (extra: e.g. num_labels=1)."""
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=arch.n_layer,
        n_embd=arch.n_embd,
        n_head=arch.n_head,
        n_positions=arch.n_positions,
        initializer_range=arch.initializer_range,
        resid_pdrop=arch.dropout,
        embd_pdrop=arch.dropout,
        attn_pdrop=arch.dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def set_chat_token_ids(lm, tokenizer) -> None:
    """Make the model's config and generation config agree with the tokenizer: stop at end of turn, pad with pad."""
    generation_config = getattr(lm, "generation_config", None)  # sequence classifiers have none
    for config in (lm.config, generation_config) if generation_config is not None else (lm.config,):
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
        config.bos_token_id = tokenizer.bos_token_id


def use_fused_gelu(model) -> None:
    """Swap GPT-2's "gelu_new" (the tanh approximation written out in Python: seven tensor operations forward, more
    backward) for "gelu_pytorch_tanh", PyTorch's single-kernel implementation of the same formula.

    The function is unchanged (outputs agree to float rounding); a small model trains faster on a CPU
    (docs/benchmarks.md). The config says so, so a saved model loads with the fused kernel.
    """
    swapped = False
    for module in model.modules():
        if isinstance(getattr(module, "act", None), NewGELUActivation):
            module.act = ACT2FN["gelu_pytorch_tanh"]
            swapped = True
    if swapped:
        model.config.activation_function = "gelu_pytorch_tanh"


def set_attention_dropout(model, p: float | None) -> None:
    """Dropout probability `p` on the attention weights of every GPT-2 attention layer (None: leave the model's)."""
    if p is None:
        return
    for module in model.modules():
        if isinstance(module, GPT2Attention):
            module.attn_dropout.p = p
    model.config.attn_pdrop = p


def context_size(lm) -> int | None:
    """How many positions the model has (prompt and answer together), where its config says."""
    return getattr(lm.config, "n_positions", None) or getattr(lm.config, "max_position_embeddings", None)


def has_score_head(config) -> bool:
    """Whether a checkpoint's config says it was saved as a sequence classifier (a reward model), not as an LM."""
    return "ForSequenceClassification" in (config.architectures or [""])[0]


def load_reward_model(model: ModelConfig, tokenizer, init_from: str | None, seed: int, key: str = "rm.init_from"):
    """A one-label sequence classifier from a causal LM or RM checkpoint (or model.scratch), dropout off.

    A new head is drawn from N(0, 1/sqrt(d + 1)) (Stiennon et al.; the N+ implementation details).
    """
    torch.manual_seed(seed)
    if init_from is None:
        rm = GPT2ForSequenceClassification(scratch_config(model.scratch, tokenizer, num_labels=1))
        new_head = True
    else:

        def load(name, local_files_only):
            return AutoModelForSequenceClassification.from_pretrained(
                name, num_labels=1, local_files_only=local_files_only, trust_remote_code=model.trust_remote_code,
                dtype=torch.float32)

        rm = load_local_or_hub(load, init_from, "model", key)
        new_head = not has_score_head(rm.config)
        if rm.get_input_embeddings().num_embeddings < len(tokenizer):
            rm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if new_head:  # drawn from its own generator and written whole: under ZeRO-3 the loader has partitioned the
        # head and used the global RNG in its own way, and the head must still be the one a single process draws
        d = rm.config.hidden_size
        head = rm.score.weight
        with gathered([head]), torch.no_grad():
            drawn = torch.randn(head.shape, generator=torch.Generator().manual_seed(seed)) / (d + 1) ** 0.5
            head.copy_(drawn.to(head.device, head.dtype))
    set_chat_token_ids(rm, tokenizer)
    use_fused_gelu(rm)
    disable_dropout(rm)
    return rm


def disable_dropout(model) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def load_reward_scorer(model: ModelConfig, tokenizer, path: str, seed: int, key: str = "ppo.reward_model"):
    """The reward model at `path` as its readers score with it, frozen and in eval mode (dropout off): a sequence
    classifier, or an implicit reward model (align.modeling.implicit_reward: the DPO-trained LM and its reference)."""
    from align.modeling.implicit_reward import ImplicitRewardModel, is_implicit, read_config

    if not is_implicit(path):
        scorer = load_reward_model(model, tokenizer, path, seed, key)
        if not has_score_head(scorer.config):
            raise UserError(f"{path} is not a reward model ({(scorer.config.architectures or ['?'])[0]}): scored "
                            "through a new, random head it would reward noise; name an RM stage's final/")
    else:
        config = read_config(path)
        if not os.path.isdir(config["reference"]):
            raise UserError(f"{path} is an implicit reward model whose reference, {config['reference']}, is gone: "
                            "it scores against that SFT model; put it back there, or train the reward model again")
        policy, reference = (load_causal_lm(model, tokenizer, p, seed, key) for p in (path, config["reference"]))
        scorer = ImplicitRewardModel(policy, reference, config["beta"], config["offset"], tokenizer,
                                      config.get("typical_tokens"))
    scorer.requires_grad_(False)
    return scorer.eval()
