"""Self-Instruct tasks (an instruction with input/output instances) into SFT demonstrations, one per instance.

Reads `seed_tasks.jsonl` (175 human-written seed tasks) and any file of the same layout. Its 252 user-oriented
instructions are an evaluation set: build them with `eval_prompts`, not here.
"""

from __future__ import annotations

from data_prep.alpaca import user_turn
from data_prep.convert import Bad, chat, each_record, list_field, text_field

LICENSE = "Apache-2.0"
HUB = "yizhongw/self_instruct"
VERSION = 1


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    instruction, demos = text_field(record, "instruction"), []
    for i, instance in enumerate(list_field(record, "instances")):
        if not isinstance(instance, dict):
            raise Bad(f"instances[{i}]", "must be an object with 'input' and 'output'")
        try:
            extra, output = text_field(instance, "input", optional=True), text_field(instance, "output")
        except Bad as bad:
            raise Bad(f"instances[{i}].{bad.field}", bad.problem) from None
        demos.append(("sft", {"messages": chat(user_turn(instruction, extra), output)}))
    return demos


convert_rows = each_record(to_contracts)
