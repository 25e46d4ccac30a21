"""Build the contract files a stage needs on first use: `ensure_prepared(cfg.data, [cfg.data.sft_train, ...])`.

Each source of a data config is built by its data_prep module into its own directory, data.dir/<source name>, first
under a temporary name and then renamed into place with a manifest, so an interrupted build never leaves a directory
that looks finished. A directory built from another recipe is never silently reused.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from align.config import DataConfig, SourceConfig
from align.errors import UserError

MANIFEST = "manifest.json"


def recipe(source: SourceConfig, data: DataConfig) -> dict:
    """What determines the files' content: the source, its options, and the version of the module that builds it."""
    module = importlib.import_module(f"data_prep.{source.prepare}")
    return {**asdict(source), "world": asdict(data.world) if source.prepare == "tiny_world" else None,
            "version": getattr(module, "VERSION", 1)}


def ensure_prepared(data: DataConfig, files: list[str | None]) -> None:
    """Build every source that one of `files` lives in and that is not built yet."""
    wanted = {Path(f).resolve().parent for f in files if f is not None}
    for name, source in data.sources.items():
        out_dir = Path(data.dir) / name
        if out_dir.resolve() in wanted:
            build_source(name, source, data, out_dir)


def build_source(name: str, source: SourceConfig, data: DataConfig, out_dir: Path) -> Path:
    manifest_path = out_dir / MANIFEST
    if manifest_path.is_file():
        built_from = json.loads(manifest_path.read_text())["recipe"]
        if built_from != recipe(source, data):
            raise UserError(f"{out_dir} was prepared from another recipe ({built_from}); delete it or set data.dir")
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        return out_dir  # files without a manifest: the user's own data, used as they are
    module = importlib.import_module(f"data_prep.{source.prepare}")
    tmp_dir = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    try:
        counts = module.prepare(source, data, tmp_dir)
    except UserError as error:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise UserError(f"data.sources.{name} ({source.prepare}): {error}") from None
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_dir.glob("*.jsonl"))}
    manifest = {"recipe": recipe(source, data), "counts": counts, "sha256": files}
    (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked above)
    os.replace(tmp_dir, out_dir)
    return out_dir
