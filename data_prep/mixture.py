"""A contract file mixed from the same file of several sources, with weights and a length limit in tokens.

A weight says how often a part's records are taken: 1 is all of them once, 0.25 a seeded quarter, 2.5 all of them
twice and a seeded half. The mixture is shuffled (seeded), so a stage sees the parts interleaved. Records longer than
`max_tokens` in `data.tokenizer`'s tokens (as the stage will tokenize them: the chat template for conversations) are
dropped and counted per part. With `tokenizer_vocab_size`, a byte-level BPE is first trained on the mixture's text:
the tokenizer a model built from scratch (model=tiny) uses on real data.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from align.core.config import DataConfig
from align.core.errors import UserError
from align.core.hub import load_local_or_hub
from align.core.records import read_records
from align.core.tokens import add_chat_tokens, chat_ids, train_tiny_tokenizer
from data_prep.convert import FILE_PREFIX
from data_prep.writing import digest, write_jsonl

VERSION = 1
KIND = {prefix: kind for kind, prefix in FILE_PREFIX.items()}  # file name prefix -> contract kind


def mixture_recipe(name: str, data: DataConfig) -> dict:
    """The mixture's options, the tokenizer lengths are counted in, and the content of every part (by sha256)."""

    mixture = data.mixtures[name]
    parts = {part: digest(Path(data.dir) / part / mixture.file) for part in mixture.parts}
    tokenizer = data.tokenizer if mixture.max_tokens is not None else None
    return {**asdict(mixture), "tokenizer": tokenizer, "parts_sha256": parts, "version": VERSION}


def take(records: list[dict], weight: float, rng: random.Random) -> list[dict]:
    whole, fraction = divmod(weight, 1.0)
    return records * int(whole) + rng.sample(records, round(fraction * len(records)))


def build_mixture(name: str, data: DataConfig, out_dir: Path) -> dict:
    mixture = data.mixtures[name]
    kind = KIND.get(mixture.file.split(".")[0])
    if kind is None:
        raise UserError(f"file {mixture.file!r} is not a contract file ({', '.join(f'{p}.*' for p in KIND)})")
    rng, mixed, taken = random.Random(0), [], Counter()
    for part, weight in mixture.parts.items():
        path = Path(data.dir) / part / mixture.file
        if not path.is_file():
            raise UserError(f"part {part!r} has no {mixture.file} (see {path.parent}/manifest.json)")
        records, _ = read_records(path, kind, "error")
        chosen = take(records, weight, rng)
        mixed += [(part, record) for record in chosen]
        taken[part] = len(chosen)
    rng.shuffle(mixed)
    if mixture.tokenizer_vocab_size is not None:
        train_tiny_tokenizer(list(texts(kind, [r for _, r in mixed])), mixture.tokenizer_vocab_size,
                             out_dir / "tokenizer")
    too_long = Counter()
    if mixture.max_tokens is not None:
        own = mixture.tokenizer_vocab_size is not None and data.tokenizer is not None and \
            Path(data.tokenizer).resolve() == (Path(data.dir) / name / "tokenizer").resolve()
        count = token_counter(str(out_dir / "tokenizer") if own else data.tokenizer, kind)
        fits = [count(record) <= mixture.max_tokens
                for _, record in tqdm(mixed, desc=f"{name}: tokens", unit=" records", disable=None, leave=False)]
        too_long.update(part for (part, _), ok in zip(mixed, fits) if not ok)
        mixed = [pair for pair, ok in zip(mixed, fits) if ok]
    if not mixed:
        raise UserError(f"nothing left of {dict(taken)} within max_tokens={mixture.max_tokens}")
    write_jsonl(out_dir / mixture.file, [record for _, record in mixed])
    return {"counts": {"in": dict(taken), "out": {mixture.file: len(mixed)},
                       "dropped": {"too_long": dict(too_long)} if too_long else {}}}


def texts(kind: str, records: list[dict]):
    for record in records:
        if kind == "text":
            yield record["text"]
        else:
            for field in ("messages", "prompt", "chosen", "rejected"):
                yield from (m["content"] for m in record.get(field, []))


def token_counter(tokenizer_name: str | None, kind: str):
    """record -> its length in tokens as a stage sees it (a pair: its longer side with the prompt)."""
    if tokenizer_name is None:
        raise UserError("max_tokens is set but data.tokenizer is null: name the tokenizer lengths are counted in")
    from transformers import AutoTokenizer  # only here: data_prep starts without transformers

    tokenizer = add_chat_tokens(load_local_or_hub(AutoTokenizer.from_pretrained, tokenizer_name, "tokenizer",
                                                  "data.tokenizer"))

    def conversation(messages: list[dict], generation_prompt: bool = False) -> int:
        return len(chat_ids(tokenizer, messages, generation_prompt))

    if kind == "sft":
        return lambda r: conversation(r["messages"])
    if kind == "pair":
        return lambda r: max(conversation(r["prompt"] + r["chosen"]), conversation(r["prompt"] + r["rejected"]))
    if kind == "prompt":
        return lambda r: conversation(r["prompt"], generation_prompt=True)
    return lambda r: len(tokenizer(r["text"])["input_ids"])
