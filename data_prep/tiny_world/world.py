"""What the world builder (build.py) and a world's judge need to know about a task, whatever its structure.

A task states a spec in a prompt and checks a response against it; a spec asks for one to three (or a few more) of
the task's checks, so gold scores are fractional. The task also writes responses that meet exactly a chosen subset of
the checks, which is what gives the builder its noisy demonstrator and its minimal preference pairs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def fraction_met(results: dict[str, bool], ended: bool) -> float:
    """A gold score: the fraction of the prompt's checks met; 0 for a response that never ended (no EOS)."""
    if not ended or not results:
        return 0.0
    return sum(results.values()) / len(results)


def named_values(tokens: list[str]) -> dict[str, str]:
    """Each word mapped to the word after its first occurrence: how a response that writes `name value` pairs
    (digits' `max 4`, template's `B moon`) gives its values."""
    given: dict[str, str] = {}
    for name, following in zip(tokens, tokens[1:]):
        given.setdefault(name, following)
    return given


def garbage(rng: random.Random, repeated: Sequence[str], repeats: tuple[int, int], fragmented: Sequence[str]) -> str:
    """What a drifting policy writes: one word of `repeated` said `repeats` (low, high) times, or fragments of three
    words of `fragmented`. Never empty: the data contracts reject empty turns."""
    if rng.random() < 0.5:
        return " ".join([rng.choice(repeated)] * rng.randint(*repeats))
    letters = "".join(rng.choice(fragmented) for _ in range(3))
    return " ".join(letters[i : i + rng.randint(2, 5)] for i in range(0, len(letters), 4))


def random_text(rng: random.Random, vocabulary: Sequence[str], low: int, high: int) -> str:
    """Pretraining text: low to high words of the vocabulary."""
    return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(low, high)))


@dataclass(frozen=True)
class Task:
    """One world's task. A spec is whatever the task parses a prompt into."""

    name: str  # data.world.task
    version: int  # bump whenever the task's generated files change, so older directories are not reused
    kinds: tuple[str, ...]  # every check the task knows; data.world.kinds enables a subset
    sample: Callable[[random.Random, tuple[str, ...]], Any]  # a spec asking for some of the enabled kinds
    render: Callable[[Any, tuple[str, ...]], str]  # the user message stating a spec
    parse: Callable[[str], Any]  # inverse of render; ValueError on text that is not this task's prompt
    checks: Callable[[Any], list[str]]  # the checks a spec asks for, in a fixed order
    respond: Callable[[Any, random.Random, dict[str, bool]], str]  # meets exactly the checks marked True
    degenerate: Callable[[random.Random], str]  # what a drifting policy writes: garbage or repetition, never empty
    results: Callable[[Any, str], dict[str, bool]]  # which of the spec's checks a response meets
    ptx_text: Callable[[random.Random], str]  # one line of pretraining text in the world's vocabulary
    # (spec, rng, kinds) -> (a second user turn changing the spec, the changed spec); None: single-turn only. parse
    # reads a conversation's user turns joined by line ends, as the evaluation's judge is given them.
    follow_up: Callable[[Any, random.Random, tuple[str, ...]], tuple[str, Any]] | None = None

    def score(self, prompt: str, response: str, ended: bool = True) -> float:
        """The gold judge's score (a judge module's `gold_score`)."""
        return fraction_met(self.details(prompt, response), ended)

    def details(self, prompt: str, response: str) -> dict[str, bool]:
        """Which of the prompt's checks the response meets (a judge module's `gold_details`)."""
        return self.results(self.parse(prompt), response)
