"""UltraFeedback binarized into preference pairs and SFT demonstrations.

Each record (hub `HuggingFaceH4/ultrafeedback_binarized`, splits train_prefs, test_prefs, train_sft, ...) has
`chosen` and `rejected` (whole conversations: the user turn, then the reply), `messages` (the conversation to imitate,
the chosen one) and `score_chosen` / `score_rejected` (GPT-4 ratings). A record gives a pair and a demonstration; the
recipe picks which file a stage reads. Pairs whose scores tie say nothing about which reply is better: dropped as
`tied_scores`.
"""

from __future__ import annotations

from data_prep.convert import Bad, each_record, list_field

LICENSE = "MIT"
HUB = "HuggingFaceH4/ultrafeedback_binarized"
VERSION = 1


def to_contracts(record: dict) -> list[tuple[str, dict]]:
    chosen, rejected = list_field(record, "chosen"), list_field(record, "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise Bad("rejected", "its turns before the final reply differ from chosen's", "prompt_mismatch")
    scores = record.get("score_chosen"), record.get("score_rejected")
    if all(isinstance(s, (int, float)) for s in scores) and scores[0] == scores[1]:
        raise Bad("score_rejected", "equals score_chosen", "tied_scores")
    converted = [("pair", {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]})]
    if "messages" in record:
        converted.append(("sft", {"messages": list_field(record, "messages")}))
    return converted


convert_rows = each_record(to_contracts)
