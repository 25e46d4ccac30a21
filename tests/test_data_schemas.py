"""Converters for sources with no local slice (oasst1, UltraFeedback, TL;DR), on hand-written records in their
documented public schemas (the hub datasets' cards: OpenAssistant/oasst1, HuggingFaceH4/ultrafeedback_binarized,
openai/summarize_from_feedback and vwxyzjn/summarize_from_feedback_tldr_3_filtered), plus Dolly's original layout."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from align.core.errors import UserError
from data_prep import dolly, oasst1, tldr, ultrafeedback
from data_prep.convert import build


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run(module, tmp_path, records, eval_size=0, **options):
    source = SimpleNamespace(options=options, source=str(write_jsonl(tmp_path / "in.jsonl", records)), split="train",
                             eval_size=eval_size)
    out = tmp_path / "out"
    out.mkdir()
    report = build(module, "test", source, False, out, {})
    files = {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in out.glob("*.jsonl")}
    return report["counts"], files


def message(message_id, parent_id, role, text, rank=None, **extra):
    return {"message_id": message_id, "parent_id": parent_id, "user_id": "u", "text": text, "role": role,
            "lang": "en", "review_count": 3, "review_result": True, "deleted": False, "rank": rank,
            "synthetic": False, "model_name": None, "message_tree_id": "t1", "tree_state": "ready_for_export",
            **extra}


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_oasst1_tree_gives_the_best_path_and_every_ranked_sibling_pair(tmp_path):
    tree = [
        message("p", None, "prompter", "What is 2+2?"),
        message("a0", "p", "assistant", "4.", rank=0),
        message("a1", "p", "assistant", "Four, I think.", rank=1),
        message("a2", "p", "assistant", "5", rank=2),
        message("q", "a0", "prompter", "And 3+3?"),
        message("b0", "q", "assistant", "6.", rank=1),
        message("b1", "q", "assistant", "Six.", rank=0),
        message("gone", "q", "assistant", "deleted reply", rank=None, deleted=True),
        message("under", "gone", "prompter", "below a deleted reply"),
        message("lost", "nowhere", "assistant", "orphan"),
    ]
    counts, files = run(oasst1, tmp_path, tree)
    assert files["sft.train.jsonl"] == [{"messages": [user("What is 2+2?"), assistant("4."), user("And 3+3?"),
                                                      assistant("Six.")]}]
    pairs = {(p["chosen"][0]["content"], p["rejected"][0]["content"]): len(p["prompt"])
             for p in files["prefs.train.jsonl"]}
    assert pairs == {("4.", "Four, I think."): 1, ("4.", "5"): 1, ("Four, I think.", "5"): 1, ("Six.", "6."): 3}
    assert counts["dropped"] == {"excluded": 2, "orphan": 1}
    assert counts["in"] == 10


def test_oasst1_wrong_role_order_is_dropped_with_its_line(tmp_path):
    tree = [message("p", None, "prompter", "Hi"), message("p2", "p", "prompter", "Hello?"),
            message("a", "p2", "assistant", "Hi!"), message("ok", None, "prompter", "Hey"),
            message("ok2", "ok", "assistant", "Hey!")]
    counts, _ = run(oasst1, tmp_path, tree)
    assert counts["dropped"] == {"role_order": 1}
    dropped = json.loads((tmp_path / "out" / "dropped.jsonl").read_text())
    assert dropped["line"] == 3 and dropped["field"] == "messages[1].role"


def test_oasst1_tree_rooted_in_an_assistant_message_is_dropped_and_counted(tmp_path):
    tree = [message("a", None, "assistant", "Hello, how can I help?"), message("p", "a", "prompter", "Hi"),
            message("b", "p", "assistant", "Hi!"), message("ok", None, "prompter", "Hey"),
            message("ok2", "ok", "assistant", "Hey!")]
    counts, files = run(oasst1, tmp_path, tree)
    assert files["sft.train.jsonl"] == [{"messages": [user("Hey"), assistant("Hey!")]}]
    assert counts["dropped"] == {"role_order": 1, "excluded": 2}  # the root, and the two messages below it
    dropped = [json.loads(line) for line in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()]
    assert (dropped[0]["line"], dropped[0]["field"]) == (1, "role")


def test_oasst1_reads_pandas_float_ranks_and_leaves_out_model_written_messages(tmp_path):
    tree = [message("p", None, "prompter", "Hi"), message("a0", "p", "assistant", "Hello!", rank=0.0),
            message("a1", "p", "assistant", "Go away.", rank=1.0),
            message("bot", "p", "assistant", "I am a model.", rank=None, synthetic=True)]
    counts, files = run(oasst1, tmp_path, tree)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in files["prefs.train.jsonl"]] == \
        [("Hello!", "Go away.")]
    assert counts["dropped"] == {"excluded": 1}


def test_oasst1_tree_export_is_refused_with_a_hint(tmp_path):
    tree = {"message_tree_id": "t1", "tree_state": "ready_for_export", "prompt": message("p", None, "prompter", "Hi")}
    with pytest.raises(UserError, match=r"\*\.trees\.jsonl export\): convert the flat message export"):
        run(oasst1, tmp_path, [tree, tree])


def test_oasst1_keeps_only_the_languages_asked_for_and_counts_the_rest(tmp_path):
    tree = [message("p", None, "prompter", "Hi"), message("a", "p", "assistant", "Hello!"),
            message("q", None, "prompter", "Hallo", lang="de"), message("b", "q", "assistant", "Guten Tag!", lang="de"),
            message("r", None, "prompter", "Hey"), message("c", "r", "assistant", "Salut !", lang="fr"),
            message("e", "q", "assistant", "Hello?")]  # English, below a German prompt
    counts, files = run(oasst1, tmp_path, tree, languages=["en"])
    assert files["sft.train.jsonl"] == [{"messages": [user("Hi"), assistant("Hello!")]}]
    assert counts["dropped"] == {"language": 3, "excluded": 1}
    dropped = [json.loads(line) for line in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()]
    assert {(d["line"], d["field"]) for d in dropped if d["reason"] == "language"} == {(3, "lang"), (4, "lang"),
                                                                                       (6, "lang")}
    (tmp_path / "all").mkdir()
    counts, files = run(oasst1, tmp_path / "all", tree)  # no option: every language
    assert "language" not in counts["dropped"] and len(files["sft.train.jsonl"]) == 3


@pytest.mark.parametrize("options, error", [
    ({"lang": ["en"]}, r"options \['lang'\]: data_prep.oasst1 takes \['languages'\]"),
    ({"languages": "en"}, r"options.languages must be a list of language codes such as \[en\], got 'en'"),
])
def test_a_source_option_its_module_does_not_take_is_refused(tmp_path, options, error):
    with pytest.raises(UserError, match=error):
        run(oasst1, tmp_path, [message("p", None, "prompter", "Hi")], **options)


def test_ultrafeedback_binarized_gives_a_pair_and_a_demonstration_and_drops_ties(tmp_path):
    chosen = [user("Name a colour."), assistant("Blue.")]
    rejected = [user("Name a colour."), assistant("A car.")]
    records = [
        {"prompt": "Name a colour.", "prompt_id": "x", "chosen": chosen, "rejected": rejected, "messages": chosen,
         "score_chosen": 8.0, "score_rejected": 3.0},
        {"prompt": "Tie", "prompt_id": "y", "chosen": [user("Tie"), assistant("a")],
         "rejected": [user("Tie"), assistant("b")], "messages": [user("Tie"), assistant("a")],
         "score_chosen": 5.0, "score_rejected": 5.0},
    ]
    counts, files = run(ultrafeedback, tmp_path, records)
    assert files["prefs.train.jsonl"] == [{"prompt": [user("Name a colour.")], "chosen": [assistant("Blue.")],
                                          "rejected": [assistant("A car.")]}]
    assert files["sft.train.jsonl"] == [{"messages": chosen}]
    assert counts["dropped"] == {"tied_scores": 1}


def test_tldr_demonstrations_and_comparisons_share_the_papers_prompt(tmp_path):
    post = {"subreddit": "relationships", "title": "Help", "post": "Long story.\n"}
    prompt = "SUBREDDIT: r/relationships\n\nTITLE: Help\n\nPOST: Long story.\n\nTL;DR:"
    records = [
        {"id": "1", **post, "summary": " short story"},
        {"info": {"id": "1", **post, "site": None, "article": None},
         "summaries": [{"text": " bad one", "policy": "a", "note": None},
                       {"text": " good one", "policy": "b", "note": None}],
         "choice": 1, "worker": "w", "batch": "b1", "split": "train", "extra": {"confidence": 8}},
        {"info": {"id": "2", **post}, "summaries": [{"text": "x"}], "choice": 0},
    ]
    counts, files = run(tldr, tmp_path, records)
    assert files["sft.train.jsonl"] == [{"messages": [user(prompt), assistant("short story")]}]
    assert files["prefs.train.jsonl"] == [{"prompt": [user(prompt)], "chosen": [assistant("good one")],
                                          "rejected": [assistant("bad one")]}]
    assert counts["dropped"] == {"schema": 1}


def test_dolly_original_layout(tmp_path):
    records = [{"instruction": "Summarise.", "context": "A text.", "response": "Short.", "category": "summarization"},
               {"instruction": "Say hi.", "context": "", "response": "Hi.", "category": "open_qa"}]
    _, files = run(dolly, tmp_path, records)
    assert sorted(d["messages"][0]["content"] for d in files["sft.train.jsonl"]) == ["Say hi.", "Summarise.\n\nA text."]


def test_plain_text_documents_for_ptx(tmp_path):
    """A real text file (Alpaca's CC BY-NC 4.0 license text) as pretraining text: one document per blank-line block.

    Hand check: re.split(r"\\n[ \\t]*\\n", text) gives 82 non-blank blocks, 80 of them distinct.
    """
    from helpers import SHARED_DATA

    from data_prep import plain_text

    path = tmp_path / "license.txt"
    path.write_text((SHARED_DATA / "alpaca_first100" / "DATA_LICENSE.alpaca").read_text())
    (tmp_path / "out").mkdir()
    source = SimpleNamespace(options={}, source=str(path), split="train", eval_size=0)
    counts = build(plain_text, "ptx", source, False, tmp_path / "out", {})["counts"]
    assert counts == {"in": 82, "out": {"ptx.train.jsonl": 80}, "dropped": {"duplicate": 2}}
