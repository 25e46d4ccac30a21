"""The SFT stage's trainer: TRL's SFTTrainer, with logits computed only where there is a label, unless
sft.trl_fused_lm_head.

TRL 1.16 computes the SFT loss through an LM head it patches into the model (trl/kernels/chunked_logprob.py): it
projects the hidden states onto the vocabulary a tile at a time, projects them again in the backward pass, and adds
per-token entropy and top-1 for the metrics it logs, so that the (batch, length, vocabulary) logits never exist at
once. That spares accelerator memory on large vocabularies, and costs time on a CPU against the full logits and the
model's own loss (docs/benchmarks.md).

Here the model projects onto the vocabulary only the positions whose next token is a label (the assistant's turns;
not the prompts, not the padding), through transformers' boolean `logits_to_keep`, and the loss is the cross-entropy
there: the model's own causal-LM loss, without the logits it would throw away. All the rest is still TRL's: data
preparation, assistant-only labels, packing, the training loop. TRL's `entropy`, `mean_token_accuracy` and
`num_tokens` metrics are then not logged, and TRL's loss options (label smoothing, DFT, compute_loss_func) do not
apply. Packed batches are a row per packed bin rather than TRL's one flattened row unless the model has FlashAttention's
variable-length kernel (align/trainers/packed_rows.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from align.core.config import Config
from align.trainers.packed_rows import keep_packed_rows_apart
from align.trainers.stage_setup import settings_arguments, trainer_arguments


def predicts_a_label(labels: torch.Tensor) -> torch.Tensor:
    """(batch, length) bool: the positions whose next token is trained on. The last position predicts nothing."""
    return F.pad(labels[:, 1:] != -100, (0, 1), value=False)


def labelled_token_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Summed cross-entropy of `logits` (one row per position where predicts_a_label, in batch-major order) against
    those labels, divided by `num_items_in_batch` (the labels of a whole accumulated batch) or by their own count.
    A batch without labels gives 0, not 0 / 0."""
    targets = labels[:, 1:][labels[:, 1:] != -100]
    total = F.cross_entropy(logits.float(), targets, reduction="sum")
    count = targets.numel() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


class LabelledLogitsSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the causal-LM loss on logits computed at labelled positions only."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False, logits_to_keep=predicts_a_label(labels))
        loss = labelled_token_loss(outputs.logits, labels, num_items_in_batch)
        # As transformers' Trainer.compute_loss: num_items_in_batch counts the labels of every rank, and the ranks'
        # gradients are averaged.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, outputs) if return_outputs else loss


def sft_arguments(cfg: Config, run_dir: Path) -> dict:
    """SFTConfig's arguments for the stage: the shared trainer settings, then SFT's own. The loss is on the assistant's
    tokens only, through the template's {% generation %} markers."""
    return trainer_arguments(
        cfg, run_dir,
        **settings_arguments(cfg.sft),
        max_length=cfg.sft.max_length,
        packing=cfg.sft.packing,
        packing_strategy=cfg.sft.packing_strategy,
        assistant_only_loss=True,
    )


def sft_trainer(trl_fused_lm_head: bool, **trainer_kwargs) -> SFTTrainer:
    """The stage's trainer. With trl_fused_lm_head, TRL's own throughout: its `num_tokens` metric reads a packed
    batch's token count off one flattened row, so its packed layout stays too."""
    if trl_fused_lm_head:
        return SFTTrainer(**trainer_kwargs)
    trainer = LabelledLogitsSFTTrainer(**trainer_kwargs)
    keep_packed_rows_apart(trainer)
    return trainer
