"""OpenAssistant Conversations (oasst1) message trees into SFT paths and ranked-sibling preference pairs.

Each row is one message (`message_id`, `parent_id` (null for a tree's initial prompt), `role` "prompter" or
"assistant", `text`, `rank` (0 is the best of its siblings; null if unranked), `deleted`, `review_result`), as in the
hub dataset `OpenAssistant/oasst1` (splits train, validation). Deleted messages, those that failed review and
model-written (`synthetic`) ones are left out, and so is everything below them; with the option `languages` (e.g.
`[en]`), so are messages whose `lang` is another.

- SFT: one conversation per tree, from the initial prompt down the best-ranked reply at every step (the first one
  given when none is ranked) until no reply is left; a trailing user turn is cut.
- Pairs: for every user turn with two or more ranked assistant replies, every two of them with different ranks
  (the better-ranked one chosen), after the conversation that led to that user turn (InstructGPT's K-choose-2).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import combinations

from align.core.errors import UserError
from data_prep.convert import Bad, Converted, Dropped, text_field
from data_prep.sources import Row

LICENSE = "Apache-2.0"
HUB = "OpenAssistant/oasst1"
VERSION = 3  # 2: synthetic messages left out, integral float ranks read; 3: assistant-rooted trees counted
ROLE = {"prompter": "user", "assistant": "assistant"}


def read_message(record: object) -> dict:
    if not isinstance(record, dict):
        raise Bad("(record)", "must be a JSON object")
    if "message_tree_id" in record and "prompt" in record and "message_id" not in record:
        raise Bad("(record)", "is a whole message tree (OASST's *.trees.jsonl export): convert the flat message "
                  "export (*.messages.jsonl, or the hub dataset OpenAssistant/oasst1), one message per line")
    message = {key: text_field(record, key) for key in ("message_id", "role", "text")}
    message["parent_id"] = text_field(record, "parent_id", optional=True) or None
    if message["role"] not in ROLE:
        raise Bad("role", f"must be 'prompter' or 'assistant', got {message['role']!r}")
    rank = record.get("rank")
    if isinstance(rank, float) and rank.is_integer():  # 0.0: what a pandas export writes for an integer with nulls
        rank = int(rank)
    if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool)):
        raise Bad("rank", f"must be an integer or null, got {rank!r}")
    message["rank"] = rank
    message["lang"] = record.get("lang")
    # model-written messages (synthetic) are not human demonstrations or judgements
    message["excluded"] = (record.get("deleted") is True or record.get("review_result") is False
                           or record.get("synthetic") is True)
    return message


def convert_rows(rows: Iterable[Row], languages: list[str] | None = None) -> Iterator[Converted | Dropped]:
    if languages is not None and (not isinstance(languages, list) or not all(isinstance(x, str) for x in languages)):
        raise UserError(f"options.languages must be a list of language codes such as [en], got {languages!r}")
    messages, line_of = {}, {}
    for row in rows:
        if row.problem is not None:
            yield Dropped(row.line, "(line)", row.problem, "unreadable")
            continue
        try:
            message = read_message(row.record)
        except Bad as bad:
            yield Dropped(row.line, bad.field, bad.problem, bad.reason)
            continue
        if message["message_id"] in messages:
            yield Dropped(row.line, "message_id", "repeats an earlier message's id", "duplicate")
            continue
        message["other_language"] = languages is not None and message["lang"] not in languages
        messages[message["message_id"]] = message
        line_of[message["message_id"]] = row.line
    replies = defaultdict(list)
    for message in messages.values():
        replies[message["parent_id"]].append(message)
    reachable = set()
    for root in replies[None]:
        if root["role"] == "prompter":  # a tree starts with the user's prompt; one that does not is dropped whole
            reachable |= kept_subtree(root, replies)
    for message_id, message in messages.items():
        line = line_of[message_id]
        if message_id in reachable:
            continue
        if message["excluded"]:
            yield Dropped(line, "(record)", "is deleted or failed review", "excluded")
        elif message["other_language"]:
            yield Dropped(line, "lang", f"is {message['lang']!r}, not one of the languages kept {languages}",
                          "language")
        elif message["parent_id"] is None:
            yield Dropped(line, "role", "an initial prompt (no parent_id) must be the prompter's, got 'assistant'",
                          "role_order")
        elif message["parent_id"] in messages:
            yield Dropped(line, "parent_id", "is not reached from an initial prompt through kept messages", "excluded")
        else:
            yield Dropped(line, "parent_id", "names no message of this file", "orphan")
    for root in replies[None]:
        if root["message_id"] not in reachable:
            continue
        path = best_path(root, replies, reachable)
        if path[-1]["role"] == "prompter":
            path = path[:-1]
        if len(path) >= 2:
            yield Converted(line_of[path[-1]["message_id"]], "sft", {"messages": as_chat(path)})
        yield from ranked_pairs(root, [], replies, reachable, line_of)


def kept_subtree(message: dict, replies: dict) -> set[str]:
    if message["excluded"] or message["other_language"]:
        return set()
    kept = {message["message_id"]}
    for child in replies[message["message_id"]]:
        kept |= kept_subtree(child, replies)
    return kept


def children(message: dict, replies: dict, reachable: set[str]) -> list[dict]:
    return [c for c in replies[message["message_id"]] if c["message_id"] in reachable]


def best_path(message: dict, replies: dict, reachable: set[str]) -> list[dict]:
    path = [message]
    while kids := children(path[-1], replies, reachable):
        ranked = [c for c in kids if c["rank"] is not None]
        path.append(min(ranked, key=lambda c: c["rank"]) if ranked else kids[0])
    return path


def ranked_pairs(message: dict, before: list[dict], replies: dict, reachable: set[str], line_of: dict):
    conversation = before + [message]
    kids = children(message, replies, reachable)
    if message["role"] == "prompter":
        ranked = sorted((c for c in kids if c["rank"] is not None), key=lambda c: c["rank"])
        for better, worse in combinations(ranked, 2):
            if better["rank"] < worse["rank"]:
                pair = {"prompt": as_chat(conversation), "chosen": as_chat([better]), "rejected": as_chat([worse])}
                yield Converted(line_of[message["message_id"]], "pair", pair)
    for child in kids:
        yield from ranked_pairs(child, conversation, replies, reachable, line_of)


def as_chat(messages: list[dict]) -> list[dict]:
    return [{"role": ROLE[m["role"]], "content": m["text"].strip()} for m in messages]
