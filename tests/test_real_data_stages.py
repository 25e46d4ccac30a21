"""The SFT and reward-model stages train on converted real data (conf/data/slices.yaml) with the tiny model.

model=tiny takes its tokenizer from the data recipe (data.tokenizer): for the slices, a byte-level BPE trained on
the SFT mixture, so real English is not spelt out byte by byte as the tiny world's 512-token BPE would.
"""

from __future__ import annotations

import json

import pytest
from helpers import run_module

pytestmark = pytest.mark.slow


def test_sft_then_rm_train_on_the_real_slices(tmp_path):
    common = ("+experiment=tiny", "data=slices", f"paths.root={tmp_path / 'runs'}", f"paths.data={tmp_path / 'data'}")
    sft = run_module("align.sft", *common, "sft.max_steps=12", "sft.logging_steps=4", "sft.eval_steps=12",
                     "sft.save_steps=12")
    assert sft.returncode == 0, sft.stderr[-3000:]
    data = tmp_path / "data" / "slices"
    mixture = json.loads((data / "sft_train" / "manifest.json").read_text())
    assert set(mixture["counts"]["in"]) == {"dolly", "lima", "alpaca", "self_instruct"}
    assert mixture["counts"]["in"]["lima"] == 490  # weight 0.5 of LIMA's 979 training conversations, rounded
    metrics_log = tmp_path / "runs" / "tiny" / "sft" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics_log.read_text().splitlines()]
    losses = [row["sft/loss"] for row in rows if "sft/loss" in row]
    assert len(losses) == 3 and losses[-1] < losses[0]

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "runs" / "tiny" / "sft" / "final")
    assert len(tokenizer) == 2048  # the mixture's BPE (chat tokens included), saved with the model
    sample = json.loads((data / "lima" / "sft.train.jsonl").read_text().splitlines()[0])["messages"][1]["content"]
    assert len(tokenizer(sample)["input_ids"]) < 0.6 * len(sample)  # words, not bytes

    rm = run_module("align.rm", *common, "rm.max_steps=8", "rm.logging_steps=4", "rm.eval_steps=8", "rm.save_steps=8")
    assert rm.returncode == 0, rm.stderr[-3000:]
    evaluation = json.loads((tmp_path / "runs" / "tiny" / "rm" / "eval.json").read_text())
    assert evaluation["pairs"] > 0  # held-out HH-RLHF and Stack Exchange pairs that fit rm.max_length
    metrics = json.loads((tmp_path / "runs" / "tiny" / "rm" / "metrics.json").read_text())
    assert metrics["normalization_samples"] > 0
    assert set(metrics["dropped_records"]) == {str(data / "prefs_train" / "prefs.train.jsonl"),
                                               str(data / "prefs_eval" / "prefs.eval.jsonl")}
