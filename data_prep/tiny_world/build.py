"""Build the tiny world's data files: demonstrations, preference pairs, prompts, pretraining text.

Options come from conf/data/tiny_world.yaml (`data.world`); the stages build the world on first use.
Everything is a deterministic function of the options (same options, byte-identical files). Evaluation prompts are
drawn first and every training split excludes them, so held-out numbers are really held out.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from align.core.config import WorldConfig
from data_prep.writing import write_jsonl

from .judge import gold_score
from .task import MAX_WORDS, MIN_WORDS, MOOD_WORDS, VOCABULARY, Constraints, render_prompt, sample_constraints


def demonstrate(constraints: Constraints, rng: random.Random, p: float) -> str:
    """A noisy demonstrator: meets each constraint independently with probability p, and misses it otherwise."""
    return respond(constraints, rng, {kind: rng.random() < p for kind in constraints.active()})


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
    """What a drifting policy produces: one word repeated past any length asked for, or fragments of words.

    Never empty: the data contracts reject empty turns.
    """
    if rng.random() < 0.5:
        return " ".join([rng.choice(VOCABULARY)] * rng.randint(2 * MAX_WORDS, 3 * MAX_WORDS))
    letters = "".join(rng.choice(VOCABULARY) for _ in range(3))
    return " ".join(letters[i : i + rng.randint(2, 5)] for i in range(0, len(letters), 4))


def user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def preference_pair(prompt: str, constraints: Constraints, rng: random.Random, world: WorldConfig) -> dict | None:
    """A minimal pair (the two responses differ in exactly one constraint) or a real-vs-degenerate pair.

    Minimal pairs teach the reward model each constraint separately; random pairs dilute the signal. Degenerate
    rejected responses teach it that any real answer beats garbage, which keeps PPO from drifting into text the RM
    has never seen. Returns None for a tie.
    """
    meet = {kind: rng.random() < world.demonstrator_p for kind in constraints.active()}
    first = respond(constraints, rng, meet)
    if rng.random() < world.degenerate_fraction:
        second = degenerate(rng)
    else:
        flipped = rng.choice(constraints.active())
        second = respond(constraints, rng, {**meet, flipped: not meet[flipped]})
    first_score, second_score = gold_score(prompt, first), gold_score(prompt, second)
    if first_score == second_score:
        return None
    chosen, rejected = (first, second) if first_score > second_score else (second, first)
    if rng.random() < world.label_noise:
        chosen, rejected = rejected, chosen
    return {
        "prompt": user(prompt),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def build(out_dir: Path, world: WorldConfig) -> dict[str, int]:
    """Write every split into out_dir; returns the record count of each file."""
    rng = random.Random(world.seed)
    kinds = tuple(world.kinds)

    eval_prompts: dict[str, Constraints] = {}
    while len(eval_prompts) < world.n_eval_prompts:
        constraints = sample_constraints(rng, kinds)
        eval_prompts.setdefault(render_prompt(constraints, kinds), constraints)

    def train_prompt() -> tuple[str, Constraints]:
        while True:
            constraints = sample_constraints(rng, kinds)
            prompt = render_prompt(constraints, kinds)
            if prompt not in eval_prompts:
                return prompt, constraints

    def demo(prompt: str, constraints: Constraints) -> dict:
        response = demonstrate(constraints, rng, world.demonstrator_p)
        return {"messages": user(prompt) + [{"role": "assistant", "content": response}]}

    def pairs(sample, n: int) -> list[dict]:
        out: list[dict] = []
        while len(out) < n:
            pair = preference_pair(*sample(), rng, world)
            if pair is not None:
                out.append(pair)
        return out

    eval_items = list(eval_prompts.items())
    splits = {
        "sft.train": [demo(*train_prompt()) for _ in range(world.n_sft)],
        "sft.eval": [demo(p, c) for p, c in eval_items],
        "prefs.train": pairs(train_prompt, world.n_pairs),
        "prefs.eval": pairs(lambda: rng.choice(eval_items), world.n_eval_prompts * 2),
        "prompts.train": [{"prompt": user(train_prompt()[0])} for _ in range(world.n_prompts)],
        "prompts.eval": [{"prompt": user(p)} for p in eval_prompts],
        "ptx.train": [
            {"text": " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(MIN_WORDS, 3 * MAX_WORDS)))}
            for _ in range(world.n_ptx)
        ],
        # Last, so that every split above is drawn as before: pairs of their own for an independent audit RM.
        "prefs.audit": pairs(train_prompt, world.n_pairs),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, records in splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", records)
    return {name: len(records) for name, records in splits.items()}


def corpus(out_dir: Path) -> list[str]:
    """Text to train the tiny tokenizer on: every chat turn it will see, and the pretraining text."""
    texts = []
    for name in ("sft.train", "ptx.train"):
        with open(out_dir / f"{name}.jsonl", encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                if "messages" in record:
                    texts += [f"{m['role']}\n{m['content']}\n" for m in record["messages"]]
                else:
                    texts.append(record["text"])
    return texts
