"""HH-RLHF transcripts into preference pairs, on the real data slice ($ALIGN_SHARED_DATA, docs/data.md)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from helpers import SHARED_DATA

from data_prep import hh_rlhf
from data_prep.convert import Bad, build

SLICE = SHARED_DATA / "hh_rlhf_harmless_base_test" / "test_first1600.jsonl.gz"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("hh")
    source = SimpleNamespace(options={}, source=str(SLICE), split="train", eval_size=200)
    return out, build(hh_rlhf, "hh_rlhf", source, False, out, {})["counts"]


def test_counts_match_the_hand_checked_slice(prepared):
    _, counts = prepared
    # Checked independently of this module (python: split each transcript at its last "\n\nAssistant:", compare the
    # prefixes, then look for markers, speaker order, empty turns, in that order): line 1255's prefixes differ because
    # one side has two assistant turns in a row (a broken transcript: role_order, not another prompt); 36 records
    # (30, 106, 141, 147, 198, ...) have a turn that goes on with "Human:" or "Assistant:" (line 30's is in the
    # prompt); lines 764 and 1320 have two user or two assistant turns in a row; lines 87, 517, 926 and 1104 end on an
    # empty chosen reply. 1600 - 1 - 36 - 2 - 4 = 1557 pairs.
    assert counts["in"] == 1600
    assert counts["dropped"] == {"speaker_marker_in_text": 36, "role_order": 3, "empty_content": 4}
    assert counts["out"]["prefs.train.jsonl"] + counts["out"]["prefs.eval.jsonl"] == 1557
    assert counts["out"]["prefs.eval.jsonl"] == 200


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
    assert hh_rlhf.parse_transcript(text, "chosen") == [
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you"}]
    with pytest.raises(Bad) as bad:
        hh_rlhf.to_contracts({"chosen": text, "rejected": text.replace("Bye", "Later")})
    assert bad.value.reason == "prompt_mismatch"
    with pytest.raises(Bad) as bad:  # the same human turns, but one side answers twice in a row
        hh_rlhf.to_contracts({"chosen": text, "rejected": text.replace("\n\nHuman: Bye", "\n\nAssistant: Bye")})
    assert bad.value.reason == "role_order" and bad.value.field == "rejected"
    with pytest.raises(Bad) as bad:
        hh_rlhf.to_contracts({"chosen": 3, "rejected": text})
    assert bad.value.field == "chosen"
