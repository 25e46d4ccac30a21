"""Bring your own task (docs/own_task.md): a judge and contract files in a directory outside the package, run with
`data=files data.dir=... data.judge=module:function` and the tiny experiment's settings, nothing else."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import run_module

JUDGE = '''
def score(prompt, response, ended=True):
    """1 when the response is exactly the word the prompt asks for (`say <word>`), and it ended."""
    return float(ended and response.strip() == prompt.split()[-1])


def score_details(prompt, response):
    return {"word": response.strip() == prompt.split()[-1]}
'''
WORDS = ["sun", "moon", "tree", "rock", "fish", "bird", "rain", "snow", "leaf", "wind", "fire", "lake"]
FILES = ("sft.train", "sft.eval", "prefs.train", "prefs.eval", "prefs.audit", "prompts.train", "prompts.eval")


def write_task(user_dir: Path) -> Path:
    """The user's own directory: their judge module, and their contract files (a trivial task: say the word asked for)
    in user_dir/data; returns that data directory."""
    user_dir.mkdir()
    (user_dir / "mytask_judge.py").write_text(JUDGE)
    rng = random.Random(0)

    def prompt(word: str) -> list[dict]:
        return [{"role": "user", "content": f"say {word}"}]

    def other(word: str) -> str:
        return rng.choice([w for w in WORDS if w != word])

    records = {
        "sft": lambda w: {"messages": [*prompt(w), {"role": "assistant", "content": w}]},
        "prefs": lambda w: {"prompt": prompt(w), "chosen": [{"role": "assistant", "content": w}],
                            "rejected": [{"role": "assistant", "content": other(w)}]},
        "prompts": lambda w: {"prompt": prompt(w)},
    }
    data_dir = user_dir / "data"
    data_dir.mkdir()
    for name in FILES:
        n = 128 if name.endswith("train") else 32
        with open(data_dir / f"{name}.jsonl", "w") as f:
            for _ in range(n):
                f.write(json.dumps(records[name.split(".")[0]](rng.choice(WORDS))) + "\n")
    return data_dir


def own_task_overrides(data_dir: Path, runs: Path, judge: str) -> list[str]:
    return ["+experiment=tiny", "data=files", f"data.dir={data_dir}", f"data.judge={judge}", f"paths.root={runs}"]


def test_another_tasks_judge_stops_sft_before_training_naming_data_judge(tmp_path):
    """The tiny world's judge left in place with other data: refused at the start, before a model exists."""
    data_dir = write_task(tmp_path / "user")
    runs = tmp_path / "runs"
    result = run_module("align.sft", *own_task_overrides(data_dir, runs, "tiny_world.judge"), timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "data.judge='tiny_world.judge' fails on prompt 1 of data.prompts_eval" in result.stderr
    assert "data.judge=null" in result.stderr
    assert not list(runs.rglob("final")) and not list(runs.rglob("checkpoint-*"))


def test_ones_own_files_are_used_as_they_are_and_a_missing_one_is_named_with_its_key(tmp_path):
    from align.core.config import compose, load
    from align.core.errors import UserError
    from data_prep.prepare import ensure_prepared

    with pytest.raises(UserError, match="Missing mandatory value: data.dir"):  # the one thing data=files needs
        load(compose(["+experiment=tiny", "data=files"], stage="sft"))
    data_dir = write_task(tmp_path / "user")
    data = load(compose(own_task_overrides(data_dir, tmp_path / "runs", "mytask_judge:score"), stage="sft")).data
    assert data.world is None and data.ptx_train is None
    ensure_prepared(data, [data.sft_train, data.prefs_train, data.prompts_eval, data.ptx_train])
    (data_dir / "sft.eval.jsonl").unlink()
    with pytest.raises(UserError, match=f"data.sft_eval: {data_dir}/sft.eval.jsonl does not exist, and no source"):
        ensure_prepared(data, [data.sft_train, data.sft_eval])
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(f"{name}.jsonl" for name in FILES if name != "sft.eval")


@pytest.mark.slow
def test_own_task_runs_the_pipeline_judged_by_the_users_judge_and_builds_nothing(tmp_path):
    user_dir = tmp_path / "user"
    data_dir = write_task(user_dir)
    tokenizer = run_module("data_prep", "--tokenizer", str(data_dir), "--vocab-size", "300", timeout=300)
    assert tokenizer.returncode == 0, tokenizer.stderr[-3000:]
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))
    runs = tmp_path / "runs"
    result = run_module(
        "align.pipeline", *own_task_overrides(data_dir, runs, "mytask_judge:score"),
        "sft.max_steps=4", "sft.eval_steps=1000", "sft.save_steps=1000",
        "rm.max_steps=4", "rm.eval_steps=1000", "rm.save_steps=1000",
        "ppo.total_episodes=64", "ppo.gold_eval_every=1", "ppo.gold_eval_prompts=8", "eval.num_prompts=16",
        env={"PYTHONPATH": str(user_dir)}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no gold judge" not in result.stdout

    evaluation = json.loads((runs / "tiny" / "eval-baseline" / "eval.json").read_text())
    for row in evaluation["models"].values():
        assert 0.0 <= row["gold_score"] <= 1.0 and set(row["gold_checks"]) == {"word"}  # score_details' checks
    # every gold number is the user's judge's verdict on the response it scored
    judge = {}
    exec(compile(JUDGE, "mytask_judge.py", "exec"), judge)
    for line in (runs / "tiny" / "eval-baseline" / "responses.jsonl").read_text().splitlines():
        record = json.loads(line)
        for response in record["responses"].values():
            assert response["gold"] == judge["score"](record["prompt"][-1]["content"], response["text"],
                                                      response["ended"])
    ppo_metrics = json.loads((runs / "tiny" / "ppo-baseline" / "metrics.json").read_text())
    assert "eval_ppo_gold_score" in ppo_metrics and "eval_sft_gold_score" in ppo_metrics
    sft_metrics = json.loads((runs / "tiny" / "sft" / "metrics.json").read_text())
    assert "eval_gold_score" in sft_metrics
    # nothing built in the user's directory, and no tiny world anywhere
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before
    assert not list(tmp_path.rglob("tiny_world*"))
