"""The one path every real dataset takes into the contracts: read, convert, validate, split, write, count.

A source module (dolly.py, lima.py, oasst1.py, ...) says only how its records map to contract records. It defines
`LICENSE`, `HUB` (its usual hub name), `VERSION` and `convert_rows(rows, **options)`, which yields `Converted` records
or `Dropped` ones with the field and the reason (options: the source's own, e.g. oasst1's `languages`); `each_record`
builds `convert_rows` for sources whose records convert one at a time. Everything else happens here, the same for
every source:

- every converted record is checked against its contract (schema, empty or whitespace-only content, role order);
- an exact duplicate of an earlier record is dropped;
- a record with a user turn that is one of the evaluation prompts of the sources named in `decontaminate` is dropped;
- `eval_size` records of each kind are held out (seeded shuffle), or all of them for an evaluation set (-1).

A bad record is dropped and counted by reason in the manifest (the first few quoted as `file:line: field: problem`,
every one in dropped.jsonl), or, with `data.strict`, stops the build at the first one with that message. Outputs are
a deterministic function of the inputs: re-running gives byte-identical files.
"""

from __future__ import annotations

import inspect
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from align.core.contracts import CHECKS, reason
from align.core.errors import UserError
from data_prep.sources import Row, read_source
from data_prep.writing import write_jsonl

FILE_PREFIX = {"sft": "sft", "pair": "prefs", "prompt": "prompts", "text": "ptx"}  # contract kind -> file name
EXAMPLES = 5  # dropped records quoted in full in the manifest
DROPPED = "dropped.jsonl"  # every dropped record: line, field, problem, reason


@dataclass(frozen=True)
class Converted:
    line: int
    kind: str  # a key of align.core.contracts.CHECKS
    record: dict


@dataclass(frozen=True)
class Dropped:
    line: int
    field: str
    problem: str
    reason: str  # what the manifest counts it under


class Bad(Exception):
    """Raised by a converter for a record it cannot turn into a contract record."""

    def __init__(self, field: str, problem: str, reason: str = "schema"):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem, self.reason = field, problem, reason


def text_field(record: dict, key: str, optional: bool = False) -> str:
    """record[key] as a string ("" for a missing or null optional field); Bad otherwise."""
    value = record.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise Bad(key, "is missing" if key not in record else f"must be a string, got {type(value).__name__}")
    return value


def list_field(record: dict, key: str) -> list:
    value = record.get(key)
    if not isinstance(value, list):
        raise Bad(key, "is missing" if key not in record else f"must be a list, got {type(value).__name__}")
    return value


def chat(*turns: str) -> list[dict]:
    """user, assistant, user, ... contents as messages (whitespace at the ends stripped)."""
    return [{"role": ("user", "assistant")[i % 2], "content": text.strip()} for i, text in enumerate(turns)]


def reply(text: str) -> list[dict]:
    """One assistant reply, the `chosen` or `rejected` side of a preference pair."""
    return [{"role": "assistant", "content": text.strip()}]


def each_record(to_contracts: Callable[[dict], list[tuple[str, dict]]]):
    """convert_rows for a source whose records convert one at a time into [(kind, contract record), ...]."""

    def convert_rows(rows: Iterable[Row]) -> Iterator[Converted | Dropped]:
        for row in rows:
            if row.problem is not None:
                yield Dropped(row.line, "(line)", row.problem, "unreadable")
            elif not isinstance(row.record, dict):
                yield Dropped(row.line, "(record)", "must be a JSON object", "schema")
            else:
                try:
                    converted = to_contracts(row.record)
                except Bad as bad:
                    yield Dropped(row.line, bad.field, bad.problem, bad.reason)
                else:
                    yield from (Converted(row.line, kind, record) for kind, record in converted)

    return convert_rows


SHAREGPT_ARTIFACT = re.compile(r"^\s*(?:\d+ / \d+|#\d+\.)")  # "2 / 2" or "#2. " pasted before a ShareGPT prompt


def prompt_key(text: str) -> str:
    """What makes two prompts the same for decontamination: case, whitespace and ShareGPT's prefixes ignored."""
    return " ".join(SHAREGPT_ARTIFACT.sub("", text).casefold().split())


def user_texts(kind: str, record: dict) -> list[str]:
    if kind == "text":
        return [record["text"]]
    messages = record["messages"] if kind == "sft" else record["prompt"]
    return [m["content"] for m in messages if m["role"] == "user"]


