"""Tokens and template: distinct pad, EOS = end of turn, a template that round-trips, labels on assistant turns."""

from __future__ import annotations

import pytest
from helpers import tiny_config

from align.core.tokens import CHAT_TEMPLATE, IM_END, PAD, chat_ids, replies_past_budgets, reply_tokens

MESSAGES = [
    {"role": "user", "content": "words 3 start sun end any"},
    {"role": "assistant", "content": "sun good moon"},
    {"role": "user", "content": "words any start any end moon"},
    {"role": "assistant", "content": "the bird moon"},
]


def test_pad_is_distinct_from_eos_and_eos_ends_a_turn(tokenizer):
    assert tokenizer.pad_token == PAD and tokenizer.eos_token == IM_END
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_template_round_trip(tokenizer):
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    ids = tokenizer.apply_chat_template(MESSAGES, tokenize=True, return_dict=True)["input_ids"]
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    assert text.count(IM_END) == len(MESSAGES)


def test_a_word_is_one_token_wherever_it_stands_and_a_response_decodes_to_itself(tokenizer):
    # The tiny tokenizer gives the first word of a turn its leading-space token too, so "start with X" copies the
    # prompt's token; the space it adds is not part of the decoded response the judge reads.
    prompt = tokenizer.apply_chat_template(MESSAGES[:1], tokenize=True, add_generation_prompt=True,
                                           return_dict=True)["input_ids"]
    full = tokenizer.apply_chat_template(MESSAGES[:2], tokenize=True, return_dict=True)["input_ids"]
    response = full[len(prompt):-1]
    assert full[:len(prompt)] == prompt and full[-1] == tokenizer.eos_token_id
    assert response[0] == tokenizer("words 3 start sun", add_special_tokens=False)["input_ids"][-1]  # `sun` as asked
    assert len(response) == 3
    assert tokenizer.decode(response) == "sun good moon"


def test_generation_prompt_is_a_prefix_of_the_full_conversation(tokenizer):
    prompt = tokenizer.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(MESSAGES[:2], tokenize=False)
    assert full.startswith(prompt) and full[len(prompt):] == "sun good moon" + IM_END
    assert full.endswith(IM_END)  # a finished conversation ends on its EOS: the reward model pools there


