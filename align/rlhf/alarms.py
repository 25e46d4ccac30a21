"""Warnings for the failure signs of RLHF-PPO, from the per-update metrics (docs/ppo_checklist.md I1; TRL #235).

Sustained negative KL means the sampling and the logprob paths disagree (a logits processor, padding, temperature)
or the policy games the KL term; an exploding ratio means updates far outside the trust region; a collapsing entropy
means the policy has stopped exploring. None of them stops the run; each is printed and logged. The entropy warning is
said once per fall below its floor: on a task with one right answer per prompt the trained policy stays there, and a
warning every update would bury the log.
"""

from __future__ import annotations

from dataclasses import dataclass

NEGATIVE_KL = -0.1  # per-sequence KL below this ...
NEGATIVE_KL_UPDATES = 5  # ... for this many updates in a row
MAX_RATIO = 2.0  # mean importance ratio over an update
MIN_ENTROPY = 0.05  # nats per token


@dataclass(frozen=True)
class AlarmState:
    negative_kl_streak: int = 0  # consecutive updates with the KL below NEGATIVE_KL
    low_entropy: bool = False  # the last update's entropy was below MIN_ENTROPY


def check(metrics: dict, state: AlarmState) -> tuple[list[str], AlarmState]:
    """(warnings for this update, the state the next update's check starts from)."""
    warnings = []
    streak = state.negative_kl_streak + 1 if metrics["objective/kl"] < NEGATIVE_KL else 0
    if streak == NEGATIVE_KL_UPDATES:
        warnings.append(f"KL to the reference has been below {NEGATIVE_KL} for {streak} updates: sampling and "
                        f"logprobs disagree (processors, padding, temperature?) or the policy games the KL term")
    if metrics["policy/ratio"] > MAX_RATIO:
        warnings.append(f"mean policy ratio {metrics['policy/ratio']:.2f} > {MAX_RATIO}: updates leave the trust "
                        f"region (lower ppo.lr, or fewer ppo_epochs)")
    low_entropy = metrics["policy/entropy"] < MIN_ENTROPY
    if low_entropy and not state.low_entropy:
        warnings.append(f"policy entropy {metrics['policy/entropy']:.3f} nats/token, below {MIN_ENTROPY}: its samples "
                        f"barely vary any more (said once while it stays there). Expected where each prompt has one "
                        f"right answer; elsewhere the policy has collapsed onto a few replies: read its samples")
    return warnings, AlarmState(streak, low_entropy)
