"""Malformed records are reported by file, line and field, and never silently dropped."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from align.core.errors import UserError
from align.core.records import read_records

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    "bad_line, field",
    [
        ('{"messages": [{"role": "user", "content": "hi"}', "(line)"),  # broken JSON
        ('{"text": "no messages"}', "messages"),
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]}',
         "messages[1].content"),
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}', "messages[1].role"),
        ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}',
         "messages[0].content"),
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]}', "messages[1].role"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "messages[0].role"),  # no assistant turn
        ("[1, 2]", "(record)"),
    ],
)
def test_error_mode_names_file_line_and_field(tmp_path, bad_line, field):
    path = write_lines(tmp_path / "sft.jsonl", [json.dumps(GOOD), json.dumps(GOOD), bad_line])
    with pytest.raises(UserError) as error:
        read_records(path, "sft", "error")
    assert f"{path}:3: {field}:" in str(error.value)


PROMPT = {"prompt": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("extra, field", [
    ({"followups": "again"}, "followups"),
    ({"followups": ["again", 2]}, "followups[1]"),
    ({"followups": ["again", "\u200b "]}, "followups[1]"),
    ({"category": ["writing"]}, "category"),
])
def test_a_prompts_followups_and_category_are_checked(tmp_path, extra, field):
    good = {**PROMPT, "followups": ["and then?"], "id": 81, "category": "writing"}
    path = write_lines(tmp_path / "prompts.jsonl", [json.dumps(good), json.dumps({**PROMPT, **extra})])
    with pytest.raises(UserError) as error:
        read_records(path, "prompt", "error")
    assert f"{path}:2: {field}:" in str(error.value)
    records, _ = read_records(write_lines(tmp_path / "good.jsonl", [json.dumps(good)]), "prompt", "error")
    assert records == [good]


def test_drop_mode_counts_every_dropped_record(tmp_path):
    lines = [json.dumps(GOOD), "{oops", json.dumps({"messages": []}), json.dumps(GOOD)]
    records, report = read_records(write_lines(tmp_path / "sft.jsonl", lines), "sft", "drop")
    assert len(records) == report.kept == 2
    assert sum(report.dropped.values()) == 2
    assert any(":2: (line)" in p for p in report.first_problems)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.just(json.dumps(GOOD)),
    st.text(max_size=30).filter(lambda s: "\n" not in s and "\r" not in s),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                 lambda children: st.lists(children, max_size=3) | st.dictionaries(
                     st.sampled_from(["messages", "role", "content", "text"]), children, max_size=3),
                 max_leaves=8).map(json.dumps),
), min_size=1, max_size=12))
def test_property_every_line_is_kept_dropped_or_reported(tmp_path_factory, lines):
    path = write_lines(tmp_path_factory.mktemp("p") / "sft.jsonl", lines)
    non_blank = sum(1 for line in lines if line.strip())
    try:
        records, report = read_records(path, "sft", "drop")
    except UserError as error:  # only when nothing usable is left
        assert "no usable" in str(error)
        return
    assert report.kept + sum(report.dropped.values()) == non_blank
