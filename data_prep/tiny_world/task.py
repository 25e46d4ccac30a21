"""Vocabulary, constraints and the prompt format of the words task (the first tiny world)."""

from __future__ import annotations

import random
from dataclasses import dataclass

TOPICS = ("sun", "moon", "river", "tree", "stone", "cloud", "bird", "fish", "road", "house", "rain", "fire")
POSITIVE = ("good", "happy", "bright", "kind", "calm", "warm", "brave", "sweet", "clean", "fresh", "gentle", "proud")
NEGATIVE = ("bad", "sad", "dark", "cruel", "angry", "cold", "weak", "bitter", "dirty", "stale", "harsh", "lonely")
NEUTRAL = ("the", "a", "and", "is", "near", "under", "over", "with", "very", "some", "then", "again")
VOCABULARY = TOPICS + POSITIVE + NEGATIVE + NEUTRAL
MOOD_WORDS = {"positive": POSITIVE, "negative": NEGATIVE}

MIN_WORDS, MAX_WORDS = 3, 8
KINDS = ("words", "start", "end", "mood")
ANY = "any"


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
    """Inverse of render_prompt. Raises ValueError on text that is not a tiny-world prompt."""
    tokens = text.split()
    if len(tokens) % 2:
        raise ValueError(f"not a tiny-world prompt (odd number of words): {text!r}")
    values: dict[str, object] = {}
    for kind, value in zip(tokens[::2], tokens[1::2]):
        if kind not in KINDS:
            raise ValueError(f"not a tiny-world prompt (unknown slot {kind!r}): {text!r}")
        if value != ANY:
            values[kind] = int(value) if kind == "words" else value
    return Constraints(**values)


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
