"""The implicit reward model (rm.kind=implicit): beta x the reply's log-ratio to the reference, read from a padded
batch as any reward model is, saved and loaded with its reference, and the KL coefficient below which PPO against it
aims past the DPO model."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config

from align.core.errors import UserError
from align.modeling.implicit_reward import ImplicitRewardModel, kl_coef_floor, reply_mask, typical_tokens
from align.modeling.models import load_causal_lm, load_reward_scorer
from align.modeling.reward_model import reward_at_eos, score

PROMPT = [{"role": "user", "content": "words 3 start sun end any"}]
REPLIES = [[{"role": "assistant", "content": "sun good moon"}],
           [{"role": "assistant", "content": "bad good moon river sun"}]]


@pytest.fixture
def models(tokenizer, tiny_data_root):
    """Two different random tiny LMs: a policy and a reference."""
    model_cfg = tiny_config(f"paths.data={tiny_data_root}").model
    return [load_causal_lm(model_cfg, tokenizer, None, seed) for seed in (0, 1)]


def by_hand(policy, reference, tokenizer, reply, beta: float) -> float:
    """beta x sum of log pi - log pi_ref over the reply's tokens (EOS included), one unpadded sequence."""
    start = len(tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True)["input_ids"])
    ids = torch.tensor([tokenizer.apply_chat_template(PROMPT + reply, return_dict=True)["input_ids"]])
    total = 0.0
    with torch.no_grad():
        for sign, lm in ((1, policy), (-1, reference)):
            logprobs = torch.log_softmax(lm(ids).logits[0, :-1], dim=-1)
            total += sign * sum(logprobs[t - 1, ids[0, t]].item() for t in range(start, ids.shape[1]))
    return beta * total


def test_score_is_beta_times_the_replys_log_ratio_whatever_the_padding(models, tokenizer):
    policy, reference = models
    rm = ImplicitRewardModel(policy, reference, beta=0.3, offset=0.0, tokenizer=tokenizer)
    expected = [by_hand(policy, reference, tokenizer, reply, 0.3) for reply in REPLIES]
    assert score(rm, tokenizer, [PROMPT + r for r in REPLIES]).tolist() == pytest.approx(expected, abs=1e-4)
    # left-padded, as PPO's query + response batches are
    rows = [tokenizer.apply_chat_template(PROMPT + r, return_dict=True)["input_ids"] for r in REPLIES]
    width = max(map(len, rows)) + 2
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = (ids != tokenizer.pad_token_id).long()
    with torch.no_grad():
        assert reward_at_eos(rm, ids, mask).tolist() == pytest.approx(expected, abs=1e-4)
    rm.offset = 1.5  # the normalisation shift, subtracted
    assert score(rm, tokenizer, [PROMPT + r for r in REPLIES]).tolist() == pytest.approx(
        [e - 1.5 for e in expected], abs=1e-4)


def reply_tokens(tokenizer, reply) -> int:
    """The reply's tokens in the conversation, the EOS included, counted by hand."""
    start = len(tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True)["input_ids"])
    return len(tokenizer.apply_chat_template(PROMPT + reply, return_dict=True)["input_ids"]) - start


def test_length_normalised_the_sum_is_scaled_by_the_typical_length_over_the_replys_tokens_plus_one(models, tokenizer):
    policy, reference = models
    rm = ImplicitRewardModel(policy, reference, beta=0.3, offset=0.5, tokenizer=tokenizer, typical_tokens=7.5)
    lengths = [reply_tokens(tokenizer, reply) for reply in REPLIES]
    assert lengths[0] != lengths[1]
    expected = [by_hand(policy, reference, tokenizer, reply, 0.3) * 7.5 / (n + 1) - 0.5
                for reply, n in zip(REPLIES, lengths)]
    assert score(rm, tokenizer, [PROMPT + r for r in REPLIES]).tolist() == pytest.approx(expected, abs=1e-4)
    rows = [tokenizer.apply_chat_template(PROMPT + r, return_dict=True)["input_ids"] for r in REPLIES]
    width = max(map(len, rows)) + 3
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])  # as PPO's batches are
    with torch.no_grad():
        assert reward_at_eos(rm, ids, (ids != tokenizer.pad_token_id).long()).tolist() == pytest.approx(
            expected, abs=1e-4)
    # the typical length is counted as the score counts a reply, plus one: at it the two scores are equal
    assert typical_tokens(tokenizer, [PROMPT + r for r in REPLIES]) == pytest.approx(sum(lengths) / 2 + 1)


