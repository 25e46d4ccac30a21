"""How good is a reward model: accuracy, margins, calibration by margin bucket, length bias, gold agreement."""

from __future__ import annotations

from types import ModuleType

import torch

from align.modeling.reward_model import score

MARGIN_BUCKETS = (0.0, 0.5, 1.0, 2.0, float("inf"))


def evaluate_pairs(rm, tokenizer, pairs: list[dict], judge: ModuleType | None, batch_size: int) -> dict:
    """Metrics over held-out preference pairs; with a gold judge (align.evaluation.judging.load_judge), agreement
    with it as well."""
    chosen = score(rm, tokenizer, [p["prompt"] + p["chosen"] for p in pairs], batch_size)
    rejected = score(rm, tokenizer, [p["prompt"] + p["rejected"] for p in pairs], batch_size)
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

    if judge is not None:
        gold_c = torch.tensor([judge.gold_score(p["prompt"][-1]["content"], p["chosen"][0]["content"]) for p in pairs])
        gold_r = torch.tensor([judge.gold_score(p["prompt"][-1]["content"], p["rejected"][0]["content"])
                               for p in pairs])
        decided = gold_c != gold_r
        rm_agrees = (margin > 0) == (gold_c > gold_r)
        out["gold_agreement"] = rm_agrees[decided].float().mean().item()
        out["gold_decided_pairs"] = int(decided.sum())
    return out
