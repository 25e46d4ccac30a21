"""The offline tiny worlds: verifiable tasks with an exact, programmatic gold judge, one task per world.

- words (task.py, judge.py, words.py): a response from a 48-word vocabulary under one to three constraints stated in
  fixed slots (`words 5 start sun end any`).
- digits (digits.py): one to three quantities of a short list of digits (`digits 3 1 4 1 ask max len` -> `max 4 len 4`).
- template (template.py): a layout filled with the values bound to its slots (`fill B , A . with A sun B moon` ->
  `moon , sun .`).

data.world.task picks the task, data.world.kinds the checks it may ask for; build.py builds any task's world. Because
the judge is exact, the tiny pipeline can show that each stage helps, not only that it runs.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from align.core.config import WorldConfig
from align.core.errors import UserError
from align.core.tokens import train_tiny_tokenizer
from data_prep.tiny_world import digits, template, words
from data_prep.tiny_world.build import build, corpus
from data_prep.tiny_world.world import Task

TASKS = {task.name: task for task in (words.TASK, digits.TASK, template.TASK)}
VERSION = 5  # the builder and the tiny tokenizer: bump when they change what is written; each task has its own version


def task_of(world: WorldConfig) -> Task:
    """The task data.world names, checked against the kinds it enables."""
    task = TASKS.get(world.task)
    if task is None:
        raise UserError(f"data.world.task={world.task!r} is not a tiny-world task; choose one of {sorted(TASKS)}")
    unknown = [kind for kind in world.kinds if kind not in task.kinds]
    if unknown or not world.kinds:
        raise UserError(f"data.world.kinds={list(world.kinds)}: the {task.name} task's checks are {list(task.kinds)}; "
                        "enable at least one of them and nothing else")
    if world.two_turn_fraction and task.follow_up is None:
        raise UserError(f"data.world.two_turn_fraction={world.two_turn_fraction}: the {task.name} task has no second "
                        f"turn; set it to 0 (tasks with one: {sorted(t.name for t in TASKS.values() if t.follow_up)})")
    return task


def world_recipe(world: WorldConfig) -> dict:
    """What of data.world decides the files, for the manifest's recipe: the options and the task's version."""
    options = asdict(world)
    if not world.two_turn_fraction:  # a world built before second turns existed stays valid
        del options["two_turn_fraction"]
    return {**options, "task_version": task_of(world).version}


def prepare(source, data, out_dir: Path) -> dict[str, int]:
    """Entry point for data_prep.prepare: every split plus the tiny tokenizer trained on the corpus."""
    counts = build(out_dir, data.world, task_of(data.world))
    train_tiny_tokenizer(corpus(out_dir), data.world.tokenizer_vocab_size, out_dir / "tokenizer")
    return counts
