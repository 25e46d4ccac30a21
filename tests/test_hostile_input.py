"""Hostile input to the stages' record reader: every case ends in a named error (file, line, field) or a counted drop,
never a traceback or a silent acceptance. One row per case: the bytes of a line, and what the reader must say."""

from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from align.core.errors import UserError
from align.core.records import read_records

GOOD_PAIR = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
             "rejected": [{"role": "assistant", "content": "go away"}]}
GOOD_SFT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def line(record: dict) -> bytes:
    return json.dumps(record).encode() + b"\n"


def sft_with(content: str) -> bytes:
    # json.dumps escapes what it cannot write as UTF-8 (a lone surrogate becomes "\ud800"), as a scraper's JSON would
    return line({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]})


CASES = [  # (name, kind, bad line, the message's field and problem)
    ("invalid UTF-8", "sft", b'{"messages": "\xff\xfe"}\n', "(line): invalid UTF-8 at byte 15"),
    ("lone surrogate", "sft", sft_with("ok \ud800"), "messages[1].content: contains a lone UTF-16 surrogate"),
    ("zero-width spaces only", "sft", sft_with("\u200b\u200b"), "messages[1].content: is empty or whitespace"),
    ("escaped NUL", "sft", sft_with("a\x00b"), "messages[1].content: contains a NUL character"),
    ("a chat marker inside a turn", "sft", sft_with("yo <|im_start|>user\nx"),
     "messages[1].content: contains <|im_start|>, the chat template's own marker"),
    ("margin NaN", "pair", line({**GOOD_PAIR, "margin": float("nan")}), "margin: must be a finite number, got nan"),
    ("margin Infinity", "pair", line({**GOOD_PAIR, "margin": float("inf")}), "margin: must be a finite number"),
    ("margin true", "pair", line({**GOOD_PAIR, "margin": True}), "margin: must be a number, got bool"),
    ("deeply nested JSON", "sft", b"[" * 100_000 + b"]" * 100_000 + b"\n", "(line): JSON nested too deeply"),
    ("not an object", "sft", b"[1, 2]\n", "(record): must be a JSON object"),
]


@pytest.mark.parametrize(("name", "kind", "bad", "message"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_line_is_named_or_dropped_and_counted(tmp_path, name, kind, bad, message):
    good = line(GOOD_SFT if kind == "sft" else GOOD_PAIR)
    path = tmp_path / "data.jsonl"
    path.write_bytes(good + bad + good)
    with pytest.raises(UserError, match="malformed") as error:
        read_records(path, kind, "error")
    assert f"{path}:2: {message}" in str(error.value)
    records, report = read_records(path, kind, "drop")
    assert len(records) == 2 and sum(report.dropped.values()) == 1


def test_a_byte_order_mark_does_not_cost_the_first_record(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + line(GOOD_SFT) + line(GOOD_SFT))
    records, report = read_records(path, "sft", "error")
    assert len(records) == 2 and not report.dropped


def test_a_directory_given_as_data_is_named_as_such(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        read_records(tmp_path, "sft", "error")


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=400), flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                                                   max_size=4), bom=st.booleans())
def test_property_a_corrupted_file_ends_in_a_named_error_or_a_counted_drop(tmp_path_factory, cut, flips, bom):
    """Truncation, byte flips (invalid UTF-8, broken JSON, wrong types) and a BOM: the reader keeps good records,
    counts every dropped line, and raises nothing but a UserError."""
    data = bytearray((b"\xef\xbb\xbf" if bom else b"") + b"".join(line(GOOD_SFT) for _ in range(5)))
    for position, byte in flips:
        data[position % len(data)] = byte
    path = tmp_path_factory.mktemp("corrupt") / "data.jsonl"
    path.write_bytes(bytes(data[: max(cut, 1)]))
    lines = [raw for raw in bytes(data[: max(cut, 1)]).split(b"\n") if raw.decode("utf-8", "replace").strip()]
    try:
        records, report = read_records(path, "sft", "drop")
    except UserError as error:
        assert "no usable sft records" in str(error)
        return
    assert len(records) + sum(report.dropped.values()) == len(lines)


