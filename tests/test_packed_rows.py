"""Packed SFT rows (align/trainers/packed_rows.py): each document in a row is computed as if it were alone, and trains
on the same labels and loss as TRL's flattened padding-free row."""

from __future__ import annotations

import pytest
from helpers import tiny_config

CONVERSATIONS = [
    [{"role": "user", "content": "words 3 start sun end any"}, {"role": "assistant", "content": "sun good moon"}],
    [{"role": "user", "content": "start any end moon"}, {"role": "assistant", "content": "the bird moon"}],
    [{"role": "user", "content": "words 1"}, {"role": "assistant", "content": "sun"}],
    [{"role": "user", "content": "words 5 start the end bird"},
     {"role": "assistant", "content": "the good sun and bird"},
     {"role": "user", "content": "again"}, {"role": "assistant", "content": "the moon"}],
    [{"role": "user", "content": "end sun"}, {"role": "assistant", "content": "good sun"}],
]


def packed_trainer(tokenizer, tiny_data_root, attention: str, build=None):
    """A packed SFT trainer over CONVERSATIONS; `build` makes it from its keyword arguments (default: the stage's
    trainer class itself, so the collator is still TRL's)."""
    from datasets import Dataset
    from trl import SFTConfig

    from align.modeling.models import load_causal_lm
    from align.trainers.sft_trainer import LabelledLogitsSFTTrainer

    model = load_causal_lm(tiny_config(f"paths.data={tiny_data_root}").model, tokenizer, None, seed=0)
    model.set_attn_implementation(attention)
    model.eval()  # no dropout: outputs compared exactly
    args = SFTConfig(output_dir="/tmp/unused", assistant_only_loss=True, max_length=64, packing=True, report_to=[],
                     bf16=False)
    dataset = Dataset.from_list([{"messages": messages} for messages in CONVERSATIONS])
    return (build or LabelledLogitsSFTTrainer)(model=model, args=args, train_dataset=dataset,
                                               processing_class=tokenizer)


def alone(tokenizer, messages) -> tuple[list[int], list[int]]:
    """A conversation's input ids and labels as an unpacked row (assistant tokens only)."""
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    ids = encoded["input_ids"]
    return ids, [i if m else -100 for i, m in zip(ids, encoded["assistant_masks"])]


def test_collated_rows_restart_positions_and_never_label_across_documents():
    """Labels equal to the input ids (training on every token): a document's first token is not the label of the
    previous document's last one, and padding is neither a label nor a real position."""
    from align.trainers.packed_rows import PackedRowsCollator

    batch = PackedRowsCollator(pad_token_id=0)([
        {"input_ids": [5, 6, 7, 8, 9], "labels": [5, 6, 7, 8, 9], "seq_lengths": [2, 3]},
        {"input_ids": [10, 11, 12], "labels": [10, 11, 12], "seq_lengths": [3]},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1, 2], [0, 1, 2, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, -100, 8, 9], [-100, 11, 12, -100, -100]]
    assert "attention_mask" not in batch


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_each_document_of_a_packed_row_is_computed_as_if_alone(tokenizer, tiny_data_root, attention):
    import torch

    from align.trainers.packed_rows import PackedRowsCollator, keep_packed_rows_apart

    trainer = packed_trainer(tokenizer, tiny_data_root, attention)
    keep_packed_rows_apart(trainer)
    assert isinstance(trainer.data_collator, PackedRowsCollator)
    bins = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    assert len(bins) >= 2 and max(len(b["seq_lengths"]) for b in bins) >= 2  # rows of several documents
    assert len({len(b["input_ids"]) for b in bins}) >= 2  # and rows of unequal length: one is padded
    batch = trainer.data_collator(bins)
    assert batch["input_ids"].shape == (len(bins), max(len(b["input_ids"]) for b in bins))
    assert "attention_mask" not in batch

    expected = {tuple(alone(tokenizer, messages)[0]): alone(tokenizer, messages) for messages in CONVERSATIONS}
    with torch.no_grad():
        # use_cache=False as in training: with a cache, transformers does not read documents off position_ids.
        logits = trainer.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                               use_cache=False).logits
        seen = 0
        for row, packed in enumerate(bins):
            start = 0
            for length in packed["seq_lengths"]:
                ids = batch["input_ids"][row, start:start + length]
                own_ids, own_labels = expected[tuple(ids.tolist())]
                assert batch["position_ids"][row, start:start + length].tolist() == list(range(length))
                assert batch["labels"][row, start:start + length].tolist() == own_labels
                by_itself = trainer.model(input_ids=ids[None]).logits[0]
                torch.testing.assert_close(logits[row, start:start + length], by_itself, atol=1e-5, rtol=1e-5)
                start, seen = start + length, seen + 1
            assert (batch["labels"][row, start:] == -100).all()  # the padding trains nothing
            assert (batch["input_ids"][row, start:] == tokenizer.pad_token_id).all()
    assert seen == len(CONVERSATIONS)  # every conversation is somewhere, once


