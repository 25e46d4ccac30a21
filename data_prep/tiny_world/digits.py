"""The digits task: one to three quantities of a short list of digits, and its gold judge
(data.judge=tiny_world.digits).

A prompt states the list and the quantities asked for, in a fixed order (`digits 3 1 4 1 ask max len`); the response
names each asked quantity and gives its value (`max 4 len 4`). One check per asked quantity: the value given right
after its name's first occurrence is right. The quantities are ones a tiny transformer can compute by looking, not by
adding: the first and last digit, the length, the largest and the smallest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .world import Task, garbage, named_values, random_text

KINDS = ("first", "last", "len", "max", "min")
MIN_LEN, MAX_LEN = 3, 7
HEAD, ASK = "digits", "ask"
VOCABULARY = (HEAD, ASK, *KINDS, *(str(d) for d in range(10)))


@dataclass(frozen=True)
class Question:
    numbers: tuple[int, ...]  # digits 0-9
    asked: tuple[str, ...]  # in KINDS order

    def checks(self) -> list[str]:
        return list(self.asked)


def value(kind: str, numbers: tuple[int, ...]) -> int:
    return {"first": numbers[0], "last": numbers[-1], "len": len(numbers), "max": max(numbers),
            "min": min(numbers)}[kind]


def sample(rng: random.Random, kinds: tuple[str, ...]) -> Question:
    numbers = tuple(rng.randrange(10) for _ in range(rng.randint(MIN_LEN, MAX_LEN)))
    chosen = rng.sample(kinds, rng.randint(1, min(3, len(kinds))))
    return Question(numbers, tuple(kind for kind in KINDS if kind in chosen))


def render(question: Question, kinds: tuple[str, ...]) -> str:
    return " ".join([HEAD, *map(str, question.numbers), ASK, *question.asked])


def parse(text: str) -> Question:
    """Inverse of render. Raises ValueError on text that is not a digits prompt."""
    tokens = text.split()
    if not tokens or tokens[0] != HEAD or ASK not in tokens:
        raise ValueError(f"not a digits prompt (no `{HEAD} ... {ASK} ...`): {text!r}")
    split = tokens.index(ASK)
    numbers, asked = tokens[1:split], tuple(tokens[split + 1 :])
    if not numbers or not all(len(n) == 1 and n.isdigit() for n in numbers):
        raise ValueError(f"not a digits prompt (the list must be digits 0-9): {text!r}")
    if not asked or len(set(asked)) < len(asked) or not set(asked) <= set(KINDS):
        raise ValueError(f"not a digits prompt (ask one or more of {', '.join(KINDS)} once each): {text!r}")
    return Question(tuple(map(int, numbers)), asked)


def results(question: Question, response: str) -> dict[str, bool]:
    """Which asked quantities the response gets right: the word after the quantity's first mention is its value."""
    given = named_values(response.split())
    return {kind: given.get(kind) == str(value(kind, question.numbers)) for kind in question.asked}


def respond(question: Question, rng: random.Random, meet: dict[str, bool]) -> str:
    """Every asked quantity with its value, right for the ones marked True in `meet` and wrong for the others.

    A wrong digit is half the time another of the list's digits (the mistake a model makes), else any other digit.
    Only the list's digits would make every wrong max smaller than the right one (and every wrong min larger): a
    reward model can then learn "larger is better" instead of the check, and PPO exploits it with a 9 (a 0) for any
    list."""
    parts = []
    for kind in question.asked:
        right = value(kind, question.numbers)
        anywhere = [n for n in (range(MIN_LEN, MAX_LEN + 1) if kind == "len" else range(10)) if n != right]
        in_list = sorted(set(question.numbers) - {right}) if kind != "len" else []
        wrong = in_list if in_list and rng.random() < 0.5 else anywhere
        parts += [kind, str(right if meet[kind] else rng.choice(wrong))]
    return " ".join(parts)


def degenerate(rng: random.Random) -> str:
    """One word repeated, or fragments of the quantities' names: never a name followed by a value."""
    return garbage(rng, VOCABULARY, (8, 14), KINDS + (HEAD, ASK))


def ptx_text(rng: random.Random) -> str:
    return random_text(rng, VOCABULARY, 3, 24)


TASK = Task(name="digits", version=2, kinds=KINDS, sample=sample, render=render, parse=parse,
            checks=Question.checks, respond=respond, degenerate=degenerate, results=results, ptx_text=ptx_text)
gold_score = TASK.score  # data.judge=tiny_world.digits
gold_details = TASK.details
