"""Read a source dataset by hub name or local file (JSON, JSONL, gzip) with one code path."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from align.errors import UserError
from align.hub import hub_reachable


def read_source(source: str, split: str = "train") -> list[dict]:
    path = Path(source)
    if path.exists():
        return read_local(path)
    if not hub_reachable():
        raise UserError(
            f"cannot read dataset {source!r}: it is not a local file and the Hugging Face hub is not reachable from "
            f"this machine. Download it where the hub is reachable, copy the file here and set this source's "
            f"`source` to it: data.sources.<name>.source=/path/to/file (JSON, JSONL or .gz)."
        )
    import datasets

    return list(datasets.load_dataset(source, split=split))


def read_local(path: Path) -> list[dict]:
    """A JSON array or JSON Lines, optionally gzip-compressed; a broken line is reported with its number."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        return json.loads(text)
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{line_no}: invalid JSON: {error.msg}") from None
    return records
