"""The data contracts (SFT messages, preference pairs, prompts, pretraining text) and their record checks.

Each check returns None for a good record, or (field, problem) naming the first thing wrong, so a reader can report
`file:line: field: problem` and a user can fix the record.
"""

from __future__ import annotations

import math
import re

from align.core.tokens import IM_END, IM_START, PAD

Problem = tuple[str, str] | None
ROLES = ("system", "user", "assistant")
EMPTY = "is empty or whitespace"
OUT_OF_ORDER = "out of order"
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"  # zero-width characters: text made of them alone is empty
SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """What makes a string unusable as a turn or a text: empty, or characters that are not valid Unicode text (a lone
    UTF-16 surrogate, which no file can be written with; a NUL), or the chat template's own markers, which the tokenizer
    would read as a turn starting or ending inside the text."""
    if not text.strip().strip(INVISIBLE).strip():
        return EMPTY
    if (found := SURROGATE.search(text)) is not None:
        return f"contains a lone UTF-16 surrogate (\\u{ord(found.group()):04x}), which is not valid Unicode"
    if "\x00" in text:
        return "contains a NUL character"
    if marker := next((m for m in (IM_START, IM_END, PAD) if m in text), None):
        return f"contains {marker}, the chat template's own marker: it would become a real turn boundary"
    return None


def check_messages(messages, field: str, last_role: str | None) -> Problem:
    """A non-empty list of {role, content} turns: optional system first, then user/assistant alternating."""
    if not isinstance(messages, list) or not messages:
        return field, "must be a non-empty list of messages"
    expected = "user"
    for i, message in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            return where, "must be an object with 'role' and 'content'"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"{where}.role", f"must be one of {', '.join(ROLES)}, got {role!r}"
        if not isinstance(content, str):
            return f"{where}.content", f"must be a string, got {type(content).__name__}"
        if (problem := text_problem(content)) is not None:
            return f"{where}.content", problem
        if role == "system" and i == 0:
            continue
        if role != expected:
            return f"{where}.role", f"{OUT_OF_ORDER}: expected {expected!r} (user/assistant alternate), got {role!r}"
        expected = "assistant" if role == "user" else "user"
    if last_role is not None and messages[-1]["role"] != last_role:
        return f"{field}[{len(messages) - 1}].role", f"{OUT_OF_ORDER}: the last turn must be {last_role!r}"
    return None


def check_sft(record: dict) -> Problem:
    return check_messages(record.get("messages"), "messages", last_role="assistant")


def check_prompt(record: dict) -> Problem:
    """A conversation ending on a user turn; optional `followups`: the user's next turns, each asked after the model's
    own answer to the turns before (MT-bench's second turn); `id` and `category` are kept for the report."""
    problem = check_messages(record.get("prompt"), "prompt", last_role="user")
    followups = record.get("followups")
    if problem is None and followups is not None:
        if not isinstance(followups, list):
            return "followups", f"must be a list of user turns (strings), got {type(followups).__name__}"
        for i, turn in enumerate(followups):
            if not isinstance(turn, str):
                return f"followups[{i}]", f"must be a string, got {type(turn).__name__}"
            if (what := text_problem(turn)) is not None:
                return f"followups[{i}]", what
    category = record.get("category")
    if problem is None and category is not None and not isinstance(category, str):
        return "category", f"must be a string, got {type(category).__name__}"
    return problem


def check_pair(record: dict) -> Problem:
    """A prompt ending on a user turn, and one assistant reply on each side (optional numeric margin)."""
    problem = check_messages(record.get("prompt"), "prompt", last_role="user")
    for side in ("chosen", "rejected"):
        if problem is None:
            reply = record.get(side)
            if not isinstance(reply, list) or len(reply) != 1:
                return side, "must be a list with exactly one assistant message"
            problem = check_messages(record.get("prompt") + reply, side, last_role="assistant")
            if problem is not None:  # name the field of the reply, not of the concatenation
                problem = (side, problem[1])
    if problem is None and " ".join(record["chosen"][0]["content"].split()) == \
            " ".join(record["rejected"][0]["content"].split()):
        return "rejected", "is the chosen reply (up to whitespace): the pair prefers nothing"
    margin = record.get("margin")
    if problem is None and margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, (int, float)):
            return "margin", f"must be a number, got {type(margin).__name__}"
        if not math.isfinite(margin):
            return "margin", f"must be a finite number, got {margin}"
    return problem


def check_text(record: dict) -> Problem:
    text = record.get("text")
    if not isinstance(text, str):
        return "text", f"must be a string, got {type(text).__name__}"
    if (problem := text_problem(text)) is not None:
        return "text", problem
    return None


def judged_prompt(messages: list[dict], followups: list[str] = ()) -> str:
    """What a task's judge reads as the prompt: the conversation's user turns, then any follow-ups asked so far, one
    per line. A single-turn prompt is its user turn's text; a judge of a task with second turns reads them in order."""
    return "\n".join([*(m["content"] for m in messages if m["role"] == "user"), *followups])


PLAIN_TEXT_SEPARATOR = "\n\n"  # between solved prompts on a page of plain text


def plain_text_example(prompt: str, response: str) -> str:
    """A solved prompt as plain text (no chat template): the prompt's line, then the answer's. The tiny worlds'
    pretraining pages write their examples so, and a model prompted as plain text (eval.plain_text) is shown them so."""
    return f"{prompt}\n{response}"


def reason(problem: tuple[str, str]) -> str:
    """The category a problem is counted under in a data_prep manifest: empty_content, role_order or schema."""
    what = problem[1]
    return "empty_content" if what == EMPTY else "role_order" if what.startswith(OUT_OF_ORDER) else "schema"


CHECKS = {"sft": check_sft, "pair": check_pair, "prompt": check_prompt, "text": check_text}
FIELDS = {"sft": ("messages",), "pair": ("prompt", "chosen", "rejected", "margin"), "prompt": ("prompt",),
          "text": ("text",)}


def training_row(record: dict, kind: str) -> dict:
    """What a trainer reads of a checked record: its contract's fields, each message only its role and content. A
    trainer's table (pyarrow) needs one type per column, and the extra fields a file may carry need not have one."""
    def field(value):
        return [{"role": m["role"], "content": m["content"]} for m in value] if isinstance(value, list) else value

    return {key: field(record[key]) for key in FIELDS[kind] if key in record}
