"""The words task (the first tiny world): responses that meet a chosen subset of its constraints, and its Task.

A prompt asks for a response built from a 48-word vocabulary under one to three checkable constraints, stated in
fixed slots (`words 5 start sun end any`), and a second turn that changes one of them (`again start moon`); its
vocabulary and prompt format are in task.py, its judge in judge.py.
"""

from __future__ import annotations

import random

from .judge import constraint_results
from .task import (
    KINDS,
    MAX_WORDS,
    MIN_WORDS,
    MOOD_WORDS,
    VOCABULARY,
    Constraints,
    parse_prompt,
    render_prompt,
    sample_constraints,
    sample_follow_up,
)
from .world import Task, garbage, random_text


def respond(constraints: Constraints, rng: random.Random, meet: dict[str, bool]) -> str:
    """A response that meets exactly the constraints marked True in `meet` (and misses the others)."""
    if constraints.words is None:
        n_words = rng.randint(MIN_WORDS, MAX_WORDS)
    elif meet["words"]:
        n_words = constraints.words
    else:
        n_words = rng.choice([n for n in range(MIN_WORDS, MAX_WORDS + 1) if n != constraints.words])
    mood_pool = MOOD_WORDS[constraints.mood] if constraints.mood else VOCABULARY
    words = [rng.choice(mood_pool) for _ in range(n_words)]
    for kind, index in (("start", 0), ("end", -1)):
        target = getattr(constraints, kind)
        if target is None:
            continue
        if meet[kind]:
            words[index] = target
        elif words[index] == target:
            words[index] = rng.choice([w for w in mood_pool if w != target])
    if constraints.mood is not None and not meet["mood"]:
        # Break the mood in the middle (n_words >= 3), where it cannot undo a start or end constraint.
        words[rng.randrange(1, n_words - 1)] = rng.choice([w for w in VOCABULARY if w not in mood_pool])
    return " ".join(words)


def degenerate(rng: random.Random) -> str:
    """One word repeated past any length asked for, or fragments of words."""
    return garbage(rng, VOCABULARY, (2 * MAX_WORDS, 3 * MAX_WORDS), VOCABULARY)


def ptx_text(rng: random.Random) -> str:
    return random_text(rng, VOCABULARY, MIN_WORDS, 3 * MAX_WORDS)


TASK = Task(
    name="words",
    version=3,  # bump whenever the words files change
    kinds=KINDS,
    sample=sample_constraints,
    render=render_prompt,
    parse=parse_prompt,
    checks=Constraints.active,
    respond=respond,
    degenerate=degenerate,
    results=constraint_results,
    ptx_text=ptx_text,
    follow_up=sample_follow_up,
)
