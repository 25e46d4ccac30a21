"""Build contract files from the command line, with a progress bar and a summary table.

    python -m data_prep dolly /data/databricks-dolly-15k.jsonl --out data/dolly --eval-size 500
    python -m data_prep hh_rlhf Anthropic/hh-rlhf --split test --out data/hh --strict
    python -m data_prep lima lima.json --out data/lima --decontaminate data/alpaca_eval
    python -m data_prep oasst1 OpenAssistant/oasst1 --out data/oasst1 --option languages=[en]
    python -m data_prep --recipe slices                      # every source and mixture of conf/data/slices.yaml
    python -m data_prep --recipe slices paths.data=/tmp/d    # ... with any config override
    python -m data_prep --tokenizer /data/my_task            # a tiny BPE on your own files (model=tiny, data=files)

A source module is any of data_prep's (alpaca, dolly, lima, oasst1, ...); the input is a local file or a hub name.
Each output directory gets a manifest.json (input sha256 or hub revision, license, counts in and out, drops by
reason) and dropped.jsonl (every dropped record with its line, field and problem).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from align.core.config import compose, load
from align.core.errors import UserError
from align.core.records import read_records
from align.core.tokens import train_tiny_tokenizer
from data_prep.mixture import KIND, texts
from data_prep.prepare import MANIFEST, build, build_dir, evaluation_prompts
from data_prep.writing import digest


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__.split("\n\n")[0])
    parser.add_argument("module", nargs="?", help="data_prep module of the source: alpaca, dolly, lima, oasst1, ...")
    parser.add_argument("input", nargs="?", help="local file (JSON, JSONL, .gz, .txt) or hub dataset name")
    parser.add_argument("--out", type=Path, help="output directory")
    parser.add_argument("--split", default="train", help="hub split to read")
    parser.add_argument("--eval-size", type=int, default=0, help="records of each kind held out; -1: all")
    parser.add_argument("--decontaminate", type=Path, nargs="*", default=[],
                        help="built evaluation-set directories whose prompts are removed from this source")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad record (file:line: field)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the module, VALUE in YAML: oasst1 --option languages=[en,de]")
    parser.add_argument("--recipe", help="a conf/data recipe: build all its sources and mixtures")
    parser.add_argument("--tokenizer", type=Path, metavar="DIR",
                        help="train a byte-level BPE on the *.train.jsonl contract files in DIR into DIR/tokenizer")
    parser.add_argument("--vocab-size", type=int, default=512, help="with --tokenizer: its vocabulary size")
    args, overrides = parser.parse_known_args(argv)
    if args.recipe:
        overrides = recipe_overrides(args, overrides)
    if args.tokenizer and not (args.module or args.recipe or overrides):
        print(f"wrote {train_tokenizer(args.tokenizer, args.vocab_size)}")
        return
    if args.recipe:
        built = build_recipe(args.recipe, overrides)
    elif args.module and args.input and args.out and not overrides:
        built = {args.out.name: build_one(args)}
    else:
        parser.error("give MODULE INPUT --out DIR, --recipe NAME [overrides], or --tokenizer DIR")
    print(summary_table({name: json.loads((path / MANIFEST).read_text()) for name, path in built.items()}))


def recipe_overrides(args, rest: list[str]) -> list[str]:
    """The config overrides after --recipe NAME: argparse hands the first two to MODULE and INPUT, which a recipe
    has none of."""
    overrides = [a for a in (args.module, args.input) if a is not None] + rest
    args.module = args.input = None
    if not_overrides := [o for o in overrides if "=" not in o]:
        raise UserError(f"--recipe takes config overrides (KEY=VALUE) only, not {' '.join(not_overrides)}")
    return overrides


def build_one(args) -> Path:
    from types import SimpleNamespace

    from data_prep.convert import build as convert

    module = source_module(args.module)
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file: name a new or empty directory")
    if args.out.is_dir() and any(args.out.iterdir()) and not (args.out / MANIFEST).is_file():
        raise UserError(f"--out {args.out} holds files data_prep did not write (no {MANIFEST}): name a new or empty "
                        "directory")
    if args.eval_size < -1:
        raise UserError(f"--eval-size {args.eval_size}: give a count >= 0, or -1 for all")
    options = dict(parse_option(o) for o in args.option)
    source = SimpleNamespace(source=args.input, split=args.split, eval_size=args.eval_size, options=options)
    eval_prompts = {}
    for directory in args.decontaminate:
        eval_prompts.update(evaluation_prompts(directory, directory.name))
    local = Path(args.input)
    recipe = {"prepare": args.module, "source": args.input, "split": args.split, "eval_size": args.eval_size,
              "decontaminate": sorted(map(str, args.decontaminate)), "version": getattr(module, "VERSION", 1),
              "input_sha256": digest(local) if local.is_file() else None,  # an edited input is noticed, never reused
              **({"options": options} if options else {})}
    return build_dir(args.out, recipe, lambda tmp: convert(module, args.out.name, source, args.strict, tmp,
                                                           eval_prompts), args.module, remedy="or choose another --out")


def parse_option(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"--option {text}: write KEY=VALUE, e.g. languages=[en]")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise UserError(f"--option {text}: the value is not YAML ({str(error).splitlines()[0]})") from None


def source_module(name: str):
    """data_prep.<name>, the converter of one public dataset."""
    def converter(stem: str):
        try:
            module = importlib.import_module(f"data_prep.{stem}")
        except ImportError:
            return None
        return module if hasattr(module, "LICENSE") else None  # every converter states its data's license

    module = converter(name) if name.isidentifier() else None
    if module is None:
        known = [p.stem for p in sorted(Path(__file__).parent.glob("*.py")) if not p.stem.startswith("_")]
        raise UserError(f"unknown data_prep module {name!r}; one of: "
                        f"{', '.join(stem for stem in known if converter(stem))}")
    return module


def train_tokenizer(directory: Path, vocab_size: int) -> Path:
    """directory/tokenizer: a byte-level BPE with the chat tokens, trained on the text of the training files of the
    contracts in `directory`, for a model built from scratch (model=tiny) on files of one's own (data=files, whose
    data.tokenizer points there), from the same text a mixture's tokenizer is trained on."""
    corpus = []
    for path in sorted(directory.glob("*.train.jsonl")):
        kind = KIND.get(path.name.split(".")[0])
        if kind is not None:
            corpus += texts(kind, read_records(path, kind, "error")[0])
    if not corpus:
        raise UserError(f"no contract training files ({', '.join(f'{p}.train.jsonl' for p in KIND)}) in {directory}")
    train_tiny_tokenizer(corpus, vocab_size, directory / "tokenizer")
    return directory / "tokenizer"


def build_recipe(recipe: str, overrides: list[str]) -> dict[str, Path]:
    data = load(compose([f"data={recipe}", *overrides], stage="data_prep")).data
    return {name: build(name, data) for name in [*data.sources, *data.mixtures]}


def summary_table(manifests: dict[str, dict]) -> str:
    rows = [("", "in", "out", "dropped")]
    for name, manifest in manifests.items():
        counts = manifest["counts"]
        n_in = counts.get("in", "")
        n_in = sum(n_in.values()) if isinstance(n_in, dict) else n_in  # a mixture counts what each part gave
        dropped = {reason: sum(n.values()) if isinstance(n, dict) else n
                   for reason, n in counts.get("dropped", {}).items()}
        rows.append((name, str(n_in), ", ".join(f"{file.removesuffix('.jsonl')} {n}" for file, n in
                                                counts.get("out", counts).items() if isinstance(n, int)),
                     ", ".join(f"{reason} {n}" for reason, n in dropped.items()) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
