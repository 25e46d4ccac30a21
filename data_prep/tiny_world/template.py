"""The template task: a layout filled with the values bound to its slots, and its gold judge
(data.judge=tiny_world.template).

A prompt gives a layout of slots (A, B, C) and literals, then what each slot holds (`fill B , A . with A sun B moon`);
the response writes the layout out with each slot followed by its value (`B moon , A sun .`). Checks: `layout` (the
response without the slots' values is the layout) and one per slot (the word after the slot's first mention is its
value), so each check can be met or missed on its own.

Version 1 asked for the values alone in the slots' places (`moon , sun .`): a 4-layer model then has to count which
slot it is at, and never learned to (a slot was filled on a fifth to a third of the prompts). Writing the slot's name
first turns that into a lookup of the name, which is what the words and digits tasks ask of the model too.
Version 3 draws a missed slot's value from the other slots' values half the time (see `respond`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from align.core.errors import UserError

from .world import Task, garbage, named_values, random_text

SLOTS = ("A", "B", "C")
KINDS = ("layout", *SLOTS)
LITERALS = (",", ".", ";", ":", "-", "and", "or", "then")
VALUES = ("sun", "moon", "river", "tree", "stone", "cloud", "bird", "fish", "road", "house", "rain", "fire")
HEAD, WITH = "fill", "with"
VOCABULARY = (HEAD, WITH, *SLOTS, *LITERALS, *VALUES)


@dataclass(frozen=True)
class Form:
    layout: tuple[str, ...]  # slots and literals, each slot once
    values: tuple[tuple[str, str], ...]  # (slot, value) in SLOTS order

    def checks(self) -> list[str]:
        return ["layout"] + [slot for slot, _ in self.values]


def sample(rng: random.Random, kinds: tuple[str, ...]) -> Form:
    """One to three of the enabled slots, distinct values, and one to three literals, in a shuffled layout."""
    enabled = [slot for slot in SLOTS if slot in kinds]
    if "layout" not in kinds or not enabled:
        # The prompt cannot say which checks are off: the layout is always checked, the slots used are.
        raise UserError(f"data.world.kinds={list(kinds)}: the template task always checks `layout`; keep it, with "
                        "one or more of the slots A, B, C")
    slots = sorted(rng.sample(enabled, rng.randint(1, len(enabled))))
    layout = slots + [rng.choice(LITERALS) for _ in range(rng.randint(1, 3))]
    rng.shuffle(layout)
    return Form(tuple(layout), tuple(zip(slots, rng.sample(VALUES, len(slots)))))


def render(form: Form, kinds: tuple[str, ...]) -> str:
    return " ".join([HEAD, *form.layout, WITH, *(token for pair in form.values for token in pair)])


def parse(text: str) -> Form:
    """Inverse of render. Raises ValueError on text that is not a template prompt."""
    tokens = text.split()
    if not tokens or tokens[0] != HEAD or WITH not in tokens:
        raise ValueError(f"not a template prompt (no `{HEAD} ... {WITH} ...`): {text!r}")
    split = tokens.index(WITH)
    layout, bound = tuple(tokens[1:split]), tokens[split + 1 :]
    values = tuple(zip(bound[::2], bound[1::2]))
    slots = [slot for slot in layout if slot in SLOTS]
    if len(bound) % 2 or not values or [slot for slot, _ in values] != sorted(slots) or len(set(slots)) < len(slots):
        raise ValueError(f"not a template prompt (each slot of the layout bound once, in order): {text!r}")
    return Form(layout, values)


def skeleton(tokens: list[str]) -> list[str]:
    """The response with the word after each slot name (its value) taken out: what must equal the layout."""
    out, after_slot = [], False
    for token in tokens:
        if not after_slot:
            out.append(token)
        after_slot = not after_slot and token in SLOTS
    return out


def results(form: Form, response: str) -> dict[str, bool]:
    tokens = response.split()
    given = named_values(tokens)
    out = {"layout": skeleton(tokens) == list(form.layout)}
    for slot, value in form.values:
        out[slot] = given.get(slot) == value
    return out


def respond(form: Form, rng: random.Random, meet: dict[str, bool]) -> str:
    """The filled layout, with the checks marked False in `meet` missed.

    A missed slot holds, half the time, the value bound to another slot of the prompt (the binding error a model
    makes), else any other value: with random values alone a reward model can learn "a value from the prompt" instead
    of "this slot's value", and PPO then writes one slot's value into every slot. A missed layout has a literal
    swapped for another, one literal too many at the end, or one of its items (a literal, or a slot with its value)
    written twice in a row.
    """
    values = dict(form.values)
    items = []
    for item in form.layout:
        if item not in SLOTS:
            items.append([item])
            continue
        others = [v for s, v in form.values if s != item]
        anywhere = [v for v in VALUES if v != values[item]]
        wrong = rng.choice(others if others and rng.random() < 0.5 else anywhere)
        items.append([item, values[item] if meet[item] else wrong])
    if not meet["layout"]:
        literals = [i for i, item in enumerate(items) if item[0] in LITERALS]
        miss = rng.randrange(3)
        if miss == 0:
            at = rng.choice(literals)
            items[at] = [rng.choice([lit for lit in LITERALS if lit != items[at][0]])]
        elif miss == 1:
            items.append([rng.choice(LITERALS)])
        else:
            at = rng.randrange(len(items))
            items.insert(at, list(items[at]))
    return " ".join(token for item in items for token in item)


def degenerate(rng: random.Random) -> str:
    """One literal repeated past any layout's length, or fragments of values."""
    return garbage(rng, LITERALS, (8, 14), VALUES)


def ptx_text(rng: random.Random) -> str:
    return random_text(rng, VOCABULARY, 3, 24)


TASK = Task(name="template", version=3, kinds=KINDS, sample=sample, render=render, parse=parse,
            checks=Form.checks, respond=respond, degenerate=degenerate, results=results, ptx_text=ptx_text)
gold_score = TASK.score  # data.judge=tiny_world.template
gold_details = TASK.details
