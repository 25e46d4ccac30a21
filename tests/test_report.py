"""align.report's pure parts: a run's row, the mean ± std over seeds, the training curve, the Markdown tables."""

from __future__ import annotations

import pytest

from align.report import aggregate, markdown, run_row, training_curve, variant_curves
from align.runtime.runs import update_rows


def eval_results(seed: int, gold: float, kl: float) -> dict:
    sft = {"gold_score": 0.6, "rm_score": 0.0, "kl": 0.0, "response_tokens": 6.0, "eos_rate": 1.0,
           "gold_win_rate": 0.5, "rm_win_rate": 0.5}
    return {"seed": seed, "reference": "sft",
            "models": {"sft": sft, "ppo": {**sft, "gold_score": gold, "kl": kl, "rm_score": 0.4, "gold_win_rate": 0.7}}}


UPDATES = [{"step": 1, "episodes": 32, "objective/kl": 0.0, "objective/score": -0.1, "time/rollout_s": 1.0,
            "time/score_s": 0.5, "time/update_s": 2.0},
           {"step": 2, "episodes": 64, "objective/kl": 0.5, "objective/score": 0.2, "time/rollout_s": 1.0,
            "time/score_s": 0.5, "time/update_s": 2.0, "time/gold_eval_s": 0.25, "eval/gold_score": 0.7},
           {"step": 2, "ppo/final/episodes": 64}]


def test_run_row_takes_the_policy_numbers_and_sums_the_update_times():
    row = run_row(eval_results(1, 0.75, 2.0), "tiny", "kl_010", update_rows(UPDATES))
    assert row["run"] == "tiny" and row["variant"] == "kl_010" and row["seed"] == 1
    assert row["gold_score"] == 0.75 and row["kl"] == 2.0 and row["rm_score"] == 0.4 and row["gold_win_rate"] == 0.7
    assert row["reference_gold_score"] == 0.6 and row["reference_rm_score"] == 0.0  # SFT: the frontier's origin
    assert row["ppo_seconds"] == pytest.approx(7.25)
    assert "ppo_seconds" not in run_row(eval_results(1, 0.75, 2.0), "tiny", "kl_010", [])


def test_aggregate_is_mean_and_sample_std_per_variant():
    rows = [run_row(eval_results(s, g, k), "tiny", v, []) for s, g, k, v in
            [(0, 0.7, 1.0, "a"), (1, 0.8, 3.0, "a"), (2, 0.9, 2.0, "a"), (0, 0.5, 9.0, "b")]]
    summary = aggregate(rows)
    assert list(summary) == ["a", "b"]
    m, s, n = summary["a"]["gold_score"]
    assert (m, s, n) == (pytest.approx(0.8), pytest.approx(0.1), 3)
    assert summary["a"]["kl"][:2] == (pytest.approx(2.0), pytest.approx(1.0))
    assert summary["b"]["gold_score"] == (0.5, None, 1)  # one seed: no spread


def test_training_curve_keeps_the_judged_updates_or_all_of_them():
    """A judged update's point carries the mean rollout KL and RM score of the updates since the previous one."""
    judged = training_curve(update_rows(UPDATES))
    assert judged == {"episodes": [64], "kl": [0.25], "rm_score": [pytest.approx(0.05)], "gold_score": [0.7]}
    unjudged = training_curve(update_rows([{k: v for k, v in u.items() if k != "eval/gold_score"} for u in UPDATES]))
    assert unjudged == {"episodes": [32, 64], "kl": [0.0, 0.5], "rm_score": [-0.1, 0.2]}


def test_markdown_has_one_row_per_run_and_one_per_variant():
    rows = [run_row(eval_results(s, g, 1.0), "tiny", v, update_rows(UPDATES))
            for s, g, v in [(0, 0.7, "a"), (1, 0.8, "a"), (0, 0.5, "b")]]
    text = markdown(rows, aggregate(rows))
    per_run, per_variant = text.split("## Per variant: mean")
    assert "| a | 0 | tiny | 0.700 | +0.400 | 1.00 |" in per_run and "| b | 0 | tiny | 0.500 |" in per_run
    assert "| a | 2 | 0.750 ± 0.071 | +0.400 ± 0.000 |" in per_variant
    assert "| b | 1 | 0.500 | +0.400 |" in per_variant


def test_a_run_without_rollouts_has_its_time_and_no_curve():
    """DPO in PPO's place: its rows have a wall time and the gold judge, no RM score or KL of samples."""
    steps = [{"step": 1, "episodes": 32, "time/update_s": 1.5, "dpo/loss": 0.69},
             {"step": 2, "episodes": 64, "time/update_s": 1.5, "time/gold_eval_s": 0.5, "eval/gold_score": 0.6},
             {"step": 2, "ppo/final/episodes": 64}]
    assert run_row(eval_results(0, 0.6, 1.0), "tiny", "dpo", update_rows(steps))["ppo_seconds"] == pytest.approx(3.5)
    assert training_curve(update_rows(steps)) == {}


def test_variant_curves_average_seeds_point_by_point_up_to_the_shortest_run():
    curves = {"r/a/seed0": {"variant": "a", "episodes": [5, 10, 15], "kl": [1.0, 2.0, 3.0], "rm_score": [0.0, 0.2, 0.4],
                            "gold_score": [0.5, 0.6, 0.7]},
              "r/a/seed1": {"variant": "a", "episodes": [5, 10], "kl": [3.0, 4.0], "rm_score": [0.2, 0.4],
                            "gold_score": [0.7, 0.8]},
              "r/b/seed0": {"variant": "b", "episodes": [5], "kl": [9.0], "rm_score": [1.0]}}
    averaged = variant_curves(curves)
    assert averaged["a"] == {"episodes": [5, 10], "kl": [2.0, 3.0], "rm_score": pytest.approx([0.1, 0.3]),
                             "gold_score": pytest.approx([0.6, 0.7]), "seeds": 2}
    assert averaged["b"] == {"episodes": [5], "kl": [9.0], "rm_score": [1.0], "seeds": 1}  # no gold logged: none shown
