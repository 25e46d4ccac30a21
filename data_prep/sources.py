"""Read a source dataset by hub name or local file (JSON, JSONL, gzip, plain text) with one code path.

Every record comes with the line it starts on, so a converter can report `file:line: field: problem`. A JSON Lines
line that is not valid UTF-8 or not valid JSON becomes a row with a problem instead of stopping the read; a JSON array
cannot be resynchronised after an error, so a broken one stops with the line of the error.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from align.core.errors import UserError
from align.core.hub import hub_endpoint, hub_reachable, not_on_hub


@dataclass(frozen=True)
class Row:
    line: int  # line of the file the record starts on (1-based); the row number for a hub dataset
    record: object  # the parsed JSON value; None when the line could not be read
    problem: str | None = None  # why the line could not be read


@dataclass(frozen=True)
class Source:
    name: str  # file path or hub name, as messages show it
    rows: list[Row]
    origin: dict  # what was read: file and its sha256, or hub name, split and revision

    def where(self, line: int) -> str:
        return f"{self.name}:{line}" if "sha256" in self.origin else f"{self.name} row {line}"


def read_source(source: str, split: str) -> Source:
    path = Path(source)
    if path.is_dir():
        raise UserError(f"{path} is a directory: name the data file in it (JSON, JSONL, .gz or .txt)")
    if path.exists():
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise UserError(f"cannot read {path}: {error.strerror}") from None
        origin = {"source": str(path), "sha256": hashlib.sha256(raw).hexdigest()}
        return Source(str(path), parse_local(path, raw), origin)
    if path.suffix in LOCAL_SUFFIXES or source.startswith((".", "/", "~")):
        raise UserError(f"no such file: {path} (a hub dataset is named owner/name, without a file suffix)")
    if not hub_reachable():
        raise UserError(
            f"cannot read dataset {source!r}: it is not a local file and the Hugging Face hub is not reachable from "
            f"this machine. Download it where the hub is reachable, copy the file here and set this source's "
            f"`source` to it: data.sources.<name>.source=/path/to/file (JSON, JSONL, .gz or .txt)."
        )
    import datasets
    from huggingface_hub import HfApi

    name, _, config = source.partition(":")  # "owner/name:config" for a dataset with several configs
    try:
        revision = HfApi().dataset_info(name).sha
    except OSError as error:
        if not not_on_hub(error):
            raise
        raise UserError(f"cannot read dataset {name!r}: the hub at {hub_endpoint()} has no such dataset (a typo, or a "
                        "private one: `hf auth login` first), and it is not a local file") from None
    hub = datasets.load_dataset(name, config or None, split=split, revision=revision)
    rows = [Row(i, record) for i, record in enumerate(hub, start=1)]
    return Source(source, rows, {"source": source, "split": split, "revision": revision})


LOCAL_SUFFIXES = (".json", ".jsonl", ".gz", ".txt")


def parse_local(path: Path, raw: bytes) -> list[Row]:
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:  # not gzip, truncated, or corrupt
            raise UserError(f"{path}: (file): not a readable gzip file ({error})") from None
        path = path.with_suffix("")
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark is not part of the data
    if path.suffix == ".txt":
        return text_documents(decode(path, raw))
    if path.suffix != ".jsonl" and raw.lstrip().startswith(b"["):  # a .json file holds an array or JSON Lines
        return json_array(path, decode(path, raw))
    return json_lines(raw)


def decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise UserError(f"{path}:{line}: (file): invalid UTF-8") from None


def json_lines(raw: bytes) -> list[Row]:
    rows = []
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(Row(line_no, json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError as error:
            rows.append(Row(line_no, None, f"invalid UTF-8 at byte {error.start}"))
        except json.JSONDecodeError as error:
            rows.append(Row(line_no, None, f"invalid JSON: {error.msg} at column {error.colno}"))
    return rows


def json_array(path: Path, text: str) -> list[Row]:
    """The elements of a top-level JSON array, each with the line it starts on."""
    decoder, rows = json.JSONDecoder(), []
    position = text.index("[") + 1
    while True:
        position = skip(text, position, " \t\r\n")
        if text.startswith("]", position):
            return rows
        try:
            record, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{error.lineno}: (file): invalid JSON array: {error.msg}") from None
        rows.append(Row(text.count("\n", 0, position) + 1, record))
        position = skip(text, end, " \t\r\n")
        if text.startswith(",", position):
            position += 1
        elif not text.startswith("]", position):
            line = text.count("\n", 0, position) + 1
            raise UserError(f"{path}:{line}: (file): invalid JSON array: expected ',' or ']'")


def skip(text: str, position: int, characters: str) -> int:
    while position < len(text) and text[position] in characters:
        position += 1
    return position


def text_documents(text: str) -> list[Row]:
    """Plain text: documents are separated by blank lines; each becomes {"text": ...}."""
    rows, start, lines = [], None, []
    for line_no, line in enumerate(text.splitlines() + [""], start=1):
        if line.strip():
            start = start or line_no
            lines.append(line)
        elif lines:
            rows.append(Row(start, {"text": "\n".join(lines)}))
            start, lines = None, []
    return rows
