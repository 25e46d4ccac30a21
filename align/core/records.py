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


def read_records(path: str | Path, kind: str, on_bad_record: str) -> tuple[list[dict], ReadReport]:
    """Records of `kind` (a key of contracts.CHECKS) from a JSONL file."""
    if on_bad_record not in ("error", "drop"):
        raise UserError(f"data.on_bad_record must be 'error' or 'drop', got {on_bad_record!r}")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    check = CHECKS[kind]
    records, report = [], ReadReport(str(path))
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                problem = ("(record)", "must be a JSON object") if not isinstance(record, dict) else check(record)
            except json.JSONDecodeError as error:
                problem = ("(line)", f"invalid JSON: {error.msg} at column {error.colno}")
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
