"""Anthropic HH-RLHF transcripts into preference pairs (and the prompts PPO samples), every turn kept.

A record is two transcripts, `chosen` and `rejected`, of the form "\\n\\nHuman: ...\\n\\nAssistant: ...". The prompt is
every turn before the last assistant reply, as alternating user/assistant messages; the pair is the two final
replies. Where the turns before the final reply differ between chosen and rejected, the record is not a pair over
one prompt: it is dropped and counted as `prompt_mismatch`, never guessed at, unless one side has two turns of one
speaker in a row (the one such record in the first 1,600 of harmless-base test), which is a broken transcript
(`role_order`). Replies that go on to write the other speaker's turn ("... Human: ...") are
dropped as `speaker_marker_in_text`: training on them would teach the model to speak for the user. Empty replies and
prompts whose turns do not alternate are caught by the contract checks (`empty_content`, `role_order`).

Source: the hub dataset `Anthropic/hh-rlhf` or a local copy of one of its .jsonl.gz files.
"""

from __future__ import annotations

import re

from data_prep.convert import Bad, each_record, text_field

LICENSE = "MIT"
HUB = "Anthropic/hh-rlhf"
VERSION = 3  # 3: two turns of one speaker in a row are role_order, not prompt_mismatch
TURN = re.compile(r"\n\n(Human|Assistant): ?")
MARKER = re.compile(r"\b(Human|Assistant):")
ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str, field: str) -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{user: a}, {assistant: b}]."""
    if not text.startswith("\n\nHuman:"):
        raise Bad(field, "is not a transcript: it must start with '\\n\\nHuman:'")
    parts = TURN.split(text)[1:]  # role, content, role, content, ...
    return [{"role": ROLE[role], "content": content.strip()} for role, content in zip(parts[::2], parts[1::2])]


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    chosen = parse_transcript(text_field(record, "chosen"), "chosen")
    rejected = parse_transcript(text_field(record, "rejected"), "rejected")
    if chosen[:-1] != rejected[:-1]:
        for field, turns in (("chosen", chosen), ("rejected", rejected)):
            for i in range(1, len(turns)):
                if turns[i]["role"] == turns[i - 1]["role"]:  # not another prompt: a broken transcript
                    raise Bad(field, f"out of order: turns {i} and {i + 1} are both {turns[i]['role']} turns",
                              "role_order")
        raise Bad("rejected", "its turns before the final reply differ from chosen's", "prompt_mismatch")
    pair = {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}
    for side in ("prompt", "chosen", "rejected"):
        if any(MARKER.search(m["content"]) for m in pair[side]):
            raise Bad(side, "a turn writes the other speaker's lines too ('Human:' or 'Assistant:')",
                      "speaker_marker_in_text")
    return [("pair", pair)]


convert_rows = each_record(to_contracts)
