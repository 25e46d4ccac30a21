"""Build a tiny world's data files: demonstrations, preference pairs, prompts, pretraining text, for any task.

Options come from the recipe's `data.world` (conf/data/tiny_world.yaml, digits.yaml, template.yaml), the task from
data.world.task (world.py says what a task provides); the stages build the world on first use.
Everything is a deterministic function of the options (same options, byte-identical files). Evaluation prompts are
drawn first and every training split excludes them, so held-out numbers are really held out.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from align.core.config import WorldConfig
from align.core.contracts import PLAIN_TEXT_SEPARATOR, judged_prompt, plain_text_example
from data_prep.writing import write_jsonl

from .world import Task


def demonstrate(task: Task, spec, rng: random.Random, p: float) -> str:
    """A noisy demonstrator: meets each check independently with probability p, and misses it otherwise."""
    return task.respond(spec, rng, {kind: rng.random() < p for kind in task.checks(spec)})


def user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def preference_pair(task: Task, prompt: str, spec, rng: random.Random, world: WorldConfig) -> dict | None:
    """A minimal pair (the two responses differ in exactly one check) or a real-vs-degenerate pair.

    Minimal pairs teach the reward model each check separately; random pairs dilute the signal. Degenerate
    rejected responses teach it that any real answer beats garbage, which keeps PPO from drifting into text the RM
    has never seen. Returns None for a tie.
    """
    meet = {kind: rng.random() < world.demonstrator_p for kind in task.checks(spec)}
    first = task.respond(spec, rng, meet)
    if rng.random() < world.degenerate_fraction:
        second = task.degenerate(rng)
    else:
        flipped = rng.choice(task.checks(spec))
        second = task.respond(spec, rng, {**meet, flipped: not meet[flipped]})
    first_score, second_score = task.score(prompt, first), task.score(prompt, second)
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


def first_turn(task: Task, prompt: str, spec, rng: random.Random, world: WorldConfig) -> tuple[list[dict], str, object]:
    """A first request, the demonstrator's answer and a follow-up that changes it: (the conversation so far, ending
    on the follow-up; what the judge reads of it; the changed spec)."""
    change, changed = task.follow_up(spec, rng, tuple(world.kinds))
    answer = demonstrate(task, spec, rng, world.demonstrator_p)
    conversation = [*user(prompt), {"role": "assistant", "content": answer}, *user(change)]
    return conversation, judged_prompt(conversation), changed


def two_turn_demo(task: Task, prompt: str, spec, rng: random.Random, world: WorldConfig) -> dict:
    conversation, _, changed = first_turn(task, prompt, spec, rng, world)
    answer = demonstrate(task, changed, rng, world.demonstrator_p)
    return {"messages": [*conversation, {"role": "assistant", "content": answer}]}


def two_turn_pair(task: Task, prompt: str, spec, rng: random.Random, world: WorldConfig) -> dict | None:
    """A preference pair on the second turn, made as preference_pair makes one on the first."""
    conversation, judged, changed = first_turn(task, prompt, spec, rng, world)
    pair = preference_pair(task, judged, changed, rng, world)
    return None if pair is None else {**pair, "prompt": conversation}


def two_turn_prompt(task: Task, prompt: str, spec, rng: random.Random, world: WorldConfig) -> dict:
    return {"prompt": first_turn(task, prompt, spec, rng, world)[0]}


def pretraining_document(task: Task, sample, rng: random.Random, world: WorldConfig) -> dict:
    """A document of the world's web: text in its vocabulary, or, with probability world.pretrain_task_fraction, a
    page of two to five solved prompts (held-out prompts never among them) written with a care drawn for the page
    (each check met with a probability uniform in [0, 1]). The page's care is the latent a few solved examples
    reveal, so a base model pretrained here can learn from examples in its context (the GPT-3 step)."""
    if rng.random() >= world.pretrain_task_fraction:
        return {"text": task.ptx_text(rng)}
    care = rng.random()
    examples = []
    for _ in range(rng.randint(2, 5)):
        prompt, spec = sample()
        examples.append(plain_text_example(prompt, demonstrate(task, spec, rng, care)))
    return {"text": PLAIN_TEXT_SEPARATOR.join(examples)}


def build(out_dir: Path, world: WorldConfig, task: Task) -> dict[str, int]:
    """Write every split of `task`'s world into out_dir; returns the record count of each file."""
    rng = random.Random(world.seed)
    kinds = tuple(world.kinds)

    eval_prompts: dict[str, object] = {}
    while len(eval_prompts) < world.n_eval_prompts:
        spec = task.sample(rng, kinds)
        eval_prompts.setdefault(task.render(spec, kinds), spec)

    def train_prompt() -> tuple[str, object]:
        while True:
            spec = task.sample(rng, kinds)
            prompt = task.render(spec, kinds)
            if prompt not in eval_prompts:
                return prompt, spec

    def demo(prompt: str, spec) -> dict:
        response = demonstrate(task, spec, rng, world.demonstrator_p)
        return {"messages": user(prompt) + [{"role": "assistant", "content": response}]}

    def pairs(sample, n: int) -> list[dict]:
        out: list[dict] = []
        while len(out) < n:
            pair = preference_pair(task, *sample(), rng, world)
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
        "ptx.train": [{"text": task.ptx_text(rng)} for _ in range(world.n_ptx)],
        # Last, so that every split above is drawn as before: pairs of their own for an independent audit RM.
        "prefs.audit": pairs(train_prompt, world.n_pairs),
    }
    # Then plain text to pretrain a base model on (align.pretrain), drawn after all the rest for the same reason.
    splits["pretrain.train"] = [pretraining_document(task, train_prompt, rng, world)
                                for _ in range(world.n_pretrain)]
    splits["pretrain.eval"] = [pretraining_document(task, train_prompt, rng, world)
                               for _ in range(world.n_pretrain // 20)]
    # Then the second turns (where asked for), last again: a share more demonstrations, pairs and training prompts
    # that go on with a follow-up after a first answer, and a follow-up for every evaluation prompt.
    if world.two_turn_fraction:
        for name, n, make in (("sft.train", world.n_sft, two_turn_demo), ("prefs.train", world.n_pairs, two_turn_pair),
                              ("prompts.train", world.n_prompts, two_turn_prompt)):
            records = splits[name]
            while len(records) < n + round(world.two_turn_fraction * n):
                record = make(task, *train_prompt(), rng, world)
                if record is not None:
                    records.append(record)
        for record, (_, spec) in zip(splits["prompts.eval"], eval_items):
            record["followups"] = [task.follow_up(spec, rng, kinds)[0]]
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
