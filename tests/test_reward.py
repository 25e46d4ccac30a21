"""The reward model's pieces: Bradley-Terry loss through TRL, reading the score at the EOS, normalisation."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_config

from align.core.tokens import IM_END
from align.modeling.models import load_reward_model
from align.modeling.reward_model import reward_at_eos, score, shift_scores

PAIR = {
    "prompt": [{"role": "user", "content": "words 3 start sun end any"}],
    "chosen": [{"role": "assistant", "content": "sun good moon"}],
    "rejected": [{"role": "assistant", "content": "bad good moon river"}],
}


@pytest.fixture
def rm(tokenizer, tiny_data_root):
    return load_reward_model(tiny_config(f"paths.data={tiny_data_root}").model, tokenizer, None, seed=0)


def head_output_at(rm, ids: list[int], index: int) -> float:
    """The head applied to the hidden state at one position of an unpadded sequence: the ground truth."""
    with torch.no_grad():
        hidden = rm.transformer(input_ids=torch.tensor([ids])).last_hidden_state
        return rm.score(hidden)[0, index, 0].item()


def test_bradley_terry_loss_through_trl(rm, tokenizer, tmp_path):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    args = RewardConfig(output_dir=str(tmp_path), report_to=[], bf16=False, max_length=64)
    trainer = RewardTrainer(model=rm, args=args, train_dataset=Dataset.from_list([PAIR]), processing_class=tokenizer)
    inputs = trainer.data_collator([trainer.train_dataset[0]])
    with torch.no_grad():
        rm.score.weight.zero_()  # equal rewards (both 0)
    loss = trainer.compute_loss(rm, dict(inputs))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)

    # The loss's gradient with respect to the two scores: descending it raises r_chosen and lowers r_rejected,
    # each by sigmoid(r_rejected - r_chosen) = 1/2 at equal rewards.
    head_outputs = []
    rm.score.register_forward_hook(lambda module, args, output: head_outputs.append(output) or output.retain_grad())
    trainer.compute_loss(rm, dict(inputs)).backward()
    grad = head_outputs[-1].grad[:, :, 0].sum(dim=1)  # only the pooled (EOS) positions carry gradient
    assert grad.tolist() == pytest.approx([-0.5, 0.5], abs=1e-6)  # rows: chosen, rejected


def test_score_is_read_at_the_eos_whatever_the_padding(rm, tokenizer):
    ids = tokenizer.apply_chat_template(PAIR["prompt"] + PAIR["chosen"], return_dict=True)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id  # a finished conversation ends on its EOS
    truth = head_output_at(rm, ids, len(ids) - 1)
    pad = tokenizer.pad_token_id
    for n_pad in (0, 1, 5):
        right = torch.tensor([ids + [pad] * n_pad])
        left = torch.tensor([[pad] * n_pad + ids])
        right_mask, left_mask = (right != pad).long(), (left != pad).long()
        with torch.no_grad():
            assert reward_at_eos(rm, right, right_mask).item() == pytest.approx(truth, abs=1e-5)
            assert reward_at_eos(rm, left, left_mask).item() == pytest.approx(truth, abs=1e-5)
    assert score(rm, tokenizer, [PAIR["prompt"] + PAIR["chosen"]]).item() == pytest.approx(truth, abs=1e-5)


def test_pad_aliased_to_eos_would_read_the_wrong_position(rm, tokenizer):
    """Regression guard: the distinct pad is what makes the pooling land on the EOS."""
    ids = tokenizer.apply_chat_template(PAIR["prompt"] + PAIR["chosen"], return_dict=True)["input_ids"]
    truth = head_output_at(rm, ids, len(ids) - 1)
    rm.config.pad_token_id = tokenizer.convert_tokens_to_ids(IM_END)
    batch = torch.tensor([ids])
    with torch.no_grad():
        aliased = reward_at_eos(rm, batch, torch.ones_like(batch)).item()
    assert aliased != pytest.approx(truth, abs=1e-5)


def test_new_head_init_and_dropout_off(tokenizer, tiny_data_root):
    from dataclasses import replace

    config = tiny_config(f"paths.data={tiny_data_root}").model
    wide = replace(config, scratch=replace(config.scratch, n_embd=512, n_head=8, dropout=0.1))
    rm = load_reward_model(wide, tokenizer, None, seed=0)
    assert rm.score.weight.std().item() == pytest.approx(1 / math.sqrt(512 + 1), rel=0.1)
    assert all(m.p == 0 for m in rm.modules() if isinstance(m, torch.nn.Dropout))
    rm.train()
    ids = tokenizer.apply_chat_template(PAIR["prompt"] + PAIR["chosen"], return_dict=True)["input_ids"]
    batch = torch.tensor([ids])
    assert torch.equal(rm(batch).logits, rm(batch).logits)  # no randomness left in train mode


def test_normalisation_survives_save_and_reload(rm, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    reference = [PAIR["prompt"] + PAIR["chosen"], PAIR["prompt"] + PAIR["rejected"],
                 [{"role": "user", "content": "words any start any end moon"},
                  {"role": "assistant", "content": "the moon"}]]
    before = score(rm, tokenizer, reference)
    shift_scores(rm, before.mean().item())
    rm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    after = score(reloaded, tokenizer, reference)
    assert after.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert torch.allclose(after - after.mean(), before - before.mean(), atol=1e-5)  # only a shift
