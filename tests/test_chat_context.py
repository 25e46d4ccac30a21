"""What align.chat sends the model when a conversation outgrows its positions: the newest exchanges that fit."""

from __future__ import annotations

from align.chat import fitting_context
from align.core.tokens import chat_ids

SYSTEM = [{"role": "system", "content": "be brief"}]


def conversation(exchanges: int) -> list[dict]:
    turns = []
    for i in range(exchanges):
        turns += [{"role": "user", "content": f"words {i} start sun end moon"},
                  {"role": "assistant", "content": "sun river moon"}]
    return SYSTEM + turns + [{"role": "user", "content": "words 3 start sun end any"}]


def test_the_oldest_exchanges_leave_first_and_the_system_turn_stays(tokenizer):
    messages = conversation(6)
    whole = len(chat_ids(tokenizer, messages, generation_prompt=True))
    assert fitting_context(tokenizer, messages, 1, whole) == messages
    kept = fitting_context(tokenizer, messages, 1, whole - 1)
    assert kept == SYSTEM + messages[3:]  # one exchange fewer, still a user turn first
    last_only = len(chat_ids(tokenizer, SYSTEM + messages[-1:], generation_prompt=True))
    assert fitting_context(tokenizer, messages, 1, last_only) == SYSTEM + messages[-1:]
    assert fitting_context(tokenizer, messages, 1, last_only - 1) == []
