"""Read contract files with per-record validation: a malformed record is reported by file, line and field.

By config (`data.on_bad_record`) a bad record either stops the stage before any training ("error") or is dropped and
counted in the run's report ("drop"). Nothing vanishes silently.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from align.core.console import print0
from align.core.contracts import CHECKS
from align.core.errors import UserError


@dataclass
class ReadReport:
    path: str
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    first_problems: list[str] = field(default_factory=list)  # the first few, in full, for the log


def parse_line(raw: bytes, first: bool, check) -> tuple[dict | None, tuple[str, str] | None]:
    """One JSONL line: (record, None); (None, (field, problem)) for bytes that are not a good record; (None, None)
    for a blank line."""
    try:
        # a byte-order mark (what some Windows editors write first) is not part of the first record
        line = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as error:
        return None, ("(line)", f"invalid UTF-8 at byte {error.start + 1} of the line")
    if not line.strip():
        return None, None  # a blank line (Unicode whitespace included) is no record
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return None, ("(line)", f"invalid JSON: {error.msg} at column {error.colno}")
    except RecursionError:
        return None, ("(line)", "JSON nested too deeply")
    if not isinstance(record, dict):
        return None, ("(record)", "must be a JSON object")
    problem = check(record)
    return (record, None) if problem is None else (None, problem)


def read_records(path: str | Path, kind: str, on_bad_record: str) -> tuple[list[dict], ReadReport]:
    """Records of `kind` (a key of contracts.CHECKS) from a JSONL file; on_bad_record "error" or "drop" (checked with
    the config)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory: name a JSONL data file in it")
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    check = CHECKS[kind]
    records, report = [], ReadReport(str(path))
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            record, problem = parse_line(raw, line_no == 1, check)
            if record is None and problem is None:
                continue
            if problem is None:
                records.append(record)
                continue
            where, what = problem
            message = f"{path}:{line_no}: {where}: {what}"
            if on_bad_record == "error":
                raise UserError(f"malformed {kind} record: {message} (data.on_bad_record=drop skips such records)")
            report.dropped[f"{where.split('[')[0]}: {what.split(',')[0]}"] += 1
            if len(report.first_problems) < 5:
                report.first_problems.append(message)
    report.kept = len(records)
    if report.dropped:
        print0(f"dropped {sum(report.dropped.values())} malformed {kind} records from {path}: "
              f"{dict(report.dropped)}; first: {report.first_problems}")
    if not records:
        raise UserError(f"no usable {kind} records in {path}")
    return records, report
