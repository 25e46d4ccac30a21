"""Stanford Alpaca (instruction, optional input, output) into SFT demonstrations.

Source: the hub dataset `tatsu-lab/alpaca` or a local copy of alpaca_data.json. The user turn is the instruction,
followed by the input after a blank line when there is one.
"""

from __future__ import annotations

from data_prep.convert import chat, each_record, text_field

LICENSE = "CC BY-NC 4.0"
HUB = "tatsu-lab/alpaca"
VERSION = 2


def user_turn(instruction: str, extra: str) -> str:
    return f"{instruction.strip()}\n\n{extra.strip()}" if extra.strip() else instruction


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    user = user_turn(text_field(record, "instruction"), text_field(record, "input", optional=True))
    return [("sft", {"messages": chat(user, text_field(record, "output"))})]


convert_rows = each_record(to_contracts)
