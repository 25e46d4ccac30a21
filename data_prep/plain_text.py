"""Plain text for PPO-ptx (InstructGPT's pretraining mix): documents as `{"text": ...}`.

Reads a .txt file (documents separated by blank lines), records with a `text` field (JSONL, or a hub dataset with a
text column such as `Salesforce/wikitext:wikitext-103-raw-v1`, `name:config`), kept as they are.
"""

from __future__ import annotations

from data_prep.convert import each_record, text_field

LICENSE = "as the source's"
HUB = "Salesforce/wikitext:wikitext-103-raw-v1"
VERSION = 1


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    return [("text", {"text": text_field(record, "text")})]


convert_rows = each_record(to_contracts)