def test_rows_train_on_the_loss_of_trls_flat_row(tokenizer, tiny_data_root):
    """The same packed bins, as TRL's one flattened row (a block-diagonal mask over all of it) and as rows: the
    same loss and the same non-pad token count for the Trainer."""
    import torch

    from align.trainers.packed_rows import keep_packed_rows_apart

    trainer = packed_trainer(tokenizer, tiny_data_root, "sdpa")
    bins = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    flat = trainer.data_collator(bins)
    keep_packed_rows_apart(trainer)
    rows = trainer.data_collator(bins)
    assert flat["input_ids"].shape[0] == 1 and rows["input_ids"].shape[0] == len(bins)
    assert (rows["labels"] != -100).sum() == (flat["labels"] != -100).sum()
    assert (rows["input_ids"] != tokenizer.pad_token_id).sum() == flat["input_ids"].numel()
    with torch.no_grad():
        losses = [trainer.compute_loss(trainer.model, {k: v for k, v in batch.items() if k in ("input_ids", "labels",
                                                                                               "position_ids")})
                  for batch in (flat, rows)]
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=1e-5)


def test_flash_attention_and_unpacked_runs_keep_trls_collator(tokenizer, tiny_data_root):
    from align.trainers.packed_rows import PackedRowsCollator, keep_packed_rows_apart

    trainer = packed_trainer(tokenizer, tiny_data_root, "sdpa")
    trls = trainer.data_collator
    trainer.model.config._attn_implementation = "flash_attention_2"  # the flat row is FlashAttention's layout
    keep_packed_rows_apart(trainer)
    assert trainer.data_collator is trls
    trainer.model.config._attn_implementation = "sdpa"
    trainer.args.packing = False
    keep_packed_rows_apart(trainer)
    assert trainer.data_collator is trls
    # An unpacked evaluation set (eval_packing=False) goes through the same collator: padded rows with their mask.
    batch = PackedRowsCollator(pad_token_id=0)([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]},
                                                {"input_ids": [4], "labels": [4]}])
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[1, 2, 3], [4, -100, -100]]


@pytest.mark.parametrize("trl_fused_lm_head", [False, True])
def test_the_stage_trainer_keeps_packed_rows_apart_unless_it_is_trls_own(tokenizer, tiny_data_root,
                                                                          trl_fused_lm_head):
    from functools import partial

    from trl import SFTTrainer

    from align.trainers.packed_rows import PackedRowsCollator
    from align.trainers.sft_trainer import LabelledLogitsSFTTrainer, sft_trainer

    trainer = packed_trainer(tokenizer, tiny_data_root, "sdpa", build=partial(sft_trainer, trl_fused_lm_head))
    assert isinstance(trainer, SFTTrainer)
    assert isinstance(trainer, LabelledLogitsSFTTrainer) != trl_fused_lm_head
    assert isinstance(trainer.data_collator, PackedRowsCollator) != trl_fused_lm_head
