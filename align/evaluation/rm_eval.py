"""How good is a reward model: accuracy, margins, calibration by margin bucket, length bias, gold agreement."""

from __future__ import annotations

from math import sqrt

import torch

from align.core.config import EvalConfig
from align.core.contracts import judged_prompt
from align.evaluation.judging import Judge
from align.evaluation.sampling import sample
from align.evaluation.scoring import reward_scores
from align.modeling.reward_model import score

MARGIN_BUCKETS = (0.0, 0.5, 1.0, 2.0, float("inf"))


def pair_scores(rm, tokenizer, pairs: list[dict], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The RM's scores of each pair's chosen and rejected conversation."""
    return (score(rm, tokenizer, [p["prompt"] + p["chosen"] for p in pairs], batch_size),
            score(rm, tokenizer, [p["prompt"] + p["rejected"] for p in pairs], batch_size))


def accuracy(rm, tokenizer, pairs: list[dict], batch_size: int) -> float:
    """The share of pairs whose chosen reply the RM scores above the rejected one."""
    chosen, rejected = pair_scores(rm, tokenizer, pairs, batch_size)
    return (chosen > rejected).float().mean().item()


def evaluate_pairs(rm, tokenizer, pairs: list[dict], judge: Judge | None, batch_size: int) -> dict:
    """Metrics over held-out preference pairs, and how often the RM prefers the chosen answer to an empty one; with a
    gold judge, agreement with it, overall and (where the judge reports its checks) on the pairs whose two responses
    differ in exactly one check, by check."""
    chosen, rejected = pair_scores(rm, tokenizer, pairs, batch_size)
    margin = chosen - rejected
    correct = (margin > 0).float()
    out = {"pairs": len(pairs), "accuracy": correct.mean().item(), "mean_margin": margin.mean().item()}

    # Calibration: a Bradley-Terry model says P(chosen wins) = sigmoid(margin); compare with the hit rate.
    buckets = {}
    for low, high in zip(MARGIN_BUCKETS, MARGIN_BUCKETS[1:]):
        in_bucket = (margin.abs() >= low) & (margin.abs() < high)
        if in_bucket.any():
            buckets[f"|margin| {low}-{high}"] = {
                "pairs": int(in_bucket.sum()),
                "accuracy": correct[in_bucket].mean().item(),
                "predicted": torch.sigmoid(margin[in_bucket].abs()).mean().item(),
            }
    out["by_margin"] = buckets

    # Length bias: how far "the longer answer wins" gets on the same labels, and how scores follow length.
    def reply_lengths(side: str) -> torch.Tensor:
        return torch.tensor([len(tokenizer(p[side][0]["content"])["input_ids"]) for p in pairs])

    len_c, len_r = reply_lengths("chosen"), reply_lengths("rejected")
    out["longer_wins_accuracy"] = ((len_c > len_r).float() + 0.5 * (len_c == len_r).float()).mean().item()
    lengths, scores = torch.cat([len_c, len_r]).float(), torch.cat([chosen, rejected])
    out["score_length_correlation"] = torch.corrcoef(torch.stack([scores, lengths]))[0, 1].item()

    # Does the RM prefer a real answer to an empty one (PPO drifts into text the RM never saw otherwise)?
    empty = score(rm, tokenizer, [p["prompt"] + [{"role": "assistant", "content": ""}] for p in pairs], batch_size)
    out["good_vs_empty"] = (chosen > empty).float().mean().item()

    if judge is not None:
        prompts = [judged_prompt(p["prompt"]) for p in pairs]
        gold_c = torch.tensor([judge.score(q, p["chosen"][0]["content"]) for q, p in zip(prompts, pairs)])
        gold_r = torch.tensor([judge.score(q, p["rejected"][0]["content"]) for q, p in zip(prompts, pairs)])
        decided = gold_c != gold_r
        rm_agrees = (margin > 0) == (gold_c > gold_r)
        out["gold_agreement"] = rm_agrees[decided].float().mean().item()
        out["gold_decided_pairs"] = int(decided.sum())
        # good_vs_empty counts every chosen reply, wrong ones too; this one only those the judge scores best (right)
        correct = gold_c == gold_c.max()
        out["correct_vs_empty"] = (chosen > empty)[correct].float().mean().item()
        if judge.details is not None:
            out["gold_agreement_by_check"] = agreement_by_check(judge, prompts, pairs, rm_agrees & decided, decided)
            out["checks_at_chance"] = checks_at_chance(out["gold_agreement_by_check"])
    return out


def own_samples_agreement(gold: torch.Tensor, scores: torch.Tensor) -> tuple[float | None, int]:
    """gold and RM scores of k responses to each prompt, (prompts, k). Over the pairs of responses to one prompt that
    the judge scores differently: the share the RM orders the same way (a tie counts half), and how many such pairs
    there are (None when there are none)."""
    agree, pairs = 0.0, 0
    for i in range(gold.shape[1]):
        for j in range(i + 1, gold.shape[1]):
            decided = gold[:, i] != gold[:, j]
            same_way = torch.sign(scores[:, i] - scores[:, j]) * torch.sign(gold[:, i] - gold[:, j])
            agree += ((same_way[decided] + 1) / 2).sum().item()
            pairs += int(decided.sum())
    return (agree / pairs if pairs else None), pairs


def policy_check(rm, policy, tokenizer, prompts: list[list[dict]], judge: Judge, samples: int, settings: EvalConfig,
                 seed: int) -> dict:
    """The RM against the judge on the answers PPO will start from: `samples` responses of `policy` to each prompt,
    sampled as the evaluation samples. Held-out pairs show only the mistakes their author put in the rejected
    replies; an RM that misses the policy's own mistakes agrees with the judge here far less, and PPO against it
    cannot learn to fix them (docs/ablations.md, "A task nobody tuned for")."""
    texts = [judged_prompt(p) for p in prompts]
    gold, scores = [], []
    for k in range(samples):
        completions = sample(policy, tokenizer, prompts, settings.max_new_tokens, settings.temperature,
                             settings.batch_size, seed + k)
        gold.append([float(judge.score(t, c.text, c.ended)) for t, c in zip(texts, completions)])
        scores.append(reward_scores(rm, completions, tokenizer.pad_token_id, settings.batch_size))
    gold = torch.tensor(gold).T
    agreement, pairs = own_samples_agreement(gold, torch.stack(scores).T)
    return {"policy_gold_agreement": agreement, "policy_decided_pairs": pairs, "policy_gold_score": gold.mean().item()}


def held_out_overstates(evaluation: dict) -> bool:
    """The RM agrees with the judge on the policy's own answers (policy_check, 50 decided pairs at least) by more than
    0.1 less than on the held-out pairs: they overstate how well it tells this policy's mistakes apart."""
    own = evaluation.get("policy_gold_agreement")
    return (own is not None and evaluation["policy_decided_pairs"] >= 50
            and own < evaluation["gold_agreement"] - 0.1)


def checks_at_chance(by_check: dict[str, dict]) -> list[str]:
    """The checks on whose one-check pairs the RM agrees with the judge no more often than a coin would, give or take
    two standard errors (below 0.5 + 2 sqrt(0.25 / n) of n pairs): PPO cannot learn these checks from this RM.
    Fewer than 10 pairs tell nothing either way."""
    return [check for check, row in by_check.items()
            if row["pairs"] >= 10 and row["agreement"] < 0.5 + 1 / sqrt(row["pairs"])]


def agreement_by_check(judge: Judge, prompts: list[str], pairs: list[dict], agrees: torch.Tensor,
                       decided: torch.Tensor) -> dict[str, dict]:
    """For each check, over the decided pairs whose responses differ in that check alone: the RM's agreement with
    the judge, and how many such pairs there are (a check the RM never learned shows as agreement near 0.5)."""
    by_check: dict[str, list[bool]] = {}
    for i, (prompt, pair) in enumerate(zip(prompts, pairs)):
        chosen = judge.details(prompt, pair["chosen"][0]["content"])
        rejected = judge.details(prompt, pair["rejected"][0]["content"])
        differ = [check for check in chosen if chosen[check] != rejected.get(check)]
        if len(differ) == 1 and decided[i]:
            by_check.setdefault(differ[0], []).append(bool(agrees[i]))
    return {check: {"agreement": sum(oks) / len(oks), "pairs": len(oks)} for check, oks in sorted(by_check.items())}
