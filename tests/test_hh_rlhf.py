"""HH-RLHF transcripts into preference pairs, on the real slice in shared/data."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import SHARED_DATA

from data_prep import hh_rlhf

SLICE = SHARED_DATA / "hh_rlhf_harmless_base_test" / "test_first1600.jsonl.gz"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("hh")
    counts = hh_rlhf.prepare(SimpleNamespace(source=str(SLICE), eval_size=200), None, out)
    return out, counts


def test_counts_match_the_hand_checked_slice(prepared):
    _, counts = prepared
    # Checked by reading the records: lines 87, 517, 926, 1104 end on an empty chosen reply; 668, 764, 1320 have two
    # user or two assistant turns in a row in the prompt; 1255's prompts differ between chosen and rejected;
    # 35 records (30, 106, 141, ..., 1595) have a reply that goes on with "Human: ..." or "Assistant: ...".
    assert counts["read"] == 1600
    assert counts["dropped_empty_or_missing_chosen_reply"] == 4
    assert counts["dropped_bad_prompt_turns"] == 3
    assert counts["dropped_prompt_mismatch"] == 1
    assert counts["dropped_speaker_marker_in_text"] == 35
    assert counts["prefs.train"] + counts["prefs.eval"] == 1557 and counts["prefs.eval"] == 200


def test_no_transcript_markers_leak_and_turns_alternate(prepared):
    out, _ = prepared
    pairs = [json.loads(line) for name in ("prefs.train", "prefs.eval")
             for line in (out / f"{name}.jsonl").read_text().splitlines()]
    multi_turn = 0
    for pair in pairs:
        for message in pair["prompt"] + pair["chosen"] + pair["rejected"]:
            assert "Human:" not in message["content"] and "Assistant:" not in message["content"]
        roles = [m["role"] for m in pair["prompt"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        multi_turn += len(roles) > 1
    assert multi_turn > 500  # multi-turn structure is kept, not flattened


def test_parse_transcript_by_hand():
    text = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: See you"
    assert hh_rlhf.parse_transcript(text) == [
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you"}]
    assert hh_rlhf.to_pair({"chosen": text, "rejected": text.replace("Bye", "Later")}) == (None, "prompt_mismatch")
    assert hh_rlhf.to_pair({"chosen": 3, "rejected": text}) == (None, "not_a_transcript")
