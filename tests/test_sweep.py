"""A CI-sized sweep through Hydra multirun on the tiny run's SFT and RM, and `align.report` reading it."""

from __future__ import annotations

import json
import re

import pytest
from helpers import run_module

pytestmark = pytest.mark.slow

VARIANTS = ["kl_000", "kl_010"]


@pytest.fixture(scope="module")
def sweep(tiny_pipeline, tiny_data_root):
    """Two KL ablations, picked by Hydra's glob over the ablation group, each PPO-trained for two updates with the
    gold judge logged after each, then evaluated on 20 prompts; SFT and RM are the tiny pipeline's."""
    result = run_module("align.pipeline", "-m", "+experiment=tiny",
                        "+ablation=glob(kl_*,exclude=[kl_001,kl_002,kl_005])", f"paths.root={tiny_pipeline}",
                        f"paths.data={tiny_data_root}", "ppo.total_episodes=64",
                        "ppo.gold_eval_every=1", "ppo.gold_eval_prompts=20", "eval.num_prompts=20", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return tiny_pipeline / "tiny", result.stdout + result.stderr


def test_every_job_reuses_sft_and_rm_and_has_its_own_directories(sweep):
    run, log = sweep
    assert log.count("[pipeline] sft: finished output") == log.count("[pipeline] rm: finished output") == 2
    for variant in VARIANTS:
        assert (run / "sweeps" / "pipeline" / f"{variant}-seed0" / ".hydra" / "overrides.yaml").is_file()
        config = (run / f"ppo-{variant}" / "config.resolved.yaml").read_text()
        assert f"variant: {variant}" in config
        updates = [json.loads(line) for line in (run / f"ppo-{variant}" / "metrics.jsonl").read_text().splitlines()]
        gold = [u["eval/gold_score"] for u in updates if "objective/kl" in u]
        assert len(gold) == 2 and all(0 <= g <= 1 for g in gold)


def test_report_tables_hold_the_eval_numbers_and_the_plots_are_drawn(sweep):
    import matplotlib.image

    run, _ = sweep
    result = run_module("align.report", str(run / "sweeps" / "pipeline"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = run / "sweeps" / "pipeline" / "report"
    per_run, per_variant = (out / "report.md").read_text().split("## Per variant: mean")
    runs = [line for line in per_run.splitlines() if re.match(r"\| kl_\d+ \|", line)]
    assert [line.split(" | ")[0].strip("| ") for line in runs] == VARIANTS  # one row per job, nothing else
    for line in runs:
        cells = [c.strip() for c in line.strip("|").split("|")]
        policy = json.loads((run / f"eval-{cells[0]}" / "eval.json").read_text())["models"]["ppo"]
        assert cells[1:3] == ["0", "tiny"]
        assert cells[3:11] == [f"{policy['gold_score']:.3f}", f"{policy['greedy_gold_score']:.3f}",
                               f"{policy['rm_score']:+.3f}", f"{policy['kl']:.2f}",
                               f"{policy['response_tokens']:.1f}", f"{policy['eos_rate']:.2f}",
                               f"{policy['gold_win_rate']:.3f}", f"{policy['rm_win_rate']:.3f}"]
        assert float(cells[11]) > 0  # PPO time
        assert f"| {cells[0]} | 1 | {cells[3]} |" in per_variant  # one seed: the mean is the value, no spread
    for plot in ("frontier.png", "overoptimization.png"):
        height, width, _ = matplotlib.image.imread(out / plot).shape
        assert height > 300 and width > 500


def test_gold_judge_along_training_leaves_the_run_unchanged(sweep, tiny_data_root):
    """The same PPO run as the sweep's kl_010 job, without the gold judge after each update: the same updates."""
    run, _ = sweep
    result = run_module("align.ppo", "+experiment=tiny", "+ablation=kl_010", "variant=kl_010_unjudged",
                        f"paths.root={run.parent}", f"paths.data={tiny_data_root}", "ppo.total_episodes=64",
                        "ppo.gold_eval_every=0", "eval.num_prompts=20")
    assert result.returncode == 0, result.stderr[-3000:]

    def trajectory(variant: str) -> list[dict]:
        rows = [json.loads(line) for line in (run / f"ppo-{variant}" / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if not k.startswith(("time/", "eval/"))}
                for row in rows if "objective/kl" in row]

    judged, unjudged = trajectory("kl_010"), trajectory("kl_010_unjudged")
    assert len(judged) == 2 and judged == unjudged
