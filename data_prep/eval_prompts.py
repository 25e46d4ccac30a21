"""Evaluation prompt sets into prompts: AlpacaEval, Koala, the Vicuna benchmark, Self-Instruct's user-oriented set.

Told apart by their fields: `instruction` (AlpacaEval; with `instances`, Self-Instruct, whose first instance's input
follows the instruction after a blank line, as AlpacaEval writes them), `prompt` (Koala; a leading ShareGPT "2 / 2"
artifact is removed; a list of turns, as HuggingFaceH4/mt_bench_prompts has it, is MT-Bench), `turns` (Vicuna /
MT-Bench: the first turn is the prompt, every later one a follow-up the evaluation asks after the model's own
answer). Each set's id (`question_id`, `prompt_id`, `id`) and category (`category`,
AlpacaEval's `dataset`, Self-Instruct's `motivation_app`) are kept. Build them with eval_size -1, so every prompt is
held out, and name them in a training source's `decontaminate`.
"""

from __future__ import annotations

import re

from data_prep.alpaca import user_turn
from data_prep.convert import Bad, chat, each_record, list_field, text_field

LICENSE = "see the set's SOURCE: AlpacaEval CC BY-NC 4.0; Koala, Vicuna, Self-Instruct Apache-2.0"
HUB = "tatsu-lab/alpaca_eval"
VERSION = 2  # 2: every turn, the id and the category kept
SHAREGPT_ARTIFACT = re.compile(r"^\s*\d+ / \d+")


ID_FIELDS = ("question_id", "prompt_id", "id")
CATEGORY_FIELDS = ("category", "dataset", "motivation_app")


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    followups = []
    if "turns" in record or isinstance(record.get("prompt"), list):
        key = "turns" if "turns" in record else "prompt"  # LMSYS's MT-bench file; HuggingFaceH4/mt_bench_prompts
        turns = list_field(record, key)
        if not turns:
            raise Bad(key, "is empty")
        for i, turn in enumerate(turns):
            if not isinstance(turn, str):
                raise Bad(f"{key}[{i}]", f"must be a string, got {type(turn).__name__}")
        prompt, followups = turns[0], [turn.strip() for turn in turns[1:]]
    elif "prompt" in record:
        prompt = SHAREGPT_ARTIFACT.sub("", text_field(record, "prompt"))
    else:
        prompt = text_field(record, "instruction")
        if "instances" in record:
            instances = list_field(record, "instances")
            first = instances[0] if instances and isinstance(instances[0], dict) else {}
            prompt = user_turn(prompt, text_field(first, "input", optional=True))
    out = {"prompt": chat(prompt), **({"followups": followups} if followups else {})}
    if (key := next((k for k in ID_FIELDS if record.get(k) is not None), None)) is not None:
        out["id"] = record[key]
    if (key := next((k for k in CATEGORY_FIELDS if record.get(k) is not None), None)) is not None:
        out["category"] = text_field(record, key)
    return [("prompt", out)]


convert_rows = each_record(to_contracts)
