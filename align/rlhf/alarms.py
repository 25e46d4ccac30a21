"""Warnings for the failure signs of RLHF-PPO, from the per-update metrics (docs/ppo_checklist.md I1; TRL #235).

Sustained negative KL means the sampling and the logprob paths disagree (a logits processor, padding, temperature)
or the policy games the KL term; an exploding ratio means updates far outside the trust region; a collapsing entropy
means the policy has stopped exploring. None of them stops the run; each is printed and logged.
"""

from __future__ import annotations

NEGATIVE_KL = -0.1  # per-sequence KL below this ...
NEGATIVE_KL_UPDATES = 5  # ... for this many updates in a row
MAX_RATIO = 2.0  # mean importance ratio over an update
MIN_ENTROPY = 0.05  # nats per token


def check(metrics: dict, negative_kl_streak: int) -> tuple[list[str], int]:
    """(warnings for this update, the updated count of consecutive negative-KL updates)."""
    warnings = []
    streak = negative_kl_streak + 1 if metrics["objective/kl"] < NEGATIVE_KL else 0
    if streak == NEGATIVE_KL_UPDATES:
        warnings.append(f"KL to the reference has been below {NEGATIVE_KL} for {streak} updates: sampling and "
                        f"logprobs disagree (processors, padding, temperature?) or the policy games the KL term")
    if metrics["policy/ratio"] > MAX_RATIO:
        warnings.append(f"mean policy ratio {metrics['policy/ratio']:.2f} > {MAX_RATIO}: updates leave the trust "
                        f"region (lower ppo.lr, or fewer ppo_epochs)")
    if metrics["policy/entropy"] < MIN_ENTROPY:
        warnings.append(f"policy entropy {metrics['policy/entropy']:.3f} nats/token: the policy has collapsed")
    return warnings, streak
