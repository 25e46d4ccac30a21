"""Build the contract files a stage needs on first use: `ensure_prepared(cfg.data, [cfg.data.sft_train, ...])`.

Each source of a data config is built by its data_prep module into its own directory, data.dir/<source name>, and
each mixture into data.dir/<mixture name>, first under a temporary name and then renamed into place with a manifest,
so an interrupted build never leaves a directory that looks finished. What a directory needs is built first (the parts
of a mixture, the evaluation sets a source is decontaminated against, the tokenizer lengths are counted in). A
directory built from another recipe is never silently reused.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from align.core.config import DataConfig, SourceConfig
from align.core.errors import UserError
from data_prep.convert import build as convert
from data_prep.convert import prompt_key
from data_prep.mixture import build_mixture, mixture_recipe
from data_prep.writing import digest

MANIFEST = "manifest.json"


def recipe(source: SourceConfig, data: DataConfig) -> dict:
    """What determines the files' content: the source, its options, and the version of the module that builds it."""
    module = importlib.import_module(f"data_prep.{source.prepare}")
    world = module.world_recipe(data.world) if hasattr(module, "world_recipe") else None  # a tiny world's options
    settings = asdict(source)
    if not settings["options"]:  # so that directories built before sources had options stay valid
        del settings["options"]
    return {**settings, "world": world, "version": getattr(module, "VERSION", 1)}


def ensure_prepared(data: DataConfig, files: list[str | None]) -> None:
    """Build every source or mixture that one of `files` lives in and that is not built yet; a file no source or
    mixture makes (the user's own) is used as it is. Stops naming the file and its key if one is still missing."""
    wanted = {Path(f).resolve().parent for f in files if f is not None}
    built = {}
    for name in [*data.sources, *data.mixtures]:
        if (Path(data.dir) / name).resolve() in wanted:
            built[build(name, data).resolve()] = name
    for file in files:
        if file is None or Path(file).is_file():
            continue
        key = " and ".join(f"data.{k}" for k, value in vars(data).items() if value == file)
        if Path(file).is_dir():
            raise UserError(f"{f'{key}: ' if key else ''}{file} is a directory: name a JSONL data file in it")
        maker = built.get(Path(file).resolve().parent)
        why = (f"data.{'sources' if maker in data.sources else 'mixtures'}.{maker} was built without it (see its "
               f"{MANIFEST})" if maker else f"no source or mixture of data={data.name} builds it")
        raise UserError(f"{f'{key}: ' if key else ''}{file} does not exist, and {why}: write the file there"
                        f"{f' or point {key} at another' if key else ''}")


def build(name: str, data: DataConfig) -> Path:
    """The directory of source or mixture `name`, built (with what it needs) unless it is already there."""
    if name in data.sources:
        source = data.sources[name]
        if name in source.decontaminate:
            raise UserError(f"data.sources.{name}.decontaminate names the source itself")
        against = {other: digest(build(other, data) / "prompts.eval.jsonl") for other in source.decontaminate}
        local = Path(source.source) if source.source is not None and Path(source.source).is_file() else None
        wanted = {**recipe(source, data), "decontaminated_against": against,
                  "input_sha256": digest(local) if local else None}  # a changed local file is noticed, never reused
        return build_dir(Path(data.dir) / name, wanted, lambda tmp: build_source(name, source, data, tmp),
                         f"data.sources.{name} ({source.prepare})")
    if name in data.mixtures:
        for part in data.mixtures[name].parts:
            build(part, data)
        tokenizer_home = Path(data.tokenizer).parent.name if data.tokenizer else None
        if data.mixtures[name].max_tokens is not None and tokenizer_home in data.mixtures and tokenizer_home != name:
            build(tokenizer_home, data)
        return build_dir(Path(data.dir) / name, mixture_recipe(name, data), lambda tmp: build_mixture(name, data, tmp),
                         f"data.mixtures.{name}")
    raise UserError(f"data: {name!r} is neither a source nor a mixture of data.{data.name} "
                    f"(sources: {list(data.sources)}, mixtures: {list(data.mixtures)})")


def build_source(name: str, source: SourceConfig, data: DataConfig, out_dir: Path) -> dict:
    module = importlib.import_module(f"data_prep.{source.prepare}")
    if hasattr(module, "prepare"):  # generated data (the tiny world): the module builds everything itself
        return {"counts": module.prepare(source, data, out_dir)}
    eval_prompts = {}
    for other in source.decontaminate:
        eval_prompts.update(evaluation_prompts(Path(data.dir) / other, other))
    return convert(module, name, source, data.strict, out_dir, eval_prompts)


def evaluation_prompts(directory: Path, name: str) -> dict[str, str]:
    """prompt_key -> source name for every user turn of a built source's evaluation prompts."""
    path = directory / "prompts.eval.jsonl"
    if not path.is_file():
        raise UserError(f"data.sources.{name} has no evaluation prompts ({path}) to decontaminate against")
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return {prompt_key(m["content"]): name for r in records for m in r["prompt"] if m["role"] == "user"}


def build_dir(out_dir: Path, wanted_recipe: dict, make, label: str, remedy: str = "or set data.dir") -> Path:
    """out_dir, made by `make(tmp_dir) -> report` unless a manifest says it is already built from this recipe.
    `remedy`: what else the user can do than delete a directory built from another recipe."""
    manifest_path = out_dir / MANIFEST
    if manifest_path.is_file():
        built_from = json.loads(manifest_path.read_text())["recipe"]
        if built_from != wanted_recipe:
            changed = sorted(k for k in {*built_from, *wanted_recipe} if built_from.get(k) != wanted_recipe.get(k))
            why = (f"from {wanted_recipe.get('source')} before that file changed" if changed == ["input_sha256"] else
                   f"from another recipe ({', '.join(f'{k}: {built_from.get(k)!r}' for k in changed)})")
            raise UserError(f"{out_dir} was prepared {why}: delete it to rebuild, {remedy}")
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        return out_dir  # files without a manifest: the user's own data, used as they are
    tmp_dir = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    try:
        report = make(tmp_dir)
    except UserError as error:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise UserError(f"{label}: {error}") from None
    except BaseException:  # a bug or an interrupt: nothing half-built is left behind either
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    files = {p.name: digest(p) for p in sorted(tmp_dir.glob("*.jsonl"))}
    manifest = {"recipe": wanted_recipe, **report, "sha256": files}
    (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    try:
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(tmp_dir, out_dir)
    except OSError:
        # Runs sharing data.dir (a parallel sweep) built it at once, and another one's build is in place: use it, as
        # its manifest allows
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if not manifest_path.is_file():
            raise
        return build_dir(out_dir, wanted_recipe, make, label, remedy)
    return out_dir
