"""Records already in the contracts (TRL's conversational formats), from a file or a hub dataset, checked as is.

`{"messages": [...]}` is a demonstration, `{"prompt", "chosen", "rejected"}` a preference pair (optional `margin`),
`{"prompt": [...]}` a prompt, `{"text"}` pretraining text: your own data, or hub sets already in this layout
(e.g. `HuggingFaceH4/ultrachat_200k`). Only the contract fields are kept.
"""

from __future__ import annotations

from data_prep.convert import Bad, each_record

LICENSE = "as the source's"
HUB = "HuggingFaceH4/ultrachat_200k"
VERSION = 1
FIELDS = {"pair": ("prompt", "chosen", "rejected", "margin"), "sft": ("messages",), "prompt": ("prompt",),
          "text": ("text",)}


def kind_of(record: dict) -> str:
    if "chosen" in record or "rejected" in record:
        return "pair"
    for kind in ("sft", "prompt", "text"):
        if FIELDS[kind][0] in record:
            return kind
    raise Bad("(record)", "has none of the contract fields messages, prompt (+ chosen, rejected), text")


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    kind = kind_of(record)
    return [(kind, {field: record[field] for field in FIELDS[kind] if field in record})]


convert_rows = each_record(to_contracts)
