"""Deterministic, atomic output files: re-running with the same inputs gives byte-identical files."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON object a line, UTF-8, written to a temporary name and renamed so a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
