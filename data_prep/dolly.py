"""databricks-dolly-15k (instruction, optional context, response) into SFT demonstrations.

Reads the original layout (`instruction`, `context`, `response`, `category`; hub `databricks/databricks-dolly-15k`)
and the Alpaca-template reformat found in the wild (`prompt` ending in "### Response:", `answer` ending in the
literal "###eos_token###"), which is split back into instruction and context. The user turn is built as for Alpaca.
"""

from __future__ import annotations

import re

from data_prep.alpaca import user_turn
from data_prep.convert import Bad, chat, each_record, text_field

LICENSE = "CC BY-SA 3.0"
HUB = "databricks/databricks-dolly-15k"
VERSION = 1
TEMPLATE = re.compile(
    r"\n\n### Instruction:\n(?P<instruction>.*?)(?:\n\n### Input:\n(?P<context>.*?))?\n\n### Response:\s*$", re.DOTALL
)
EOS_MARKER = "###eos_token###"


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    if "prompt" in record:
        match = TEMPLATE.search(text_field(record, "prompt"))
        if match is None:
            raise Bad("prompt", "is not an Alpaca-template prompt ending in '### Response:'")
        instruction, context = match["instruction"], match["context"] or ""
        response = text_field(record, "answer").removesuffix(EOS_MARKER)
    else:
        instruction, context = text_field(record, "instruction"), text_field(record, "context", optional=True)
        response = text_field(record, "response")
    return [("sft", {"messages": chat(user_turn(instruction, context), response)})]


convert_rows = each_record(to_contracts)
