"""Stanford Alpaca (instruction, optional input, output) into SFT demonstrations.

Source: the hub dataset `tatsu-lab/alpaca` or a local copy of alpaca_data.json (data.source).
"""

from __future__ import annotations

import random
from pathlib import Path

from align.contracts import check_sft
from align.errors import UserError
from data_prep.sources import read_source
from data_prep.writing import write_jsonl


def to_messages(record: dict) -> dict:
    instruction, extra = record.get("instruction"), record.get("input") or ""
    user = f"{instruction}\n\n{extra}" if isinstance(instruction, str) and extra.strip() else instruction
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": record.get("output")}]}


def prepare(source, data, out_dir: Path) -> dict[str, int]:
    raw = read_source(source.source)
    demos, dropped = [], 0
    for record in raw:
        converted = to_messages(record)
        if check_sft(converted) is None:
            demos.append(converted)
        else:
            dropped += 1
    if len(demos) <= source.eval_size:
        raise UserError(f"{source.source}: {len(demos)} usable records, not more than eval_size={source.eval_size}")
    random.Random(0).shuffle(demos)
    write_jsonl(out_dir / "sft.train.jsonl", demos[source.eval_size :])
    write_jsonl(out_dir / "sft.eval.jsonl", demos[: source.eval_size])
    return {"read": len(raw), "dropped_malformed": dropped, "sft.train": len(demos) - source.eval_size,
            "sft.eval": source.eval_size}
