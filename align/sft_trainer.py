"""The SFT stage's trainer: TRL's SFTTrainer, with the loss of the model's own forward unless sft.trl_fused_lm_head.

TRL 1.16 computes the SFT loss through an LM head it patches into the model (trl/kernels/chunked_logprob.py): it
projects the hidden states onto the vocabulary a tile at a time, projects them again in the backward pass, and adds
per-token entropy and top-1 for the metrics it logs, so that the (batch, length, vocabulary) logits never exist at
once. That spares accelerator memory on large vocabularies, and costs time on a CPU: for a GPT-2 of 92M parameters
(python -m benchmarks.sft_throughput --models gpt2-124m --batch-size 8) a step over 8 x 512 tokens took 21.5 s
through it and 16.4 s with the model's own loss (15.0-15.3 s in the benchmark's plain loop).

With the model's own loss (full logits, cross-entropy on the labels TRL's collator builds: -100 outside the
assistant's turns and on padding), all the rest is still TRL's: data preparation, assistant-only labels, packing, the
training loop. TRL's `entropy`, `mean_token_accuracy` and `num_tokens` metrics are then not logged.
"""

from __future__ import annotations

from transformers import Trainer
from trl import SFTTrainer


class ModelLossSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the model's own: transformers' Trainer.compute_loss (labels, and the token count of
    the whole accumulated batch to divide by)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs["use_cache"] = False  # no key/value cache while training
        return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


def sft_trainer_class(trl_fused_lm_head: bool) -> type[SFTTrainer]:
    return SFTTrainer if trl_fused_lm_head else ModelLossSFTTrainer
