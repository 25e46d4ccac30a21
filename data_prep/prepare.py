"""Build a data config's contract files on first use: `ensure_prepared(cfg.data)`.

The files are built into a temporary directory and renamed into place with a manifest, so an interrupted build
never leaves a directory that looks finished. A directory built from other options is never silently reused.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from align.config import DataConfig
from align.errors import UserError

MANIFEST = "manifest.json"


def recipe(data: DataConfig) -> dict:
    """What determines the files' content."""
    return {"prepare": data.prepare, "source": data.source, "eval_size": data.eval_size,
            "world": asdict(data.world) if data.world else None}


def ensure_prepared(data: DataConfig) -> Path:
    out_dir = Path(data.dir)
    manifest_path = out_dir / MANIFEST
    if manifest_path.is_file():
        built_from = json.loads(manifest_path.read_text())["recipe"]
        if built_from != recipe(data):
            raise UserError(
                f"{out_dir} was prepared from a different recipe ({built_from}); delete it or set data.dir elsewhere"
            )
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        # Files without a manifest: the user's own data, used as is.
        return out_dir
    module = importlib.import_module(f"data_prep.{data.prepare}")
    tmp_dir = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    counts = module.prepare(data, tmp_dir)
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_dir.glob("*.jsonl"))}
    manifest = {"recipe": recipe(data), "counts": counts, "sha256": files}
    (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked above)
    os.replace(tmp_dir, out_dir)
    return out_dir
