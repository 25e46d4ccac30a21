"""Stage 3 through the real entry point (`python -m align.ppo`) on the offline tiny world."""

from __future__ import annotations

import json

import pytest
from conftest import run_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rm_ready(tiny_rm_dir):
    """The runs root holding the tiny SFT and RM runs PPO starts from."""
    return tiny_rm_dir.parent.parent


def test_ppo_beats_sft_on_the_gold_judge(rm_ready, tiny_data_root):
    result = run_module("align.ppo", "+experiment=tiny", f"paths.root={rm_ready}", f"paths.data={tiny_data_root}")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = rm_ready / "tiny" / "ppo-baseline"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(f"gold on held-out prompts: SFT {metrics['eval_sft_gold_score']:.3f} -> PPO "
          f"{metrics['eval_ppo_gold_score']:.3f} at KL {metrics['final_kl']:.2f}")
    assert metrics["eval_ppo_gold_score"] > metrics["eval_sft_gold_score"]
    assert metrics["eval_ppo_eos_rate"] > 0.95
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["objective/kl"] < rows[-1]["objective/kl"]  # the policy moved away from the reference
    assert (run_dir / "final" / "model.safetensors").exists()


def test_ppo_ptx_runs(rm_ready, tiny_data_root):
    result = run_module("align.ppo", "+experiment=tiny", f"paths.root={rm_ready}", f"paths.data={tiny_data_root}",
                        "ppo.ptx_coef=1.0", "ppo.total_episodes=96", "variant=ptx", "eval.num_prompts=20")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (rm_ready / "tiny" / "ppo-ptx" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["ptx/loss"] > 0 for r in rows)
