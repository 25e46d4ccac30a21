"""Stack Exchange paired answers (question, preferred response_j, other response_k) into preference pairs.

Source: the hub dataset `lvwerra/stack-exchange-paired` or a local file of the same layout. response_j is the answer
with the higher vote score.
"""

from __future__ import annotations

from data_prep.convert import chat, each_record, reply, text_field

LICENSE = "CC BY-SA 4.0"
HUB = "lvwerra/stack-exchange-paired"
VERSION = 1


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    question, chosen, rejected = (text_field(record, k) for k in ("question", "response_j", "response_k"))
    return [("pair", {"prompt": chat(question), "chosen": reply(chosen), "rejected": reply(rejected)})]


convert_rows = each_record(to_contracts)
