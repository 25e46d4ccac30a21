"""Packed SFT batches as rows of packed bins, for attention without a variable-length kernel (sdpa, eager).

TRL packs conversations into bins of at most max_length tokens (best-fit decreasing) and then collates a batch of bins
as one flattened padding-free row: the layout of FlashAttention's variable-length kernel, which reads the document
boundaries from position_ids and never builds a mask. Without that kernel (any CPU, or a GPU running sdpa),
transformers turns the same position_ids into a dense block-diagonal mask over the whole flattened row, so attention
costs (rows x max_length)^2 instead of rows x max_length^2: packing 8 rows of 512 tokens lost to padding them
(docs/benchmarks.md).

Here each bin stays its own row, padded to the longest bin of the batch. Each document's positions restart at 0, and
there is no attention mask, so transformers derives a block-diagonal causal mask per row from the position_ids and no
document sees another. It does so only when the forward pass has no key/value cache (use_cache=False, as in
training). A pad sits at position 0, so it is its own one-token document that nothing attends to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trl.trainer.sft_trainer import DataCollatorForLanguageModeling


@dataclass
class PackedRowsCollator(DataCollatorForLanguageModeling):
    """Collates TRL's packed examples (input_ids, labels, seq_lengths) as (bins, longest bin) tensors; unpacked
    examples as TRL's collator does."""

    return_position_ids: bool = True

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        if "seq_lengths" not in examples[0]:  # unpacked (an evaluation set left unpacked): padded rows, as TRL's
            return batch
        # Transformers only reads document boundaries from position_ids when no 2D mask is given.
        del batch["attention_mask"]
        # A document's first token must not be the label of the previous document's last one.
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch


def varlen_attention(model) -> bool:
    """Whether the model attends with a FlashAttention variable-length kernel, for which TRL's flat row is right."""
    return "flash" in (model.config._attn_implementation or "")


def keep_packed_rows_apart(trainer) -> None:
    """Give a packed (bfd) SFTTrainer a row per packed bin instead of one flattened row, unless the model has a
    variable-length attention kernel. Call after construction: TRL refuses a custom collator with packing."""
    args = trainer.args
    if not (args.packing and args.packing_strategy in ("bfd", "bfd_split")) or varlen_attention(trainer.model):
        return
    trainer.data_collator = PackedRowsCollator(pad_token_id=trainer.processing_class.pad_token_id,
                                               pad_to_multiple_of=args.pad_to_multiple_of)
