"""rm.empty_rejected: a share of the training pairs is trained again against an empty reply."""

from __future__ import annotations

import json

import pytest
from helpers import rm_on_a_slice

from align import rm as rm_stage


def pair(i: int) -> dict:
    return {"prompt": [{"role": "user", "content": f"question {i}"}],
            "chosen": [{"role": "assistant", "content": f"good {i}"}],
            "rejected": [{"role": "assistant", "content": f"bad {i}"}], "margin": float(i)}


def test_a_share_of_the_pairs_is_repeated_against_an_empty_reply():
    pairs = [pair(i) for i in range(20)]
    out = rm_stage.with_empty_rejected(pairs, 0.25, seed=0)
    assert out[:20] == [pair(i) for i in range(20)]  # every pair kept as it was
    twins = out[20:]
    assert len(twins) == 5
    originals = [int(t["prompt"][0]["content"].split()[1]) for t in twins]
    assert len(set(originals)) == 5
    for twin, i in zip(twins, originals):
        assert twin == {**pair(i), "rejected": [{"role": "assistant", "content": ""}]}
    assert rm_stage.with_empty_rejected(pairs, 0.25, seed=0) == out
    assert rm_stage.with_empty_rejected(pairs, 0.25, seed=1) != out  # the share is drawn, not the first pairs
    assert rm_stage.with_empty_rejected(pairs, 0.0, seed=0) == pairs


@pytest.mark.parametrize("kind", ["classifier", "implicit"])
def test_the_rm_trains_on_the_empty_replies_and_learns_to_rank_them_last(kind, tiny_data_root, tmp_path):
    """TRL's trainers keep the empty replies (none dropped), and a few steps on them teach the RM what the held-out
    good_vs_empty measures; the same steps without them do not."""
    results = {}
    for share in (0.0, 1.0):
        cfg = rm_on_a_slice(tiny_data_root, tmp_path, f"run_name=share{share:g}", "rm.max_steps=40", "rm.lr=3e-3",
                            "rm.batch_size=16", "rm.restarts=1", f"rm.empty_rejected={share}", f"rm.kind={kind}",
                            train=64)
        metrics = rm_stage.train(cfg)
        assert metrics["dropped_too_long"]["train"] == 0
        results[share] = json.loads((tmp_path / f"share{share:g}" / "rm" / "eval.json").read_text())["good_vs_empty"]
    assert results[1.0] >= 0.95
    assert results[1.0] - results[0.0] >= 0.2, results
