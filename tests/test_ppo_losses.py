"""PPO math on hand-computed tensors (docs/ppo_checklist.md items A4, D3, E1-E4, F1, F3-F5, G1)."""

from __future__ import annotations

import math

import pytest
import torch

from align.rlhf.losses import (
    adaptive_kl_coef,
    apply_missing_eos_penalty,
    gae,
    kl_per_token,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    shape_rewards,
    truncate_after_eos,
    value_loss,
)

EOS, PAD = 2, 3
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])


# --- D3: fixed-length sampling truncated after the first EOS ---

def test_truncate_keeps_through_first_eos_and_pads_the_rest():
    responses = torch.tensor([[5, EOS, 6, EOS], [5, 6, 7, 8], [EOS, 5, 6, 7]])
    truncated, mask = truncate_after_eos(responses, EOS, PAD)
    assert truncated.tolist() == [[5, EOS, PAD, PAD], [5, 6, 7, 8], [EOS, PAD, PAD, PAD]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]  # 1 at the EOS, 0 exactly at the pads


# --- E4: whitening ---

def test_whitening_is_masked_and_biased():
    x = torch.tensor([[1.0, 2.0, 3.0, 1e6], [4.0, 5.0, 6.0, 7.0]])
    white = masked_whiten(x, MASK)
    assert masked_mean(white, MASK).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(white, MASK).item() == pytest.approx(1.0, abs=1e-5)  # biased variance
    assert white[0, 3].item() == 0.0
    real = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert masked_var(x, MASK).item() == pytest.approx(real.var(unbiased=False).item())


def test_whitening_ignores_garbage_in_pads_and_can_keep_the_mean():
    x = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 6.0, 7.0]])
    garbage = x.clone()
    garbage[0, 3] = float("inf")
    assert torch.equal(masked_whiten(x, MASK), masked_whiten(garbage, MASK))
    kept = masked_whiten(x, MASK, shift_mean=False)
    assert masked_mean(kept, MASK).item() == pytest.approx(masked_mean(x, MASK).item(), abs=1e-5)


# --- E2: KL estimators ---

def test_kl_estimators_converge_to_the_analytic_kl_and_k3_is_never_negative():
    torch.manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    analytic = (p * (p / q).log()).sum().item()
    samples = torch.multinomial(p, 200_000, replacement=True)
    logp, logq = p.log()[samples], q.log()[samples]
    k1, k3 = kl_per_token(logp, logq, "k1"), kl_per_token(logp, logq, "k3")
    assert k1.mean().item() == pytest.approx(analytic, abs=0.01)
    assert k3.mean().item() == pytest.approx(analytic, abs=0.01)
    assert (k3 >= 0).all() and (k1 < 0).any()
    assert k3.var() < k1.var()
    same = torch.randn(10)
    assert torch.equal(kl_per_token(same, same, "k1"), torch.zeros(10))
    assert torch.equal(kl_per_token(same, same, "k3"), torch.zeros(10))


# --- E3: the EOS trick ---

def test_missing_eos_penalty_touches_only_responses_without_eos():
    scores, has_eos = torch.tensor([0.7, 0.7]), torch.tensor([True, False])
    assert apply_missing_eos_penalty(scores, has_eos, "replace", -1.0).tolist() == pytest.approx([0.7, -1.0])
    assert apply_missing_eos_penalty(scores, has_eos, "subtract", 1.0).tolist() == pytest.approx([0.7, -0.3])
    assert apply_missing_eos_penalty(scores, has_eos, "none", 1.0).tolist() == pytest.approx([0.7, 0.7])


# --- E1: per-token KL penalty, score once at the EOS ---

def test_shaped_rewards_put_the_score_once_on_the_eos():
    kl = torch.tensor([[0.1, 0.2, 0.3, 99.0], [0.1, 0.1, 0.1, 0.1]])
    scores = torch.tensor([1.0, -2.0])
    rewards = shape_rewards(scores, kl, MASK, kl_coef=0.5)
    assert rewards[0].tolist() == pytest.approx([-0.05, -0.1, -0.15 + 1.0, 0.0])  # pad reward is 0
    assert rewards[1].tolist() == pytest.approx([-0.05, -0.05, -0.05, -0.05 - 2.0])
    assert rewards.sum(1).tolist() == pytest.approx((scores - 0.5 * (kl * MASK).sum(1)).tolist())


# --- F1: GAE ---

def test_gae_on_a_hand_computed_example():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # deltas: d2 = 1 - 0.7 = 0.3; d1 = 0 + 0.7 - 0.6 = 0.1; d0 = 0 + 0.6 - 0.5 = 0.1
    a2 = 0.3
    a1 = 0.1 + 0.95 * a2
    a0 = 0.1 + 0.95 * a1
    assert advantages[0].tolist() == pytest.approx([a0, a1, a2])
    assert returns[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.6, a2 + 0.7])


