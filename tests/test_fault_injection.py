"""A few trials of benchmarks/fault_injection.py: SIGKILL each stage during training and while a checkpoint is
written, resume, and get the weights and metrics of a run never interrupted (20 trials a stage: run the benchmark)."""

from __future__ import annotations

import shutil

import pytest
from helpers import world_dir

from benchmarks.fault_injection import run_trials

pytestmark = pytest.mark.slow


def test_killed_and_resumed_runs_equal_uninterrupted_ones(tmp_path, tiny_data_root):
    shutil.copytree(world_dir(tiny_data_root).parent, tmp_path / "data" / world_dir(tiny_data_root).parent.name)
    results = run_trials(tmp_path, ["sft", "rm", "ppo"], trials=2, seed=1)
    for stage, trials in results.items():
        assert [t["during"] for t in trials] == ["training", "checkpoint"]
        for t in trials:
            assert t["corrupt"] == 0, (stage, t)
            assert t["resumed_ok"] and t["weights"] and t["metrics"], (stage, t)
