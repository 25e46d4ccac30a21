"""Vocabulary, constraints and the prompt format of the words task (the first tiny world)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

TOPICS = ("sun", "moon", "river", "tree", "stone", "cloud", "bird", "fish", "road", "house", "rain", "fire")
POSITIVE = ("good", "happy", "bright", "kind", "calm", "warm", "brave", "sweet", "clean", "fresh", "gentle", "proud")
NEGATIVE = ("bad", "sad", "dark", "cruel", "angry", "cold", "weak", "bitter", "dirty", "stale", "harsh", "lonely")
NEUTRAL = ("the", "a", "and", "is", "near", "under", "over", "with", "very", "some", "then", "again")
VOCABULARY = TOPICS + POSITIVE + NEGATIVE + NEUTRAL
MOOD_WORDS = {"positive": POSITIVE, "negative": NEGATIVE}

MIN_WORDS, MAX_WORDS = 3, 8
KINDS = ("words", "start", "end", "mood")
ANY = "any"
FOLLOW_UP = "again"  # `again start moon`: the request before, with one slot changed


@dataclass(frozen=True)
class Constraints:
    """What a prompt asks for; None means the slot is free ('any')."""

    words: int | None = None
    start: str | None = None
    end: str | None = None
    mood: str | None = None

    def active(self) -> list[str]:
        return [kind for kind in KINDS if getattr(self, kind) is not None]


def render_prompt(constraints: Constraints, kinds: tuple[str, ...]) -> str:
    """The user message: every enabled slot is stated, free ones as 'any' (easier to learn than free text)."""
    parts = []
    for kind in kinds:
        value = getattr(constraints, kind)
        parts += [kind, ANY if value is None else str(value)]
    return " ".join(parts)


def parse_prompt(text: str) -> Constraints:
    """Inverse of render_prompt. A conversation's user turns, one per line, are read in order: the first states every
    slot, each later one (`again start moon`) changes one. Raises ValueError on text that is not a tiny-world prompt."""
    first, *changes = text.split("\n")
    constraints = Constraints(**slot_values(first.split(), text))
    for change in changes:
        words = change.split()
        if len(words) != 3 or words[0] != FOLLOW_UP:
            raise ValueError(f"not a tiny-world follow-up ({FOLLOW_UP} <slot> <value>): {change!r}")
        constraints = replace(constraints, **slot_values(words[1:], text))
    return constraints


def slot_values(tokens: list[str], text: str) -> dict[str, object]:
    """`slot value` pairs as the fields of Constraints (None for a free slot)."""
    if len(tokens) % 2:
        raise ValueError(f"not a tiny-world prompt (odd number of words): {text!r}")
    values: dict[str, object] = {}
    for kind, value in zip(tokens[::2], tokens[1::2]):
        if kind not in KINDS:
            raise ValueError(f"not a tiny-world prompt (unknown slot {kind!r}): {text!r}")
        values[kind] = None if value == ANY else int(value) if kind == "words" else value
    return values


def sample_constraints(rng: random.Random, kinds: tuple[str, ...]) -> Constraints:
    """One to three of the enabled constraints, with values that can all be met at once."""
    chosen = rng.sample(kinds, rng.randint(1, min(3, len(kinds))))
    mood = rng.choice(sorted(MOOD_WORDS)) if "mood" in chosen else None
    # With a mood, the start/end words must come from the mood's words or the prompt would be unsatisfiable.
    pool = MOOD_WORDS[mood] if mood else VOCABULARY
    return Constraints(
        words=rng.randint(MIN_WORDS, MAX_WORDS) if "words" in chosen else None,
        start=rng.choice(pool) if "start" in chosen else None,
        end=rng.choice(pool) if "end" in chosen else None,
        mood=mood,
    )


def sample_follow_up(constraints: Constraints, rng: random.Random, kinds: tuple[str, ...]) -> tuple[str, Constraints]:
    """A second user turn that changes one of the enabled slots other than the mood to a new value (`again start
    moon`, `again words 4`), and the constraints it leaves; within the prompt's mood, so that they can all be met."""
    kind = rng.choice([k for k in kinds if k != "mood"])
    pool = MOOD_WORDS[constraints.mood] if constraints.mood else VOCABULARY
    current = getattr(constraints, kind)
    options = [n for n in range(MIN_WORDS, MAX_WORDS + 1) if n != current] if kind == "words" else \
        [w for w in pool if w != current]
    value = rng.choice(options)
    return f"{FOLLOW_UP} {kind} {value}", replace(constraints, **{kind: value})
