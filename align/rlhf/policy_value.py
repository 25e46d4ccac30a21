"""The trained pair of PPO: the policy and a separate value model, as one module for accelerate and DeepSpeed.

Both see the same query+response tokens. Positions come from the attention mask, so left-padded prompts get the
positions they would have unpadded, in every teacher-forced pass (rollout, reference and training alike).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from align.modeling.forward import lm_logits, position_ids


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

    def forward(self, input_ids: torch.Tensor, pad_id: int, response_from: int | None = None, with_values: bool = True):
        """(policy logits, value head outputs (B, L) or None at every position); the logits as lm_logits returns
        them for `response_from`."""
        logits = lm_logits(self.policy, input_ids, pad_id, response_from)
        if not with_values:
            return logits, None
        mask = (input_ids != pad_id).long()
        return logits, head_outputs(self.value, input_ids, mask, position_ids(mask))


def head_outputs(classifier: nn.Module, input_ids, attention_mask, positions) -> torch.Tensor:
    """(B, L) the one-label head at every position (what a sequence classifier pools from at one position)."""
    if hasattr(classifier, "get_base_model"):  # a peft model: its LoRA layers sit inside the base model
        classifier = classifier.get_base_model()
    hidden = classifier.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                   position_ids=positions).last_hidden_state
    return classifier.score(hidden)[..., 0]


def add_lora(policy: nn.Module, value: nn.Module, r: int, alpha: float, target_modules: list[str]):
    """(policy, value) with LoRA adapters; the value model's head stays fully trainable.

    The adapters start at zero (peft's B = 0), so at step 0 the policy is exactly the SFT model.
    """
    def config(task_type: str):
        return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(target_modules),
                          fan_in_fan_out=True, task_type=task_type)  # GPT-2's Conv1D stores weights transposed

    return get_peft_model(policy, config("CAUSAL_LM")), get_peft_model(value, config("SEQ_CLS"))


@contextmanager
def adapter_disabled(lora_policy: nn.Module):
    """The LoRA policy with its adapter disabled: the model it started from, which is PPO's reference with LoRA."""
    with lora_policy.disable_adapter():
        yield lora_policy


@contextmanager
def unwrapped_for_generation(model: nn.Module, unwrapped: nn.Module, accelerator):
    """The plain module for sampling: `unwrapped` (accelerator.unwrap_model(model), looked up once by the caller, as
    the lookup walks every module); under DeepSpeed ZeRO-3, TRL's helper first gathers the sharded weights of `model`
    (one all-gather, instead of one per decoding step that hangs when ranks stop at different lengths)."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None and plugin.zero_stage == 3:
        # only here: importing TRL adds much to a PPO process's memory (docs/benchmarks.md), and only ZeRO-3 needs it
        from trl.models import unwrap_model_for_generation

        with unwrap_model_for_generation(model, accelerator) as gathered:
            yield gathered
    else:
        yield unwrapped


def response_values(values: torch.Tensor, context_length: int) -> torch.Tensor:
    """(B, T) the value of the state before each response token."""
    return values[:, context_length - 1 : -1]