def test_the_same_model_as_its_reference_scores_zero_and_the_prompt_never_counts(models, tokenizer):
    policy, reference = models
    same = ImplicitRewardModel(policy, policy, beta=0.3, offset=0.0, tokenizer=tokenizer)
    assert score(same, tokenizer, [PROMPT + r for r in REPLIES]).abs().max().item() < 1e-6
    ids = torch.tensor([tokenizer.apply_chat_template(PROMPT + REPLIES[0], return_dict=True)["input_ids"]])
    mask = reply_mask(ids, torch.ones_like(ids), same.im_start_id, same.header)[0]
    start = len(tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True)["input_ids"])
    assert mask.tolist() == [False] * start + [True] * (ids.shape[1] - start)


def test_saved_with_its_reference_it_loads_as_a_reward_model_and_refuses_a_lost_reference(models, tokenizer,
                                                                                          tiny_data_root, tmp_path):
    policy, reference = models
    model_cfg = tiny_config(f"paths.data={tiny_data_root}").model
    for name, lm in (("rm", policy), ("sft", reference)):
        lm.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    rm = ImplicitRewardModel(policy, reference, beta=0.3, offset=0.25, tokenizer=tokenizer, typical_tokens=6.5)
    rm.save(tmp_path / "rm", str(tmp_path / "sft"))
    loaded = load_reward_scorer(model_cfg, tokenizer, str(tmp_path / "rm"), seed=0)
    conversations = [PROMPT + r for r in REPLIES]
    assert score(loaded, tokenizer, conversations).tolist() == pytest.approx(
        score(rm, tokenizer, conversations).tolist(), abs=1e-5)
    assert not any(p.requires_grad for p in loaded.parameters())
    (tmp_path / "sft" / "model.safetensors").unlink()
    (tmp_path / "sft" / "config.json").unlink()
    (tmp_path / "sft").rename(tmp_path / "moved")
    with pytest.raises(UserError, match="reference"):
        load_reward_scorer(model_cfg, tokenizer, str(tmp_path / "rm"), seed=0)


def test_at_the_kl_floor_ppos_best_policy_is_the_dpo_model_sampled_at_ppos_temperature():
    """One-token replies (where tempered sampling has a single normaliser, so the statement is exact): PPO's best
    policy, the reference at temperature T times exp(reward / kl_coef), is the DPO model at T when kl_coef is the
    floor, and sharper or flatter than it at any other coefficient, beta itself included."""
    ref_logits, dpo_logits = torch.randn(2, 50, generator=torch.Generator().manual_seed(0))
    beta, temperature = 0.3, 0.8
    reward = beta * (torch.log_softmax(dpo_logits, -1) - torch.log_softmax(ref_logits, -1))

    def ppo_optimum(kl_coef: float) -> torch.Tensor:
        return torch.softmax(ref_logits / temperature + reward / kl_coef, -1)

    dpo_at_temperature = torch.softmax(dpo_logits / temperature, -1)
    floor = kl_coef_floor(beta, temperature)
    torch.testing.assert_close(ppo_optimum(floor), dpo_at_temperature)
    for other in (beta, 0.5 * floor, 2 * floor):
        assert not torch.allclose(ppo_optimum(other), dpo_at_temperature, atol=1e-3)
