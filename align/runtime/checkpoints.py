"""Checkpoint directories that resume can trust: a complete one carries a marker written last.

A stage writes `checkpoint-<step>/` (the Trainer's files, or PPO's), flushes every file to disk, then writes the
marker, which also records how many metrics.jsonl lines the run had logged by then. A directory without the marker
was cut short (killed while it was written) and is never resumed from.
Old checkpoints lose their marker before their files, so a deletion cut short leaves a directory that is ignored.
A stage's own markers of a finished run (metrics.json, eval.json) and the config they are checked against are written
the same way, whole or not at all (write_atomic).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from align.core.console import is_main_process

MARKER = "checkpoint_complete"
PATTERN = re.compile(r"^checkpoint-(\d+)$")


def numbered(run_dir: Path) -> list[Path]:
    """The checkpoint-N directories of a run, oldest first."""
    found = [(int(m.group(1)), p) for p in run_dir.glob("checkpoint-*") if (m := PATTERN.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / MARKER).is_file()


def mark_complete(checkpoint: Path, metrics_rows: int) -> None:
    """Flush the checkpoint's files to disk, then write the marker (also flushed)."""
    for path in checkpoint.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    write_atomic(checkpoint / MARKER, json.dumps({"metrics_rows": metrics_rows}) + "\n")


def metrics_rows(checkpoint: Path) -> int:
    """How many metrics.jsonl lines the run had logged when this checkpoint was written."""
    return json.loads((checkpoint / MARKER).read_text())["metrics_rows"]


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` survive a crash of the machine, not only of the process."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file next to `path`, flush it to disk, then rename it into place: a reader (the
    pipeline skipping a finished stage, resume, the report) sees the whole file or none, never one cut short by a
    kill or a crash."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def newest_complete(run_dir: Path) -> Path | None:
    complete = [p for p in numbered(run_dir) if is_complete(p)] if run_dir.is_dir() else []
    return complete[-1] if complete else None


def remove_incomplete(run_dir: Path) -> None:
    """Delete checkpoints cut short, saying so (a later save of the same step would mix its files with theirs)."""
    for path in numbered(run_dir) if run_dir.is_dir() else []:
        if not is_complete(path):
            print(f"ignoring and removing {path}: no {MARKER} marker, it was cut short while being written")
            shutil.rmtree(path)


def remove_old(run_dir: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints (all if keep is 0; none if it is negative); marker first."""
    if keep == 0:
        return
    complete = [p for p in numbered(run_dir) if is_complete(p)]
    for path in complete[:-keep] if keep > 0 else complete:
        (path / MARKER).unlink()
        shutil.rmtree(path)


def resume_point(run_dir: Path, resume: bool) -> Path | None:
    """The newest complete checkpoint, or None when starting over (resume off). The main process first removes the
    checkpoints cut short, and when starting over all of them, so that no later resume picks up an earlier run's."""
    if is_main_process():
        remove_incomplete(run_dir)
        if not resume and numbered(run_dir):
            print(f"starting over (resume is off): removing the checkpoints in {run_dir}")
            remove_old(run_dir, keep=-1)
    return newest_complete(run_dir) if resume else None
