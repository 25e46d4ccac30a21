"""Anthropic HH-RLHF transcripts into preference pairs and prompts.

A record is two transcripts, `chosen` and `rejected`, of the form "\\n\\nHuman: ...\\n\\nAssistant: ...". The prompt is
every turn before the last assistant reply; the pair is the two final replies. In a few records the prompts differ
between chosen and rejected (1 of the first 1,600 records of harmless-base test): such a record is not a pair over one
prompt, so it is dropped and counted under `prompt_mismatch` in the manifest, never guessed at. Replies that go on
to write the other speaker's turn ("... Human: ...", 35 of those 1,600 records) are dropped as well: training on
them would teach the model to speak for the user.

Source: the hub dataset `Anthropic/hh-rlhf` or a local copy of one of its .jsonl.gz files.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from align.contracts import check_messages
from align.errors import UserError
from data_prep.sources import read_source
from data_prep.writing import write_jsonl

TURN = re.compile(r"\n\n(Human|Assistant): ?")
MARKER = re.compile(r"\b(Human|Assistant):")
ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> list[dict]:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{user: a}, {assistant: b}]; raises ValueError if it is not one."""
    if not isinstance(text, str) or not text.startswith("\n\nHuman:"):
        raise ValueError("transcript must start with '\\n\\nHuman:'")
    parts = TURN.split(text)[1:]  # role, content, role, content, ...
    return [{"role": ROLE[role], "content": content.strip()} for role, content in zip(parts[::2], parts[1::2])]


def to_pair(record: dict) -> tuple[dict | None, str | None]:
    """(pair, None) or (None, reason it was dropped)."""
    try:
        chosen, rejected = parse_transcript(record.get("chosen")), parse_transcript(record.get("rejected"))
    except ValueError:
        return None, "not_a_transcript"
    if chosen[:-1] != rejected[:-1]:
        return None, "prompt_mismatch"
    pair = {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}
    if check_messages(pair["prompt"], "prompt", last_role="user") is not None:
        return None, "bad_prompt_turns"
    for side in ("chosen", "rejected"):
        if pair[side][0]["role"] != "assistant" or not pair[side][0]["content"]:
            return None, f"empty_or_missing_{side}_reply"
    if pair["chosen"][0]["content"] == pair["rejected"][0]["content"]:
        return None, "identical_replies"
    if any(MARKER.search(m["content"]) for m in pair["prompt"] + pair["chosen"] + pair["rejected"]):
        return None, "speaker_marker_in_text"  # a reply that writes the other speaker's lines too
    return pair, None


def prepare(source, data, out_dir: Path) -> dict[str, int]:
    raw = read_source(source.source)
    pairs, dropped = [], Counter()
    for record in raw:
        pair, reason = to_pair(record)
        if pair is None:
            dropped[reason] += 1
        else:
            pairs.append(pair)
    if len(pairs) <= source.eval_size:
        raise UserError(f"{source.source}: {len(pairs)} usable pairs, not more than eval_size={source.eval_size}")
    random.Random(0).shuffle(pairs)
    splits = {"prefs.eval": pairs[: source.eval_size], "prefs.train": pairs[source.eval_size :]}
    splits["prompts.eval"] = [{"prompt": p["prompt"]} for p in splits["prefs.eval"]]
    splits["prompts.train"] = [{"prompt": p["prompt"]} for p in splits["prefs.train"]]
    for name, records in splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", records)
    return {"read": len(raw), **{f"dropped_{k}": v for k, v in sorted(dropped.items())},
            **{name: len(records) for name, records in splits.items()}}