def test_an_edited_input_is_never_answered_with_the_old_build(tmp_path):
    """`python -m data_prep MODULE FILE --out DIR` again after FILE changed: a refusal naming the file, not the old
    records with exit 0."""
    from helpers import run_module

    source, out = tmp_path / "alpaca.json", tmp_path / "out"
    source.write_text(json.dumps([{"instruction": "say hi", "input": "", "output": "hi there"}]))
    assert run_module("data_prep", "alpaca", str(source), "--out", str(out)).returncode == 0
    assert run_module("data_prep", "alpaca", str(source), "--out", str(out)).returncode == 0  # unchanged: reused
    source.write_text(json.dumps([{"instruction": "say hi", "input": "", "output": "hi there"},
                                  {"instruction": "say yo", "input": "", "output": "yo"}]))
    result = run_module("data_prep", "alpaca", str(source), "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert f"from {source} before that file changed" in result.stderr and "--out" in result.stderr
    assert "Traceback" not in result.stderr and len((out / "sft.train.jsonl").read_text().splitlines()) == 1


def test_a_lone_surrogate_is_dropped_by_data_prep_and_named_in_strict_mode(tmp_path):
    from helpers import run_module

    source = tmp_path / "alpaca.json"
    source.write_text('[{"instruction": "say hi", "input": "", "output": "hi \\ud800"},'
                      ' {"instruction": "say yo", "input": "", "output": "yo"}]')
    strict = run_module("data_prep", "alpaca", str(source), "--out", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 2 and f"{source}:1: messages[1].content: contains a lone UTF-16" in strict.stderr
    assert not any(p.name.startswith("strict") for p in tmp_path.iterdir())  # no partial directory left behind
    lenient = run_module("data_prep", "alpaca", str(source), "--out", str(tmp_path / "out"))
    assert lenient.returncode == 0, lenient.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["out"] == {"sft.train.jsonl": 1} and manifest["counts"]["dropped"] == {"schema": 1}


ALPACA = json.dumps([{"instruction": "say hi", "input": "", "output": "hi there"}]).encode()
CLI_CASES = [  # (name, files to make: name -> bytes or None for a directory, arguments, message)
    ("truncated gzip", {"in.json.gz": gzip.compress(ALPACA)[:20]}, ["alpaca", "in.json.gz", "--out", "out"],
     "in.json.gz: (file): not a readable gzip file"),
    ("gz that is not gzip", {"in.json.gz": ALPACA}, ["alpaca", "in.json.gz", "--out", "out"],
     "not a readable gzip file"),
    ("a directory as the input", {"in": None}, ["alpaca", "in", "--out", "out"], "in is a directory"),
    ("a missing input file", {}, ["alpaca", "missing.json", "--out", "out"], "no such file: "),
    ("an unknown module", {"in.json": ALPACA}, ["nosuch", "in.json", "--out", "out"],
     "unknown data_prep module 'nosuch'; one of: alpaca"),
    ("--out naming a file", {"in.json": ALPACA, "out": b"x"}, ["alpaca", "in.json", "--out", "out"],
     "out is a file: name a new or empty directory"),
    ("--out a non-empty directory without a manifest", {"in.json": ALPACA, "out": None, "out/mine.txt": b"x"},
     ["alpaca", "in.json", "--out", "out"], "holds files data_prep did not write"),
    ("a negative eval size", {"in.json": ALPACA}, ["alpaca", "in.json", "--out", "out", "--eval-size", "-5"],
     "--eval-size -5"),
    ("an option without a value", {"in.json": ALPACA}, ["alpaca", "in.json", "--out", "out", "--option", "languages"],
     "--option languages: write KEY=VALUE"),
    ("an option that is not YAML", {"in.json": ALPACA},
     ["alpaca", "in.json", "--out", "out", "--option", "languages=[en"], "the value is not YAML"),
    ("an option the module does not take", {"in.json": ALPACA},
     ["alpaca", "in.json", "--out", "out", "--option", "languages=[en]"], "data_prep.alpaca takes none"),
]


@pytest.mark.parametrize(("name", "files", "arguments", "message"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_data_prep_refuses_bad_input_by_name_and_leaves_nothing_behind(tmp_path, name, files, arguments, message):
    from helpers import run_module

    for relative, content in files.items():
        if content is None:
            (tmp_path / relative).mkdir()
        else:
            (tmp_path / relative).write_bytes(content)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = run_module("data_prep", *(str(tmp_path / a) if a in ("in.json.gz", "in", "missing.json", "in.json", "out")
                                       else a for a in arguments))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no .tmp directory, no output


def test_a_json_array_with_a_byte_order_mark_converts(tmp_path):
    from helpers import run_module

    (tmp_path / "in.json").write_bytes(b"\xef\xbb\xbf" + ALPACA)
    result = run_module("data_prep", "alpaca", str(tmp_path / "in.json"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "out" / "sft.train.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("rejected", ["hello", "  hello\n", "hello "])
def test_a_pair_whose_sides_are_the_same_text_is_named(tmp_path, rejected):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(line(GOOD_PAIR) + line({**GOOD_PAIR, "rejected": [{"role": "assistant", "content": rejected}]}))
    with pytest.raises(UserError, match=f"{path}:2: rejected: is the chosen reply"):
        read_records(path, "pair", "error")


@pytest.mark.parametrize("name", ["/no/such/tokenizer", "./missing", "runs/tiny/sft/final"])
def test_a_missing_local_model_or_tokenizer_is_named_as_missing_not_sent_to_the_hub(name):
    from align.core.hub import load_local_or_hub

    def load(name, local_files_only):
        raise AssertionError("nothing may be loaded for a path that does not exist")

    with pytest.raises(UserError, match=f"no such directory {name} \\(model.tokenizer"):
        load_local_or_hub(load, name, "tokenizer", "model.tokenizer")


def test_extra_fields_of_mixed_types_never_reach_a_trainers_table():
    """A file may carry fields of its own (a source, an id, a message's name) whose type changes from record to
    record; pyarrow, under every TRL trainer's dataset, refuses such a column."""
    import pyarrow
    from datasets import Dataset

    from align.core.contracts import training_row

    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    records = [{"messages": [{**turns[0], "name": 1}, turns[1]], "meta": 1},
               {"messages": [{**turns[0], "name": "x"}, turns[1]], "meta": "x"}]
    with pytest.raises((pyarrow.ArrowInvalid, pyarrow.ArrowTypeError)):  # what the stages used to hand TRL
        Dataset.from_list(records)
    table = Dataset.from_list([training_row(r, "sft") for r in records])
    assert table.column_names == ["messages"] and table[1]["messages"] == turns
    pair = {"prompt": turns[:1], "chosen": turns[1:], "rejected": [{"role": "assistant", "content": "no"}],
            "margin": 1.0, "source": 3}
    assert training_row(pair, "pair") == {k: pair[k] for k in ("prompt", "chosen", "rejected", "margin")}
