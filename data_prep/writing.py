"""Deterministic, atomic output files: re-running with the same inputs gives byte-identical files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# Line breaks to str.splitlines() that json.dumps leaves raw (it escapes those below U+0020); escaped so that any
# reader sees one record a line. They only occur inside JSON strings, where the escape means the same character.
LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON object a line, UTF-8, written to a temporary name and renamed so a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False).translate(LINE_BREAKS) + "\n")
    os.replace(tmp, path)


def digest(path: Path) -> str | None:
    """The sha256 of a file's bytes (None if there is no file): what a build records of its inputs and outputs."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
