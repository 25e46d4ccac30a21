"""The SFT stage's trainer: TRL's SFTTrainer, with the loss of the model's own forward unless sft.trl_fused_lm_head.

TRL 1.16 computes the SFT loss through an LM head it patches into the model (trl/kernels/chunked_logprob.py): it
projects the hidden states onto the vocabulary a tile at a time, projects them again in the backward pass, and adds
per-token entropy and top-1 for the metrics it logs, so that the (batch, length, vocabulary) logits never exist at
once. That spares accelerator memory on large vocabularies, and costs time on a CPU: for a GPT-2 of 92M parameters
(python -m benchmarks.sft_throughput --models gpt2-124m --batch-size 8) a step over 8 x 512 tokens took 21.5 s
through it and 16.4 s with the model's own loss (15.0-15.3 s in the benchmark's plain loop).

With the model's own loss (full logits, cross-entropy on the labels TRL's collator builds: -100 outside the
assistant's turns and on padding), all the rest is still TRL's: data preparation, assistant-only labels, packing, the
training loop. TRL's `entropy`, `mean_token_accuracy` and `num_tokens` metrics are then not logged. Packed batches
are rows of max_length rather than TRL's one flattened row unless the model has FlashAttention's variable-length
kernel (align/packed_rows.py).
"""

from __future__ import annotations

from pathlib import Path

from transformers import Trainer
from trl import SFTTrainer

from align.config import Config
from align.packed_rows import keep_packed_rows_apart
from align.trainer_setup import trainer_arguments


class ModelLossSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the model's own: transformers' Trainer.compute_loss (labels, and the token count of
    the whole accumulated batch to divide by)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs["use_cache"] = False  # no key/value cache while training
        return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


def sft_arguments(cfg: Config, run_dir: Path) -> dict:
    """SFTConfig's arguments for the stage: the shared trainer settings, then SFT's own. The loss is on the assistant's
    tokens only, through the template's {% generation %} markers."""
    return dict(
        **trainer_arguments(cfg.sft, cfg, run_dir),
        max_length=cfg.sft.max_length,
        packing=cfg.sft.packing,
        packing_strategy=cfg.sft.packing_strategy,
        assistant_only_loss=True,
    )


def sft_trainer(trl_fused_lm_head: bool, **trainer_arguments) -> SFTTrainer:
    """The stage's trainer. With trl_fused_lm_head, TRL's own throughout: its loss reads a packed batch's token count
    off one flattened row, so its packed layout stays too."""
    if trl_fused_lm_head:
        return SFTTrainer(**trainer_arguments)
    trainer = ModelLossSFTTrainer(**trainer_arguments)
    keep_packed_rows_apart(trainer)
    return trainer
