"""The words world: an exact judge, a noisy demonstrator, informative pairs, held-out prompts, determinism (the
other tasks: test_worlds.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from statistics import mean

import pytest
from helpers import world_dir

from data_prep.tiny_world.build import demonstrate, preference_pair
from data_prep.tiny_world.judge import constraint_results, gold_score
from data_prep.tiny_world.task import (
    KINDS,
    MAX_WORDS,
    VOCABULARY,
    Constraints,
    parse_prompt,
    render_prompt,
    sample_constraints,
)
from data_prep.tiny_world.words import TASK as WORDS
from data_prep.tiny_world.words import respond


def read(root, name):
    with open(world_dir(root) / f"{name}.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize(
    "prompt, response, ended, expected",
    [
        ("words 3 start sun end any", "sun good moon", True, 1.0),
        ("words 3 start sun end any", "sun good", True, 0.5),  # start met, count missed
        ("words any start sun end moon", "moon good sun", True, 0.0),  # both swapped
        ("words 4 start any end moon", "a b c moon", True, 1.0),
        ("words 4 start any end moon", "a b c moon", False, 0.0),  # never ended: 0 whatever the text
        ("words 2 start any end any mood positive", "good happy", True, 1.0),
        ("words 2 start any end any mood positive", "good sad", True, 0.5),
        ("words 3 start sun end any", "", True, 0.0),
    ],
)
def test_gold_score_by_hand(prompt, response, ended, expected):
    assert gold_score(prompt, response, ended) == pytest.approx(expected)


def test_prompt_round_trip_and_rejects_other_text():
    rng = random.Random(0)
    for _ in range(200):
        constraints = sample_constraints(rng, KINDS)
        assert parse_prompt(render_prompt(constraints, KINDS)) == constraints
        assert 1 <= len(constraints.active()) <= 3
    with pytest.raises(ValueError):
        parse_prompt("write me a poem")


def test_respond_meets_exactly_the_requested_constraints():
    rng = random.Random(1)
    for _ in range(500):
        constraints = sample_constraints(rng, KINDS)
        meet = {kind: rng.random() < 0.5 for kind in constraints.active()}
        assert constraint_results(constraints, respond(constraints, rng, meet)) == meet


def test_demonstrator_is_noisy_at_the_configured_rate():
    rng = random.Random(2)
    prompts = [sample_constraints(rng, ("words", "start", "end")) for _ in range(2000)]
    met = [v for c in prompts for v in constraint_results(c, demonstrate(WORDS, c, rng, 0.6)).values()]
    assert 0.57 < mean(met) < 0.63


def test_minimal_pairs_differ_in_one_constraint_and_are_labelled_by_the_judge():
    from types import SimpleNamespace

    rng = random.Random(3)
    world = SimpleNamespace(demonstrator_p=0.6, degenerate_fraction=0.0, label_noise=0.0)
    constraints = Constraints(words=5, start="sun", end="moon")
    prompt = render_prompt(constraints, ("words", "start", "end"))
    for _ in range(200):
        pair = preference_pair(WORDS, prompt, constraints, rng, world)
        if pair is None:
            continue
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert gold_score(prompt, chosen) - gold_score(prompt, rejected) == pytest.approx(1 / 3)


def test_built_splits_hold_out_eval_prompts_and_label_noise_is_as_configured(tiny_data_root):
    eval_prompts = {r["prompt"][0]["content"] for r in read(tiny_data_root, "prompts.eval")}
    assert len(eval_prompts) == 200
    train_prompts = {r["messages"][0]["content"] for r in read(tiny_data_root, "sft.train")}
    train_prompts |= {r["prompt"][0]["content"] for r in read(tiny_data_root, "prefs.train")}
    train_prompts |= {r["prompt"][0]["content"] for r in read(tiny_data_root, "prompts.train")}
    audit = read(tiny_data_root, "prefs.audit")
    assert not eval_prompts & train_prompts
    assert not eval_prompts & {r["prompt"][0]["content"] for r in audit}
    assert len(audit) == len(read(tiny_data_root, "prefs.train")) and audit != read(tiny_data_root, "prefs.train")
    pairs = read(tiny_data_root, "prefs.train")
    agree = [gold_score(p["prompt"][0]["content"], p["chosen"][0]["content"])
             > gold_score(p["prompt"][0]["content"], p["rejected"][0]["content"]) for p in pairs]
    assert 0.88 < mean(agree) < 0.92  # label_noise 0.1; ties were dropped
    degenerate = [p for p in pairs if any(w not in VOCABULARY for w in p["rejected"][0]["content"].split())
                  or len(p["rejected"][0]["content"].split()) > MAX_WORDS]
    assert 0.15 * len(pairs) < len(degenerate) < 0.3 * len(pairs)  # degenerate_fraction 0.25


def test_build_is_deterministic(tmp_path, tiny_data_root):
    from helpers import tiny_config

    from data_prep.prepare import ensure_prepared

    first = world_dir(tiny_data_root)
    data = tiny_config(f"paths.data={tmp_path}").data
    ensure_prepared(data, [data.sft_train])
    again = world_dir(tmp_path)
    for path in sorted(first.glob("*.jsonl")) + [first / "tokenizer" / "tokenizer.json"]:
        assert (again / path.relative_to(first)).read_bytes() == path.read_bytes(), path.name


def test_default_words_world_writes_the_files_measured_before(tiny_data_root):
    # docs/benchmarks.md's and docs/ablations.md's tiny numbers were measured on these records: a change to the builder
    # that changes them must be deliberate (and bump the words task's version).
    import hashlib

    manifest = json.loads((world_dir(tiny_data_root) / "manifest.json").read_text())
    records = {name: digest for name, digest in manifest["sha256"].items()
               if name.endswith(".jsonl") and not name.startswith("pretrain.")}
    assert len(records) == 8
    files = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
    assert files == "39a3ab1b31644cf6b37e5b637c02098d9677d162535fe58af2c4524373fee738"
    # the pretraining web, drawn after all of them (its numbers: docs/ablations.md)
    assert {name: manifest["sha256"][name][:16] for name in ("pretrain.train.jsonl", "pretrain.eval.jsonl")} == {
        "pretrain.train.jsonl": "010b1e60875d8a98", "pretrain.eval.jsonl": "be4d21f0bb91141e"}


@pytest.mark.parametrize("conversation, response, expected", [
    ("words 3 start sun end any\nagain start moon", "moon good sun", 1.0),  # count kept, start changed
    ("words 3 start sun end any\nagain start moon", "sun good moon", 0.5),  # the first request's start: missed
    ("words 3 start sun end any\nagain words 4\nagain end any", "sun a b c", 1.0),  # changes add up
    ("words 3 start sun end bird\nagain end any", "sun a fish", 1.0),  # a slot freed
])
def test_the_judge_reads_a_follow_up_as_the_request_with_one_slot_changed(conversation, response, expected):
    assert gold_score(conversation, response) == expected


@pytest.mark.parametrize("follow_up", ["again", "again start", "start moon", "again colour red", "again words x"])
def test_text_that_is_not_a_follow_up_is_refused(follow_up):
    with pytest.raises(ValueError):
        parse_prompt(f"words 3 start sun end any\n{follow_up}")


@pytest.fixture(scope="module")
def two_turn_world(tmp_path_factory):
    """The words world with its second turn (+ablation=two_turn), built once."""
    from helpers import tiny_config

    from data_prep.prepare import ensure_prepared

    cfg = tiny_config("+ablation=two_turn", f"paths.data={tmp_path_factory.mktemp('data')}")
    ensure_prepared(cfg.data, [cfg.data.sft_train])
    return cfg.data


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_second_turns_are_added_after_the_first_turn_files_and_ask_one_change(two_turn_world, tiny_data_root):
    world = two_turn_world.world
    for name, n in (("sft_train", world.n_sft), ("prefs_train", world.n_pairs), ("prompts_train", world.n_prompts)):
        records, before = lines(getattr(two_turn_world, name)), lines(world_dir(tiny_data_root) /
                                                                       Path(getattr(two_turn_world, name)).name)
        assert records[:n] == before and len(records) == n + round(world.two_turn_fraction * n), name

    demos = lines(two_turn_world.sft_train)[world.n_sft:]
    second_met = []
    for first, _, change, answer in (d["messages"] for d in demos):
        before, after = parse_prompt(first["content"]), parse_prompt(f"{first['content']}\n{change['content']}")
        changed = [kind for kind in KINDS if getattr(before, kind) != getattr(after, kind)]
        assert len(changed) == 1 and changed[0] != "mood", change  # one slot, to a new value
        second_met.append(gold_score(f"{first['content']}\n{change['content']}", answer["content"]))
    assert 0.5 < mean(second_met) < 0.7  # the second answer is demonstrated as the first: each check met w.p. 0.6

    for pair in lines(two_turn_world.prefs_train)[world.n_pairs:]:  # judged on the changed request
        assert [m["role"] for m in pair["prompt"]] == ["user", "assistant", "user"]
        judged = "\n".join(m["content"] for m in pair["prompt"] if m["role"] == "user")
        chosen, rejected = (gold_score(judged, pair[side][0]["content"]) for side in ("chosen", "rejected"))
        assert chosen != rejected
    assert all(len(p["prompt"]) == 3 for p in lines(two_turn_world.prompts_train)[world.n_prompts:])

    prompts = lines(two_turn_world.prompts_eval)
    assert [p["prompt"] for p in prompts] == [p["prompt"] for p in lines(world_dir(tiny_data_root) /
                                                                          "prompts.eval.jsonl")]
    assert all(len(p["followups"]) == 1 for p in prompts)
    assert len({p["followups"][0].split()[1] for p in prompts}) == len(world.kinds)  # every enabled slot is changed


def test_a_task_without_second_turns_refuses_them():
    from helpers import tiny_config

    from align.core.errors import UserError
    from data_prep.tiny_world import task_of

    with pytest.raises(UserError, match="no second turn"):
        task_of(tiny_config("data=digits", "data.world.two_turn_fraction=0.1").data.world)
