"""Safe by default: torch.load only with weights_only=True, remote code only when the config asks, and names from
the config that become directories cannot lead writes out of the run and data directories."""

from __future__ import annotations

import re

import pytest
from helpers import REPO, tiny_config

from align.core.errors import UserError

SOURCES = [p for d in ("align", "data_prep", "benchmarks") for p in (REPO / d).rglob("*.py")]


def test_torch_load_is_always_weights_only():
    calls = [(p.name, m.group(0)) for p in SOURCES for m in re.finditer(r"torch\.load\([^)]*\)", p.read_text())]
    assert calls, "the pattern finds the calls"
    assert [c for c in calls if "weights_only=True" not in c[1]] == []


def test_remote_code_only_from_the_config():
    assert [p.name for p in SOURCES if re.search(r"trust_remote_code\s*=\s*True", p.read_text())] == []
    assert tiny_config().model.trust_remote_code is False


@pytest.mark.parametrize("override, key", [("run_name=../elsewhere", "run_name"), ("variant=a/b", "variant"),
                                           ("variant=..", "variant")])
def test_names_that_become_directories_cannot_escape(override, key):
    with pytest.raises(UserError, match=f"at key '{key}'.*plain name"):
        tiny_config(override)


def test_a_data_source_name_cannot_escape_the_data_directory():
    with pytest.raises(UserError, match=r"at key 'data.sources.\.\.'"):
        tiny_config("+data.sources={..: {prepare: tiny_world, source: null, split: train, eval_size: 1, "
                    "decontaminate: []}}")
