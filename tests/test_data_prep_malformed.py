"""Malformed source records: each is reported with its line, never crashes a converter, never reaches the output;
strict mode stops at the first one."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from align.core.errors import UserError
from align.core.tokens import IM_END, IM_START, PAD
from data_prep import conversational, lima
from data_prep.convert import build


def good(i: int, text: str) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i} {text}"}, {"role": "assistant", "content": f"a{i}"}]}


def turns(*roles_and_contents) -> bytes:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in roles_and_contents]}).encode()


MALFORMED = {  # one line each, none of them a usable record
    "missing field": [b'{"msgs": []}', b"{}", b'{"messages_": [{"role": "user", "content": "x"}]}'],
    "wrong type": [b'{"messages": "hi"}', b'{"messages": [1, 2]}', b"[1, 2]", b'"text"', b"3", b"null",
                   turns(("user", "x"), ("assistant", 3)), b'{"text": 7}'],
    "empty turn": [turns(("user", "x"), ("assistant", "  ")), turns(("user", ""), ("assistant", "y")),
                   b'{"messages": []}', b'{"text": " \\n "}'],
    "broken JSON": [b'{"messages": [{"role": "user", "content": "x"}', b"{oops", b'{"messages": [}'],
    "invalid UTF-8": [b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', b"\xc3\x28", b"\x80abc"],
    "wrong role order": [turns(("user", "x"), ("user", "y"), ("assistant", "z")),
                         turns(("assistant", "x"), ("user", "y")), turns(("user", "x")),
                         turns(("user", "x"), ("assistant", "y"), ("user", "z")),
                         turns(("user", "x"), ("robot", "y"))],
}
BAD_LINES = [line for lines in MALFORMED.values() for line in lines]


def junk_is_bad(line: bytes) -> bool:
    """Random bytes count as a malformed line unless they happen to be blank, a JSON object, or start with a
    byte-order mark (skipped before a file's first line)."""
    if not line.strip() or line.startswith(b"\xef\xbb\xbf"):
        return False
    try:
        return not isinstance(json.loads(line.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return True


LINE = st.one_of(
    # NUL, lone surrogates and the chat template's markers make a turn bad (align/core/contracts.py); hypothesis
    # draws string constants from the code under test, so the markers do turn up
    st.tuples(st.just("good"), st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                                       max_size=20).filter(lambda t: not any(m in t for m in (IM_START, IM_END, PAD)))),
    st.tuples(st.just("bad"), st.sampled_from(BAD_LINES)),
    st.tuples(st.just("bad"), st.binary(max_size=30).filter(lambda b: b"\n" not in b and junk_is_bad(b))),
)


def convert(tmp_path, lines: list[bytes], strict: bool, module=conversational, suffix=".jsonl"):
    path = tmp_path / f"in{suffix}"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    source = SimpleNamespace(options={}, source=str(path), split="train", eval_size=0)
    return path, out, build(module, "test", source, strict, out, {})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINE, min_size=1, max_size=15))
def test_property_bad_lines_are_reported_by_line_and_never_reach_the_output(tmp_path_factory, spec):
    tmp_path = tmp_path_factory.mktemp("m")
    lines, good_records, bad_line_numbers = [], [], []
    for number, (what, value) in enumerate(spec, start=1):
        if what == "good":
            good_records.append(good(number, value))
            lines.append(json.dumps(good_records[-1]).encode())
        else:
            lines.append(value)
            bad_line_numbers.append(number)
    if not good_records:
        with pytest.raises(UserError, match="no usable records"):
            convert(tmp_path, lines, strict=False)
        return
    path, out, report = convert(tmp_path, lines, strict=False)
    written = [json.loads(line) for line in (out / "sft.train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(map(json.dumps, written)) == sorted(map(json.dumps, good_records))
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    assert [d["line"] for d in dropped] == bad_line_numbers
    assert all(d["field"] and d["problem"] for d in dropped)
    assert sum(report["counts"]["dropped"].values()) == len(bad_line_numbers)
    for example, line in zip(report["dropped_examples"], bad_line_numbers):
        assert example.startswith(f"{path}:{line}: ")

    strict_dir = tmp_path_factory.mktemp("s")
    if bad_line_numbers:
        with pytest.raises(UserError, match=f"in.jsonl:{bad_line_numbers[0]}: "):
            convert(strict_dir, lines, strict=True)
        assert not (strict_dir / "out" / "sft.train.jsonl").exists()
    else:
        convert(strict_dir, lines, strict=True)


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_strict_mode_names_file_line_and_field(tmp_path, kind):
    lines = [json.dumps(good(1, "")).encode(), MALFORMED[kind][0], json.dumps(good(3, "")).encode()]
    with pytest.raises(UserError) as error:
        convert(tmp_path, lines, strict=True)
    message = str(error.value)
    assert f"{tmp_path / 'in.jsonl'}:2: " in message
    field = message.split(":2: ")[1].split(":")[0]
    assert field in ("(line)", "(record)", "messages") or field.startswith("messages[")


def test_a_source_converter_reports_its_own_fields(tmp_path):
    """LIMA: a history entry that is not a [user, assistant] pair, a non-string turn, a missing output; gzip."""
    lines = [json.dumps({"instruction": "q", "output": "a", "history": []}).encode(),
             json.dumps({"instruction": "q", "output": "a", "history": [["only one"]]}).encode(),
             json.dumps({"conversations": ["q", 5]}).encode(),
             json.dumps({"instruction": "q", "history": []}).encode()]
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    (tmp_path / "out").mkdir()
    source = SimpleNamespace(options={}, source=str(path), split="train", eval_size=0)
    report = build(lima, "lima", source, False, tmp_path / "out", {})
    assert report["counts"]["dropped"] == {"schema": 3}
    assert [e.split(": ", 1)[1] for e in report["dropped_examples"]] == [
        "history[0]: must be a [user, assistant] pair", "turn 1: must be a string, got int", "output: is missing"]
    assert report["dropped_examples"][0].startswith(f"{path}:2: ")


@pytest.mark.parametrize("content, line", [(b'[\n{"messages": []},\n{"messages": [}\n]', 3),
                                           (b'[\n{"text": "a"}\n{"text": "b"}\n]', 3),
                                           (b'[\n{"text": "a"},\n{"text": "\xff"}\n]', 3)])
def test_a_broken_json_array_stops_with_its_line_in_either_mode(tmp_path, content, line):
    path = tmp_path / "in.json"
    path.write_bytes(content)
    (tmp_path / "out").mkdir()
    source = SimpleNamespace(options={}, source=str(path), split="train", eval_size=0)
    with pytest.raises(UserError, match=f"in.json:{line}: "):
        build(conversational, "test", source, False, tmp_path / "out", {})
