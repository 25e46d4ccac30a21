"""Conversations that go on (MT-bench's second turn): a held-out prompt's follow-ups, each asked after the model's own
answer to the turns before, and what the task's judge reads of such a turn."""

from __future__ import annotations

from align.core.contracts import judged_prompt


def turn_label(label: str, turn: int) -> str:
    """The evaluation row of a model's answers at one turn: the model's own label for the first."""
    return label if turn == 1 else f"{label} turn {turn}"


def next_turn(conversations: dict[int, list[dict]], answers: dict[int, str], followups: list[list[str]],
              turn: int) -> dict[int, list[dict]]:
    """The conversations of `turn` (2: the first follow-up), by prompt index: each conversation of the turn before
    that has a follow-up left, the model's own answer to it, then the user's next turn."""
    return {i: [*conversation, {"role": "assistant", "content": answers[i]},
                {"role": "user", "content": followups[i][turn - 2]}]
            for i, conversation in conversations.items() if len(followups[i]) >= turn - 1}


def turn_prompt(prompt: list[dict], followups: list[str], turn: int) -> str:
    """What the judge reads as the prompt of a turn: the prompt's user turns and the follow-ups asked up to this
    turn, one per line (contracts.judged_prompt)."""
    return judged_prompt(prompt, followups[: turn - 1])
