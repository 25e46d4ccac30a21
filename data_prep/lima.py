"""LIMA (1,000 curated single-turn demonstrations and 30 dialogues) into SFT demonstrations, turns kept.

Reads the hub layout (`GAIR/lima`: `conversations`, a list of alternating user and assistant strings) and the
LLaMA-Factory reformat (`instruction` = last user turn, `output` = its reply, `history` = earlier [user, assistant]
pairs).
"""

from __future__ import annotations

from data_prep.convert import Bad, chat, each_record, list_field, text_field

LICENSE = "CC BY-NC-SA 4.0"
HUB = "GAIR/lima"
VERSION = 1


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    if "conversations" in record:
        turns = list_field(record, "conversations")
    else:
        turns = []
        for i, pair in enumerate(list_field(record, "history")):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise Bad(f"history[{i}]", "must be a [user, assistant] pair")
            turns += pair
        turns += [text_field(record, "instruction"), text_field(record, "output")]
    for i, turn in enumerate(turns):
        if not isinstance(turn, str):
            raise Bad(f"turn {i}", f"must be a string, got {type(turn).__name__}")
    return [("sft", {"messages": chat(*turns)})]


convert_rows = each_record(to_contracts)
