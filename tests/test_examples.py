"""examples/sort_task: the task docs/ablations.md runs as one nobody tuned for. Its files must stay valid contract
files, its judge must score them as the pairs say, and its options must change only what they name."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO

from align.core.contracts import judged_prompt
from align.core.records import read_records

EXAMPLE = REPO / "examples" / "sort_task"
KINDS = {"sft": "sft", "prefs": "pair", "prompts": "prompt"}


def make(out, *args: str) -> dict[str, bytes]:
    subprocess.run([sys.executable, EXAMPLE / "make_data.py", out, *args], check=True, capture_output=True)
    return {path.name: path.read_bytes() for path in sorted(out.glob("*.jsonl"))}


def test_sort_task_files_are_contract_files_its_judge_scores_as_the_pairs_say(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from sort_judge import score, score_details

    files = make(tmp_path / "random")
    assert len(files) == 7
    for name in files:
        records, report = read_records(tmp_path / "random" / name, KINDS[name.split(".")[0]], "error")
        assert records and not report.dropped
        if name.startswith("prefs"):
            for pair in records:
                prompt = judged_prompt(pair["prompt"])
                assert score(prompt, pair["chosen"][0]["content"]) == 1.0
                assert score(prompt, pair["rejected"][0]["content"]) < 1.0
    assert score("sort c a b", "a b c", ended=False) == 0.0
    assert score("sort c a b", "a c c") == 2 / 3 and score("sort c a b", "a b c d") == 3 / 4
    assert score_details("sort c a b", "a c c") == {"length": True, "first": True, "last": True, "middle": False}


def test_sort_task_options_change_only_the_files_they_name(tmp_path):
    full, fewer, model_like = (make(tmp_path / "a"), make(tmp_path / "b", "--demos", "2000"),
                               make(tmp_path / "c", "--demos", "2000", "--mistakes", "model"))
    assert fewer["sft.train.jsonl"] == b"".join(full["sft.train.jsonl"].splitlines(keepends=True)[:2000])
    assert {n for n in full if full[n] != fewer[n]} == {"sft.train.jsonl"}
    assert {n for n in fewer if fewer[n] != model_like[n]} == {"prefs.train.jsonl", "prefs.eval.jsonl",
                                                               "prefs.audit.jsonl"}


def test_policy_pairs_take_the_best_answer_against_the_worst(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from policy_pairs import best_against_worst

    assert best_against_worst([0.5, 1.0, 0.0, 1.0]) == (1, 2)
    assert best_against_worst([0.2, 0.2]) is None
    assert best_against_worst([0.7]) is None and best_against_worst([]) is None
