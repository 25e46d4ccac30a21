"""Evaluation prompt sets into prompts: AlpacaEval, Koala, the Vicuna benchmark, Self-Instruct's user-oriented set.

Told apart by their fields: `instruction` (AlpacaEval; with `instances`, Self-Instruct, whose first instance's input
follows the instruction after a blank line, as AlpacaEval writes them), `prompt` (Koala; a leading ShareGPT "2 / 2"
artifact is removed), `turns` (Vicuna / MT-Bench; the first turn). Build them with eval_size -1, so every prompt is
held out, and name them in a training source's `decontaminate`.
"""

from __future__ import annotations

import re

from data_prep.alpaca import user_turn
from data_prep.convert import Bad, chat, each_record, list_field, text_field

LICENSE = "see the set's SOURCE: AlpacaEval CC BY-NC 4.0; Koala, Vicuna, Self-Instruct Apache-2.0"
HUB = "tatsu-lab/alpaca_eval"
VERSION = 1
SHAREGPT_ARTIFACT = re.compile(r"^\s*\d+ / \d+")


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    if "turns" in record:
        turns = list_field(record, "turns")
        if not turns or not isinstance(turns[0], str):
            raise Bad("turns", "must be a list of strings")
        prompt = turns[0]
    elif "prompt" in record:
        prompt = SHAREGPT_ARTIFACT.sub("", text_field(record, "prompt"))
    else:
        prompt = text_field(record, "instruction")
        if "instances" in record:
            instances = list_field(record, "instances")
            first = instances[0] if instances and isinstance(instances[0], dict) else {}
            prompt = user_turn(prompt, text_field(first, "input", optional=True))
    return [("prompt", {"prompt": chat(prompt)})]


convert_rows = each_record(to_contracts)
