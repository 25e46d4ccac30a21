"""OpenAI's TL;DR summarisation (Stiennon et al. 2020): reference summaries (SFT) and human comparisons (pairs).

Two layouts, told apart by their fields:
- demonstrations, as in `vwxyzjn/summarize_from_feedback_tldr_3_filtered`: `subreddit`, `title`, `post`, `summary`;
- comparisons, as in `openai/summarize_from_feedback` (config comparisons): `info` {`post` or `article`, `title`,
  `subreddit`}, `summaries` [{`text`}, {`text`}], `choice` (the index of the summary the labeller preferred).
Both ask for the summary with the paper's prompt ("SUBREDDIT: r/...\\n\\nTITLE: ...\\n\\nPOST: ...\\n\\nTL;DR:") as the
user turn, so a policy, its demonstrations and its reward model see the same prompt.
"""

from __future__ import annotations

from data_prep.convert import Bad, chat, each_record, list_field, reply, text_field

LICENSE = "CC BY 4.0"
HUB = "openai/summarize_from_feedback"
VERSION = 1


def query(info: dict) -> str:
    post = text_field(info, "post", optional=True) or text_field(info, "article")
    subreddit = text_field(info, "subreddit", optional=True)
    head = f"SUBREDDIT: r/{subreddit}\n\n" if subreddit else ""
    return f"{head}TITLE: {text_field(info, 'title', optional=True)}\n\nPOST: {post.strip()}\n\nTL;DR:"


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    if "summaries" not in record:
        return [("sft", {"messages": chat(query(record), text_field(record, "summary"))})]
    info = record.get("info")
    if not isinstance(info, dict):
        raise Bad("info", "must be an object with post, title and subreddit")
    summaries, choice = list_field(record, "summaries"), record.get("choice")
    if len(summaries) != 2 or not all(isinstance(s, dict) for s in summaries):
        raise Bad("summaries", "must be two objects with a 'text'")
    if choice not in (0, 1) or isinstance(choice, bool):
        raise Bad("choice", f"must be 0 or 1, got {choice!r}")
    chosen, rejected = (text_field(summaries[i], "text") for i in (choice, 1 - choice))
    return [("pair", {"prompt": chat(query(info)), "chosen": reply(chosen), "rejected": reply(rejected)})]


convert_rows = each_record(to_contracts)
