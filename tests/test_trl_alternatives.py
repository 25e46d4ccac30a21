"""RLOO, GRPO and DPO in PPO's place, end to end: one Hydra sweep over the three ablations through the pipeline on
the tiny run's SFT and RM, then `align.report` reading it; GRPO killed and resumed."""

from __future__ import annotations

import json

import pytest
from helpers import kill_after_checkpoint_then_resume, run_module, same_weights, tiny_config

pytestmark = pytest.mark.slow

ALGORITHMS = ["dpo", "grpo", "rloo"]


@pytest.fixture(scope="module")
def sweep(tiny_pipeline, tiny_data_root):
    """Each algorithm for two optimizer steps of 32 completions (DPO: pairs), the gold judge after each, then
    evaluated on 20 prompts."""
    result = run_module("align.pipeline", "-m", "+experiment=tiny", f"+ablation={','.join(ALGORITHMS)}",
                        f"paths.root={tiny_pipeline}", f"paths.data={tiny_data_root}", "ppo.total_episodes=64",
                        "ppo.gold_eval_every=1", "ppo.gold_eval_prompts=20", "eval.num_prompts=20", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return tiny_pipeline / "tiny"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_run_writes_what_ppo_writes(sweep, algorithm):
    from transformers import AutoModelForCausalLM

    run_dir = sweep / f"ppo-{algorithm}"
    assert f"algorithm: {algorithm}" in (run_dir / "config.resolved.yaml").read_text()
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")  # plain transformers, safetensors
    assert (run_dir / "final" / "model.safetensors").is_file() and model.config.eos_token_id is not None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["algorithm"] == algorithm and metrics["updates"] == 2 and metrics["episodes"] == 64
    for key in ("gold_score", "eos_rate", "response_tokens"):
        assert metrics[f"eval_sft_{key}"] >= 0 and metrics[f"eval_ppo_{key}"] >= 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "time/update_s" in row]
    assert [row["step"] for row in steps] == [1, 2] and [row["episodes"] for row in steps] == [32, 64]
    assert all(0 <= row["eval/gold_score"] <= 1 and row["time/update_s"] > 0 for row in steps)
    if algorithm == "dpo":
        assert all("dpo/loss" in row and "objective/kl" not in row for row in steps)
    else:  # the first rollout is sampled from the reference itself: its KL is 0 up to float error
        assert abs(steps[0]["objective/kl"]) < 1e-4 and all("objective/score" in row for row in steps)
        assert metrics["final_kl"] == steps[-1]["objective/kl"]
    evaluation = json.loads((sweep / f"eval-{algorithm}" / "eval.json").read_text())
    assert evaluation["reference"] == "sft" and 0 <= evaluation["models"]["ppo"]["gold_score"] <= 1


def test_report_has_a_row_per_algorithm_with_its_training_time(sweep, tmp_path):
    result = run_module("align.report", str(sweep / "sweeps" / "pipeline"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    per_run = report.split("## Per variant: mean")[0]
    for algorithm in ALGORITHMS:
        (line,) = [line for line in per_run.splitlines() if line.startswith(f"| {algorithm} |")]
        assert line.rstrip(" |").split("|")[-1].strip() != "-"  # PPO time (s), the last column


def test_interrupted_and_resumed_equals_uninterrupted(tiny_pipeline, tiny_data_root):
    """GRPO killed (SIGKILL) after its first checkpoint and run again: the same final weights (bitwise) and scores."""
    common = ["+experiment=tiny", "+ablation=grpo", f"paths.root={tiny_pipeline}", f"paths.data={tiny_data_root}",
              "ppo.total_episodes=320", "ppo.save_every=2", "eval.num_prompts=10"]
    straight = run_module("align.ppo", *common, "variant=grpo-straight")
    assert straight.returncode == 0, straight.stderr[-3000:]

    run_dir = tiny_pipeline / "tiny" / "ppo-grpo-resumed"
    resumed = kill_after_checkpoint_then_resume("align.ppo", *common, "variant=grpo-resumed",
                                                checkpoint=run_dir / "checkpoint-2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout

    assert same_weights(tiny_pipeline / "tiny" / "ppo-grpo-straight" / "final", run_dir / "final")

    def scores(path):
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        return [(row["step"], row["objective/score"]) for row in rows if "time/update_s" in row]

    assert scores(run_dir) == scores(tiny_pipeline / "tiny" / "ppo-grpo-straight")


@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_trl_samplers_never_draw_the_pad_or_the_start_of_turn(algorithm, tiny_pipeline, tiny_data_root, tmp_path):
    """The pad sampled inside a completion would count as a completion token in TRL's loss and be dropped from its
    forward passes; TRL's generation is told to suppress both tokens, as our own samplers do."""
    from align.core.tokens import never_sampled
    from align.modeling.models import load_causal_lm, load_tokenizer
    from align.trainers.alternatives import alternative_arguments, online_trainer

    cfg = tiny_config(f"+ablation={algorithm}", f"paths.root={tiny_pipeline}", f"paths.data={tiny_data_root}",
                      stage="ppo")
    tokenizer = load_tokenizer(cfg.model, path=cfg.ppo.policy_init)
    policy = load_causal_lm(cfg.model, tokenizer, cfg.ppo.policy_init, cfg.seed)
    reference = load_causal_lm(cfg.model, tokenizer, cfg.ppo.policy_init, cfg.seed)
    trainer = online_trainer(cfg, alternative_arguments(cfg, tmp_path, 1), policy, reference, tokenizer,
                             [{"prompt": [{"role": "user", "content": "words 3 start any end any"}]}] * 8, [])
    suppressed = set(trainer.generation_config.suppress_tokens)
    assert suppressed == set(never_sampled(tokenizer)) and tokenizer.pad_token_id in suppressed
    assert tokenizer.eos_token_id not in suppressed
