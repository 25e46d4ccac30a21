"""The math of RLHF-PPO as small pure functions on tensors. Shapes: B sequences, T response tokens.

Every function takes a `mask` (B, T) that is 1 on real response tokens (the EOS included) and 0 on padding after
it; padded entries never reach a mean, a variance or a loss, whatever garbage they hold.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.bool(), x, 0.0).sum() / mask.sum()  # where, not x * mask: inf * 0 would be nan


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Biased variance over the mask (as TF's moments and the reference implementations compute it)."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the mask; shift_mean=False adds the mean back (reward whitening). Pads become 0."""
    x = torch.where(mask.bool(), x, 0.0)  # pads may hold anything, even inf; keep them out of every statistic
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def truncate_after_eos(responses: torch.Tensor, eos_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each response up to and including its first EOS and pad the rest; returns (responses, mask)."""
    is_eos = responses == eos_id
    after_first_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # strictly after the first EOS
    return responses.masked_fill(after_first_eos, pad_id), (~after_first_eos).long()


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last real token of each response: its EOS, or its last token when it has none."""
    return mask.sum(dim=1) - 1


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Estimate of KL(pi || pi_ref) at each sampled token (Schulman's k1 or k3), with log r = ref - logp.

    k1 = -log r is unbiased and can be negative per token; k3 = (r - 1) - log r is unbiased and never negative.
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}: use k1 or k3")


def apply_missing_eos_penalty(scores: torch.Tensor, has_eos: torch.Tensor, mode: str, penalty: float) -> torch.Tensor:
    """The EOS trick: a response that never ended gets `penalty` instead of its score ("replace", as in N+ with
    -1) or its score minus `penalty` ("subtract", as in TRL); "none" leaves scores alone."""
    if mode == "none":
        return scores
    if mode == "replace":
        return torch.where(has_eos, scores, torch.full_like(scores, penalty))
    if mode == "subtract":
        return torch.where(has_eos, scores, scores - penalty)
    raise ValueError(f"unknown missing-EOS mode {mode!r}: use replace, subtract or none")


def shape_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: -kl_coef * kl on every real token, plus the score once, on the last real token (the EOS).

    Putting the score on the EOS (not one past it, as TRL did) keeps every reward inside the mask.
    """
    rewards = -kl_coef * kl * mask
    rows = torch.arange(scores.shape[0], device=scores.device)
    rewards[rows, last_index(mask)] += scores
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation backwards over the response; the value after the last token is 0.

    Returns (advantages, returns) with returns = advantages + values, both 0 on pads.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        # A pad position holds nothing and passes nothing back: it only follows the episode's end.
        running = running * mask[:, t]
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange: float) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate: mean over the mask of max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps))."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    stats = {
        "clipfrac": masked_mean((clipped > unclipped).float(), mask).detach(),
        "approx_kl": (0.5 * masked_mean(log_ratio**2, mask)).detach(),  # k2 between old and new policy
        "ratio": masked_mean(ratio, mask).detach(),
    }
    return loss, stats


def value_loss(values, old_values, returns, mask, cliprange_value: float) -> tuple[torch.Tensor, dict]:
    """Clipped value loss: 0.5 * mean over the mask of max((V - R)^2, (clip(V, V_old +- eps) - R)^2)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_error, clipped_error = (values - returns) ** 2, (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    return loss, {"vf_clipfrac": masked_mean((clipped_error > unclipped_error).float(), mask).detach()}


def adaptive_kl_coef(kl_coef: float, kl: float, target: float, horizon: int, n_steps: int) -> float:
    """Ziegler et al.'s controller: move the coefficient towards the KL target, at most 20% per horizon."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_steps / horizon)
