"""Every real-data source module on the real slices ($ALIGN_SHARED_DATA, docs/data.md), counts hand-checked.

How the expected numbers were checked, independently of data_prep (python, one line per file, in the slices' directory):
- alpaca_first100: 100 records, 100 distinct (instruction, input), no empty output;
- dolly_subset_151: 151 records, 151 distinct prompts, every answer non-empty once "###eos_token###" is removed;
- lima: 1,029 records, none empty or repeated; 29 have a history (conversations of 4, 6, 8 and 20 turns);
- self_instruct seed_tasks: 175 tasks with 175 instances in all; user_oriented: 252 tasks, each one's
  "instruction\\n\\ninput" equals an AlpacaEval instruction after whitespace normalisation (252 of 252);
- stack_exchange_paired_tiny: 25 pairs over 8 distinct questions;
- koala: 156 of its 180 prompts are AlpacaEval's `koala` part: 144 equal after whitespace normalisation, 11 more once
  a leading "2 / 2" and case are ignored, 1 more once a leading "#2. " is; vicuna: all 80 are in AlpacaEval;
- none of the training slices (alpaca, dolly, lima, seed tasks, HH, Stack Exchange) has a user turn that is an
  AlpacaEval or Koala prompt (case- and whitespace-normalised).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import CONF, SHARED_DATA, tiny_config

from align.core.errors import UserError
from data_prep import eval_prompts, self_instruct
from data_prep.convert import build
from data_prep.prepare import build as build_named
from data_prep.prepare import ensure_prepared, evaluation_prompts

TRAINING = ("alpaca", "dolly", "lima", "self_instruct", "hh_rlhf", "stack_exchange")
EXPECTED = {  # source -> (records in, records out by file, dropped by reason), with the eval sizes of slices.yaml
    "alpaca_eval": (805, {"prompts.eval.jsonl": 805}, {}),
    "koala": (180, {"prompts.eval.jsonl": 24}, {"eval_overlap": 156}),
    "alpaca": (100, {"sft.train.jsonl": 90, "sft.eval.jsonl": 10}, {}),
    "dolly": (151, {"sft.train.jsonl": 136, "sft.eval.jsonl": 15}, {}),
    "lima": (1029, {"sft.train.jsonl": 979, "sft.eval.jsonl": 50}, {}),
    "self_instruct": (175, {"sft.train.jsonl": 160, "sft.eval.jsonl": 15}, {}),
    # pairs over one prompt stay on one side: 5 held-out pairs over 2 of the 8 questions
    "stack_exchange": (25, {"prefs.train.jsonl": 20, "prefs.eval.jsonl": 5, "prompts.train.jsonl": 6,
                            "prompts.eval.jsonl": 2}, {}),
    # see test_hh_rlhf.py for the hand check of the drops; 2 prompts repeat among the training pairs
    "hh_rlhf": (1600, {"prefs.train.jsonl": 1457, "prefs.eval.jsonl": 100, "prompts.train.jsonl": 1455,
                       "prompts.eval.jsonl": 100},
                {"empty_content": 4, "role_order": 3, "speaker_marker_in_text": 36}),
}


def slices_config(root: Path, *overrides: str):
    return tiny_config("data=slices", f"paths.data={root}", "paths.root=unused", *overrides)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data = slices_config(tmp_path_factory.mktemp("data")).data
    return {name: build_named(name, data) for name in data.sources}


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_counts_in_and_out_match_the_hand_checked_slices(built, name):
    manifest = json.loads((built[name] / "manifest.json").read_text())
    n_in, out, dropped = EXPECTED[name]
    assert manifest["counts"] == {"in": n_in, "out": out, "dropped": dropped}
    for file, n in out.items():
        assert len(read(built[name] / file)) == n
    assert manifest["input"]["sha256"]  # the file read, by content
    assert manifest["license"]


def test_no_speaker_markers_leak_and_every_record_meets_its_contract(built):
    from align.core.records import read_records

    kinds = {"sft": "sft", "prefs": "pair", "prompts": "prompt"}
    for directory in built.values():
        for path in directory.glob("*.*.jsonl"):
            records, _ = read_records(path, kinds[path.name.split(".")[0]], "error")
            text = json.dumps(records, ensure_ascii=False)
            assert "Human:" not in text and "Assistant:" not in text, path


def test_multi_turn_conversations_keep_every_turn(built):
    source = json.loads((SHARED_DATA / "lima" / "lima.json").read_text())
    expected = Counter(2 * len(r["history"]) + 2 for r in source)
    demos = read(built["lima"] / "sft.train.jsonl") + read(built["lima"] / "sft.eval.jsonl")
    assert Counter(len(d["messages"]) for d in demos) == expected  # 1000 x 2 turns, 29 longer
    assert sum(len(d["messages"]) > 2 for d in demos) == 29
    longest = max(demos, key=lambda d: len(d["messages"]))
    by_last_turn = {r["output"].strip(): r for r in source}
    original = by_last_turn[longest["messages"][-1]["content"]]
    assert [m["content"] for m in longest["messages"]] == [t.strip() for pair in original["history"] for t in pair] + [
        original["instruction"].strip(), original["output"].strip()]


def test_eval_prompts_in_training_data_are_found(built, tmp_path):
    """The Self-Instruct user-oriented set (an eval set, here trained on by mistake) and the Vicuna questions."""
    alpaca_eval = evaluation_prompts(built["alpaca_eval"], "alpaca_eval")
    uo = SimpleNamespace(options={}, source=str(SHARED_DATA / "self_instruct" / "user_oriented_instructions.jsonl"),
                         split="train", eval_size=0)
    with pytest.raises(UserError, match="no usable records"):  # every one of the 252 is an AlpacaEval prompt
        build(self_instruct, "uo", uo, False, tmp_path / "uo", alpaca_eval)
    (tmp_path / "uo").mkdir()
    counts = build(self_instruct, "uo", uo, False, tmp_path / "uo", {})["counts"]
    assert counts["out"] == {"sft.train.jsonl": 252}  # the same file without decontamination
    vicuna = SimpleNamespace(options={}, source=str(SHARED_DATA / "vicuna_bench" / "question.jsonl"), split="train",
                             eval_size=-1)
    (tmp_path / "vicuna").mkdir()
    with pytest.raises(UserError, match="'eval_overlap': 80"):
        build(eval_prompts, "vicuna", vicuna, False, tmp_path / "vicuna", alpaca_eval)
    first = read(built["koala"] / "dropped.jsonl")[0]
    assert first["reason"] == "eval_overlap" and "alpaca_eval" in first["problem"] and first["line"] >= 1


def test_eval_sets_keep_every_turn_their_ids_and_categories(built, tmp_path):
    """MT-bench's layout (Vicuna's, with a second turn): the prompt, the follow-up, `question_id` and `category` all
    reach the prompt record; AlpacaEval's `dataset` is its category."""
    mt_bench = tmp_path / "mt_bench.jsonl"
    mt_bench.write_text(json.dumps({"question_id": 81, "category": "writing", "turns": [
        "Compose a travel blog post about Hawaii.", " Rewrite it so that every sentence starts with A. "]}) + "\n"
                        + json.dumps({"question_id": 82, "category": "math", "turns": ["What is 2 + 2?"]}) + "\n"
                        + json.dumps({"question_id": 83, "category": "math", "turns": ["Hi", 7]}) + "\n"
                        + json.dumps({"prompt_id": 5, "category": "math", "prompt": ["1 + 1?", "And 2 + 2?"],
                                      "reference": ["2", "4"]}) + "\n")
    source = SimpleNamespace(options={}, source=str(mt_bench), split="train", eval_size=-1)
    (tmp_path / "mt").mkdir()
    counts = build(eval_prompts, "mt", source, False, tmp_path / "mt", {})["counts"]
    assert counts["out"] == {"prompts.eval.jsonl": 3} and counts["dropped"] == {"schema": 1}
    two_turns, one_turn, hugging_face_h4 = sorted(read(tmp_path / "mt" / "prompts.eval.jsonl"),
                                                  key=lambda r: {81: 0, 82: 1, 5: 2}[r["id"]])  # held out shuffled
    assert hugging_face_h4 == {"prompt": [{"role": "user", "content": "1 + 1?"}], "followups": ["And 2 + 2?"],
                               "id": 5, "category": "math"}
    assert two_turns == {"prompt": [{"role": "user", "content": "Compose a travel blog post about Hawaii."}],
                         "followups": ["Rewrite it so that every sentence starts with A."],
                         "id": 81, "category": "writing"}
    assert one_turn == {"prompt": [{"role": "user", "content": "What is 2 + 2?"}], "id": 82, "category": "math"}
    dropped = read(tmp_path / "mt" / "dropped.jsonl")[0]
    assert dropped["field"] == "turns[1]" and dropped["line"] == 3
    alpaca_eval = read(built["alpaca_eval"] / "prompts.eval.jsonl")
    assert Counter(r["category"] for r in alpaca_eval) == {"selfinstruct": 252, "oasst": 188, "koala": 156,
                                                           "helpful_base": 129, "vicuna": 80}
    assert [r["id"] for r in read(built["koala"] / "prompts.eval.jsonl")][:1] != [None]


