"""`python -m align.chat`: one-shot for scripts, and the REPL driven by scripted input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO, run_module

from data_prep.tiny_world.task import VOCABULARY

pytestmark = pytest.mark.slow
PROMPT = "words 3 start sun end any"


def test_one_shot_answers_through_the_template(tiny_sft_dir):
    result = run_module("align.chat", "+experiment=tiny", f"paths.root={tiny_sft_dir.parent.parent}",
                        f"chat.model={tiny_sft_dir / 'final'}", f"chat.prompt={PROMPT}", "chat.temperature=0")
    assert result.returncode == 0, result.stderr[-3000:]
    answer = result.stdout.strip().splitlines()[-1]
    assert answer and all(word in VOCABULARY for word in answer.split())  # a tiny-world answer, ended by its EOS


def test_repl_keeps_the_conversation_and_resets(tiny_sft_dir):
    script = f"{PROMPT}\nwords any start any end moon\n/reset\n{PROMPT}\n/exit\n"
    result = subprocess.run(
        [sys.executable, "-m", "align.chat", "+experiment=tiny", f"paths.root={tiny_sft_dir.parent.parent}",
         f"chat.model={tiny_sft_dir / 'final'}", "chat.temperature=0"],
        cwd=REPO, input=script, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    answers = [line.removeprefix("assistant> ") for line in lines if line.startswith("assistant>")]
    assert len(answers) == 3
    assert answers[0] == answers[2]  # after /reset the same first turn gets the same greedy answer
    shown = lines.index("  user: " + PROMPT)  # /reset shows the conversation it ends
    assert lines[shown : shown + 5] == ["  user: " + PROMPT, "  assistant: " + answers[0],
                                        "  user: words any start any end moon", "  assistant: " + answers[1],
                                        "-- a new conversation --"]


def test_chat_without_a_model_fails_clearly(tmp_path):
    result = run_module("align.chat", "+experiment=tiny", f"paths.root={tmp_path}", "chat.prompt=hi", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "no model at" in result.stderr


def test_a_long_conversation_loses_its_oldest_turns_not_the_session(tiny_sft_dir):
    """The tiny model has 128 positions: a conversation of 15 turns outgrows them by the fourth or fifth."""
    too_long = "words " * 200
    script = f"{PROMPT}\n" * 8 + f"{too_long}\n" + f"{PROMPT}\n" * 7 + "/exit\n"
    result = subprocess.run(
        [sys.executable, "-m", "align.chat", "+experiment=tiny", f"paths.root={tiny_sft_dir.parent.parent}",
         f"chat.model={tiny_sft_dir / 'final'}", "chat.temperature=0"],
        cwd=REPO, input=script, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert sum(line.startswith("assistant>") for line in result.stdout.splitlines()) == 15
    assert "the model no longer sees its first" in result.stdout
    assert "(that message does not fit the model's 128 positions" in result.stdout
    one_shot = run_module("align.chat", "+experiment=tiny", f"paths.root={tiny_sft_dir.parent.parent}",
                          f"chat.model={tiny_sft_dir / 'final'}", f"chat.prompt={PROMPT}", "chat.max_new_tokens=300")
    assert one_shot.returncode == 0, one_shot.stderr[-3000:]
    assert "(chat.max_new_tokens lowered to 64: the model has 128 positions)" in one_shot.stderr