def test_gae_limits_and_padding():
    torch.manual_seed(0)
    rewards, values = torch.randn(2, 4), torch.randn(2, 4)
    adv_mc, _ = gae(rewards, values, MASK, gamma=1.0, lam=1.0)
    masked_r = rewards * MASK
    future = masked_r.flip(1).cumsum(1).flip(1)  # sum of rewards from t on
    assert torch.allclose(adv_mc, (future - values) * MASK, atol=1e-6)
    adv_td, _ = gae(rewards, values, MASK, gamma=1.0, lam=0.0)
    next_values = torch.cat([values[:, 1:] * MASK[:, 1:], torch.zeros(2, 1)], dim=1)
    assert torch.allclose(adv_td, (masked_r + next_values - values) * MASK, atol=1e-6)
    garbage = rewards.clone()
    garbage[0, 3], values_garbage = 1e6, values.clone()
    values_garbage[0, 3] = -1e6
    assert torch.equal(gae(garbage, values_garbage, MASK, 1.0, 0.95)[0], gae(rewards, values, MASK, 1.0, 0.95)[0])


# --- F3: clipped surrogate ---

@pytest.mark.parametrize("advantage, ratio, gradient_is_zero", [
    (1.0, 1.5, True), (-1.0, 0.5, True), (1.0, 1.1, False), (-1.0, 1.5, False), (1.0, 0.5, False)])
def test_policy_clip(advantage, ratio, gradient_is_zero):
    logprobs = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, stats = policy_loss(logprobs, torch.zeros(1, 1), torch.tensor([[advantage]]), torch.ones(1, 1), 0.2)
    loss.backward()
    assert (logprobs.grad.abs().item() == 0.0) == gradient_is_zero
    assert stats["clipfrac"].item() == float(gradient_is_zero)


def test_policy_loss_at_ratio_one_is_the_negative_mean_advantage():
    logprobs = torch.randn(2, 4)
    advantages = torch.randn(2, 4)
    loss, stats = policy_loss(logprobs, logprobs.clone(), advantages, MASK, 0.2)
    assert loss.item() == pytest.approx(-masked_mean(advantages, MASK).item(), abs=1e-6)
    assert stats["clipfrac"].item() == 0.0 and stats["approx_kl"].item() == 0.0 and stats["ratio"].item() == 1.0


# --- F4: clipped value loss ---

def test_value_loss_by_hand():
    values, old, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    loss, stats = value_loss(values, old, returns, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: unclipped (1 - 0)^2 = 1, clipped (0.2 - 0)^2 = 0.04 -> 1; token 1: both (0 - 1)^2 = 1 -> 1
    assert loss.item() == pytest.approx(0.5 * (1 + 1) / 2)
    assert stats["vf_clipfrac"].item() == 0.0
    values = torch.tensor([[-1.0, 0.5]])
    loss, stats = value_loss(values, old, torch.tensor([[-1.0, 0.5]]), torch.ones(1, 2), cliprange_value=0.2)
    # token 0: unclipped 0, clipped (-0.2 + 1)^2 = 0.64; token 1: unclipped 0, clipped (0.2 - 0.5)^2 = 0.09
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.09) / 2)
    assert stats["vf_clipfrac"].item() == 1.0
    plain, _ = value_loss(values, old, returns, torch.ones(1, 2), cliprange_value=float("inf"))
    assert plain.item() == pytest.approx(0.5 * ((values - returns) ** 2).mean().item())


def test_losses_ignore_garbage_in_pads():
    torch.manual_seed(0)
    logprobs, old, adv, values, returns = (torch.randn(2, 4) for _ in range(5))
    dirty = [t.clone() for t in (logprobs, old, adv, values, returns)]
    for t in dirty:
        t[0, 3] = 1e6
    clean_pg, _ = policy_loss(logprobs, old, adv, MASK, 0.2)
    dirty_pg, _ = policy_loss(dirty[0], dirty[1], dirty[2], MASK, 0.2)
    clean_vf, _ = value_loss(values, old, returns, MASK, 0.2)
    dirty_vf, _ = value_loss(dirty[3], dirty[1], dirty[4], MASK, 0.2)
    assert clean_pg.item() == pytest.approx(dirty_pg.item()) and clean_vf.item() == pytest.approx(dirty_vf.item())


# --- G1: adaptive KL controller ---

def test_adaptive_kl_controller():
    assert adaptive_kl_coef(0.1, kl=6.0, target=6.0, horizon=10000, n_steps=512) == pytest.approx(0.1)
    assert adaptive_kl_coef(0.1, kl=60.0, target=6.0, horizon=10000, n_steps=512) == pytest.approx(
        0.1 * (1 + 0.2 * 512 / 10000))
    assert adaptive_kl_coef(0.1, kl=0.0, target=6.0, horizon=10000, n_steps=512) == pytest.approx(
        0.1 * (1 - 0.2 * 512 / 10000))
    coef = 0.1
    for _ in range(1000):
        coef = adaptive_kl_coef(coef, kl=0.0, target=6.0, horizon=10000, n_steps=512)
    assert coef > 0