def converter_options(module, options: dict) -> dict:
    """A source's `options`, each one a keyword of its module's convert_rows (oasst1: languages)."""
    takes = list(inspect.signature(module.convert_rows).parameters)[1:]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise UserError(f"options {unknown}: {module.__name__} takes {takes or 'none'}")
    return dict(options)


def build(module, name: str, source, strict: bool, out_dir: Path, eval_prompts: dict[str, str]) -> dict:
    """Convert, validate and split one source into out_dir; returns the manifest's report part.

    eval_prompts: prompt_key -> the evaluation source it comes from, for the sources named in `decontaminate`.
    """
    data = read_source(source.source or module.HUB, source.split)
    kept: dict[str, list[dict]] = {kind: [] for kind in FILE_PREFIX}
    dropped, every_drop, seen = Counter(), [], set()

    def drop(item: Dropped) -> None:
        message = f"{data.where(item.line)}: {item.field}: {item.problem}"
        if strict:
            raise UserError(f"bad record: {message} (strict mode; without it such records are dropped and counted)")
        dropped[item.reason] += 1
        every_drop.append({"line": item.line, "field": item.field, "problem": item.problem, "reason": item.reason})

    rows = tqdm(data.rows, desc=name, unit=" records", disable=None, leave=False)
    for item in module.convert_rows(rows, **converter_options(module, source.options)):
        if isinstance(item, Dropped):
            drop(item)
            continue
        problem = CHECKS[item.kind](item.record)
        if problem is not None:
            drop(Dropped(item.line, *problem, reason(problem)))
            continue
        if item.kind == "pair" and item.record["chosen"] == item.record["rejected"]:
            drop(Dropped(item.line, "rejected", "is the same reply as chosen", "identical_replies"))
            continue
        key = (item.kind, repr(item.record))
        if key in seen:
            drop(Dropped(item.line, "(record)", "exact duplicate of an earlier record", "duplicate"))
            continue
        seen.add(key)
        overlap = next((eval_prompts[k] for k in map(prompt_key, user_texts(item.kind, item.record))
                        if k in eval_prompts), None)
        if overlap is not None:
            drop(Dropped(item.line, "(record)", f"has a prompt of the evaluation set {overlap!r}", "eval_overlap"))
            continue
        kept[item.kind].append(item.record)

    out = {}
    for kind, records in kept.items():
        if records:
            out.update(write_splits(out_dir, kind, records, source.eval_size, data.name))
    if not out:
        raise UserError(f"{data.name}: no usable records (dropped: {dict(dropped)}; first: {every_drop[:EXAMPLES]})")
    write_jsonl(out_dir / DROPPED, every_drop)
    examples = [f"{data.where(d['line'])}: {d['field']}: {d['problem']}" for d in every_drop[:EXAMPLES]]
    return {"input": data.origin, "license": module.LICENSE,
            "counts": {"in": len(data.rows), "out": out, "dropped": dict(sorted(dropped.items()))},
            "dropped_examples": examples}


def write_splits(out_dir: Path, kind: str, records: list[dict], eval_size: int, name: str) -> dict[str, int]:
    """Hold out eval_size records (all for -1) after a seeded shuffle; pairs also give the prompts PPO samples.

    Pairs over one prompt go to the same side, so no held-out pair shares its prompt with a training pair.
    """
    if 0 < len(records) <= eval_size:
        raise UserError(f"{name}: {len(records)} usable {kind} records, not more than eval_size={eval_size}")
    random.Random(0).shuffle(records)
    n_eval = len(records) if eval_size < 0 else eval_size
    if kind == "pair":
        pairs_per_prompt = Counter(repr(r["prompt"]) for r in records)
        held_out, n_held = set(), 0
        for key in (repr(r["prompt"]) for r in records):
            if n_held >= n_eval:
                break
            if key not in held_out:
                held_out.add(key)
                n_held += pairs_per_prompt[key]
        splits = {"eval": [r for r in records if repr(r["prompt"]) in held_out],
                  "train": [r for r in records if repr(r["prompt"]) not in held_out]}
    else:
        splits = {"eval": records[:n_eval], "train": records[n_eval:]}
    files = {f"{FILE_PREFIX[kind]}.{split}.jsonl": part for split, part in splits.items() if part}
    if kind == "pair":
        files.update({f"prompts.{split}.jsonl": unique({"prompt": p["prompt"]} for p in part)
                      for split, part in splits.items() if part})
    for file, part in files.items():
        write_jsonl(out_dir / file, part)
    return {file: len(part) for file, part in files.items()}


def unique(records: Iterable[dict]) -> list[dict]:
    seen, out = set(), []
    for record in records:
        if (key := repr(record)) not in seen:
            seen.add(key)
            out.append(record)
    return out