def test_training_sources_are_checked_against_the_eval_sets(built):
    for name in TRAINING:
        recipe = json.loads((built[name] / "manifest.json").read_text())["recipe"]
        assert set(recipe["decontaminated_against"]) == {"alpaca_eval", "koala"}


def test_rebuilding_gives_byte_identical_files(tmp_path):
    overrides = ("data.mixtures.prefs_train.max_tokens=null",)
    first, second = slices_config(tmp_path / "a", *overrides).data, slices_config(tmp_path / "b", *overrides).data
    for data in (first, second):
        ensure_prepared(data, [data.prefs_train, f"{data.dir}/lima/sft.train.jsonl"])
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 10 and Path("slices/prefs_train/prefs.train.jsonl") in files
    for file in files:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    mixture = json.loads((tmp_path / "a" / "slices" / "prefs_train" / "manifest.json").read_text())
    # weights: hh_rlhf 1.0 x 1457 training pairs, stack_exchange 2.0 x 20
    assert mixture["counts"] == {"in": {"hh_rlhf": 1457, "stack_exchange": 40},
                                 "out": {"prefs.train.jsonl": 1497}, "dropped": {}}


def test_command_line_builds_a_source_and_prints_the_summary(tmp_path):
    from helpers import run_module

    hh = SHARED_DATA / "hh_rlhf_harmless_base_test" / "test_first1600.jsonl.gz"
    result = run_module("data_prep", "hh_rlhf", str(hh), "--out", str(tmp_path / "hh"), "--eval-size", "100")
    assert result.returncode == 0, result.stderr[-2000:]
    header, row = result.stdout.splitlines()
    assert row.split()[:2] == ["hh", "1600"] and "speaker_marker_in_text 36" in row
    strict = run_module("data_prep", "hh_rlhf", str(hh), "--out", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 2 and f"{hh}:30: prompt: " in strict.stderr
    assert not (tmp_path / "strict").exists()


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_every_recipe_names_modules_and_sources_that_exist(recipe):
    import importlib

    data = tiny_config(f"data={recipe}", *(["data.dir=/unused"] if recipe == "files" else [])).data
    for source in data.sources.values():
        module = importlib.import_module(f"data_prep.{source.prepare}")
        assert hasattr(module, "prepare") or (module.LICENSE and module.HUB and callable(module.convert_rows))
        assert set(source.decontaminate) <= set(data.sources)
    for mixture in data.mixtures.values():
        assert set(mixture.parts) <= set(data.sources) and mixture.parts
    if recipe == "files":  # read as they are: no source or mixture builds them
        assert not data.sources and not data.mixtures and data.world is None
        return
    for file in (data.sft_train, data.prefs_train, data.prompts_train):
        assert Path(file).parent.name in [*data.sources, *data.mixtures]


def test_mixture_drops_records_over_max_tokens_counted_in_the_target_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from align.core.tokens import add_chat_tokens

    weights = ("data.mixtures.sft_train.parts.dolly=0.5", "data.mixtures.sft_train.parts.lima=0",
               "data.mixtures.sft_train.parts.self_instruct=0")
    data = slices_config(tmp_path, *weights,
                         "data.mixtures.sft_train.tokenizer_vocab_size=400",
                         "data.mixtures.sft_train.max_tokens=150").data
    ensure_prepared(data, [data.sft_train])
    directory = Path(data.dir) / "sft_train"
    counts = json.loads((directory / "manifest.json").read_text())["counts"]
    # dolly's 136 training demonstrations at weight 0.5
    assert counts["in"] == {"dolly": 68, "lima": 0, "alpaca": 90, "self_instruct": 0}
    tokenizer = add_chat_tokens(AutoTokenizer.from_pretrained(directory / "tokenizer"))
    kept = read(directory / "sft.train.jsonl")
    lengths = [len(tokenizer.apply_chat_template(r["messages"], return_dict=True)["input_ids"]) for r in kept]
    assert max(lengths) <= 150
    too_long = counts["dropped"]["too_long"]
    assert sum(too_long.values()) > 0 and len(kept) + sum(too_long.values()) == 90 + 68


def _build_at_once(out_dir: str, barrier, results) -> None:
    """One of several processes that build the same directory and finish together (tests below)."""
    from data_prep.prepare import build_dir

    def make(tmp):
        (tmp / "records.jsonl").write_text('{"a": 1}\n')
        barrier.wait(timeout=60)  # every process has built its copy: all of them now race to put theirs in place
        return {}

    results.put(str(build_dir(Path(out_dir), {"recipe": 1}, make, "test")))


def test_runs_that_build_the_same_data_at_once_all_use_one_copy(tmp_path):
    """A parallel sweep over one data.dir: each run builds the missing directory under a name of its own; the first
    to finish puts its copy in place, and the others use it instead of failing on a directory that is not empty."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    out_dir = tmp_path / "world"
    processes = [context.Process(target=_build_at_once, args=(str(out_dir), barrier, results)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    assert sorted(results.get(timeout=5) for _ in processes) == [str(out_dir)] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]  # no copy left behind
    assert json.loads((out_dir / "manifest.json").read_text())["recipe"] == {"recipe": 1}


def test_a_recipe_gets_every_override_the_command_line_gives(monkeypatch):
    from data_prep import __main__ as command_line

    seen = []
    monkeypatch.setattr(command_line, "build_recipe", lambda recipe, overrides: seen.append(overrides) or {})
    command_line.main(["--recipe", "slices", "paths.data=/tmp/d", "data.world.n_sft=100", "seed=3"])
    assert seen == [["paths.data=/tmp/d", "data.world.n_sft=100", "seed=3"]]
    with pytest.raises(UserError, match="KEY=VALUE.*dolly"):
        command_line.main(["--recipe", "slices", "dolly"])


def test_a_data_file_key_naming_a_directory_says_so(tmp_path):
    data = tiny_config("data=files", f"data.dir={tmp_path}", f"data.sft_train={tmp_path}").data
    with pytest.raises(UserError, match=f"data.sft_train: {tmp_path} is a directory: name a JSONL data file in it"):
        ensure_prepared(data, [data.sft_train])