def test_labels_cover_every_assistant_turn_and_its_eos_only(tokenizer, tiny_data_root):
    """A three-turn conversation through TRL's own data preparation, with the SFT stage's trainer: the first and the
    middle answers are trained on as the last is (a multi-turn demonstration teaches every turn), no user turn is."""
    from datasets import Dataset
    from trl import SFTConfig

    from align.modeling.models import load_causal_lm
    from align.trainers.sft_trainer import LabelledLogitsSFTTrainer

    conversation = [*MESSAGES, {"role": "user", "content": "words 2 start any end any"},
                    {"role": "assistant", "content": "calm river"}]
    config = tiny_config(f"paths.data={tiny_data_root}")
    model = load_causal_lm(config.model, tokenizer, None, seed=0)
    args = SFTConfig(output_dir="/tmp/unused", assistant_only_loss=True, max_length=96, report_to=[], bf16=False)
    trainer = LabelledLogitsSFTTrainer(model=model, args=args, processing_class=tokenizer,
                                       train_dataset=Dataset.from_list([{"messages": conversation}]))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert len(ids) == len(chat_ids(tokenizer, conversation))  # nothing cut
    trained = [i for i, label in zip(ids, labels) if label != -100]
    assert all(label in (-100, i) for i, label in zip(ids, labels))
    answers = [tokenizer(m["content"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
               for m in conversation if m["role"] == "assistant"]
    assert trained == answers[0] + answers[1] + answers[2]  # each assistant EOS is a label: the model learns to stop


@pytest.mark.parametrize("packing", [False, True])
def test_labelled_logits_loss_equals_trls_fused_loss(tokenizer, tiny_data_root, packing):
    """align.trainers.sft_trainer's loss (logits at labelled positions only) is TRL's, on the same batch: assistant
    tokens only, divided by the number of trained tokens, or by the token count of a whole accumulated batch when the
    Trainer passes one; padded or packed."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from align.modeling.models import load_causal_lm
    from align.trainers.sft_trainer import LabelledLogitsSFTTrainer

    config = tiny_config(f"paths.data={tiny_data_root}")
    model = load_causal_lm(config.model, tokenizer, None, seed=0)
    short = [{"role": "user", "content": "words 1 start sun end any"}, {"role": "assistant", "content": "sun"}]
    args = SFTConfig(output_dir="/tmp/unused", assistant_only_loss=True, max_length=64, report_to=[], bf16=False,
                     packing=packing)
    dataset = Dataset.from_list([{"messages": MESSAGES}, {"messages": short}])
    losses = {}
    for trainer_class in (SFTTrainer, LabelledLogitsSFTTrainer):
        trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        rows = trainer.train_dataset  # two conversations, or one packed row of both
        batch = trainer.data_collator([rows[i] for i in range(len(rows))])
        assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()
        accumulated = 3 * (batch["labels"] != -100).sum()  # as if this were one of several micro-batches
        for num_items in (None, accumulated):
            with torch.no_grad():
                losses[trainer_class, num_items is None] = trainer.compute_loss(model, dict(batch),
                                                                                num_items_in_batch=num_items)
        if trainer_class is LabelledLogitsSFTTrainer:  # the vocabulary projection only where a label is predicted
            with torch.no_grad():
                _, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
            assert outputs.logits.shape == ((batch["labels"][:, 1:] != -100).sum(), len(tokenizer))
    for alone in (True, False):
        assert torch.allclose(losses[SFTTrainer, alone], losses[LabelledLogitsSFTTrainer, alone], atol=1e-5), losses
    assert not torch.allclose(losses[SFTTrainer, True], losses[SFTTrainer, False])


def test_a_batch_without_labels_has_a_zero_loss_not_nan():
    """A conversation cut off before the assistant speaks trains nothing; it must not stop the run as a NaN."""
    import torch

    from align.trainers.sft_trainer import labelled_token_loss, predicts_a_label

    labels = torch.full((2, 5), -100)
    logits = torch.zeros((int(predicts_a_label(labels).sum()), 7), requires_grad=True)
    loss = labelled_token_loss(logits, labels)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_gpt2_style_tokenizer_gets_chat_tokens_and_model_is_resized(tmp_path, tiny_data_root):
    """A GPT-2-like checkpoint (no pad, no template, eos = <|endoftext|>) loaded from a local directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from align.core.config import ModelConfig
    from align.modeling.models import load_causal_lm, load_tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["hello world, a base model"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    base_tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    base = GPT2LMHeadModel(GPT2Config(vocab_size=len(base_tok), n_layer=1, n_embd=16, n_head=2, n_positions=32))
    base_tok.save_pretrained(tmp_path)
    base.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()

    model_cfg = ModelConfig(name="local", name_or_path=str(tmp_path), tokenizer=None, scratch=None,
                            trust_remote_code=False)
    tokenizer = load_tokenizer(model_cfg)
    assert len(tokenizer) == len(base_tok) + 3  # im_start, im_end, pad
    assert tokenizer.chat_template == CHAT_TEMPLATE
    model = load_causal_lm(model_cfg, tokenizer, str(tmp_path), seed=0)
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id != tokenizer.pad_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_a_replys_tokens_are_what_a_model_samples_for_it_eos_included(tokenizer):
    prompt = tokenizer.apply_chat_template(MESSAGES[:-1], add_generation_prompt=True, return_dict=True)["input_ids"]
    whole = chat_ids(tokenizer, MESSAGES)
    assert whole[:len(prompt)] == prompt and whole[-1] == tokenizer.eos_token_id
    assert reply_tokens(tokenizer, MESSAGES) == len(whole) - len(prompt) == 4  # three words, one token each, and EOS


def test_replies_past_a_budget_are_said_once_per_budget_with_the_key_to_raise():
    assert replies_past_budgets([4, 6, 16], {"ppo.response_tokens": 16, "eval.max_new_tokens": 32}) == []
    warnings = replies_past_budgets([4, 17, 40], {"ppo.response_tokens": 16, "eval.max_new_tokens": 32})
    assert len(warnings) == 2
    assert warnings[0].startswith("2 of 3") and "ppo.response_tokens=16" in warnings[0] and "longest 40" in warnings[0]
    assert warnings[1].startswith("1 of 3") and "raise eval.max_new_tokens" in warnings[1]
