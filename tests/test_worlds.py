"""The digits and template worlds, and what every tiny-world task must give the builder: exact judges, responses that
meet exactly the checks asked, minimal pairs, garbage that is never empty, held-out prompts, determinism, short
prompts and responses in the world's own tokenizer. The words world's own tests are in test_tiny_world.py."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import tiny_config

from align.core.errors import UserError
from data_prep.tiny_world import TASKS, digits, task_of, template
from data_prep.tiny_world.build import preference_pair

NEW_WORLDS = ("digits", "template")
DEFAULT_KINDS = {"words": ("words", "start", "end", "mood"), "digits": digits.KINDS, "template": template.KINDS}


@pytest.mark.parametrize(
    "judge, prompt, response, expected",
    [
        (digits, "digits 3 1 4 1 ask len max", "len 4 max 4", {"len": True, "max": True}),
        (digits, "digits 3 1 4 1 ask len max", "len 4 max 3", {"len": True, "max": False}),
        (digits, "digits 3 1 4 1 ask len max", "max 4 len 4", {"len": True, "max": True}),  # order is not checked
        (digits, "digits 3 1 4 1 ask first last min", "first 3 last 1 min 1",
         {"first": True, "last": True, "min": True}),
        (digits, "digits 3 1 4 1 ask first", "first 1 first 3", {"first": False}),  # the first mention counts
        (digits, "digits 3 1 4 1 ask first", "3", {"first": False}),
        (digits, "digits 3 1 4 1 ask first", "first", {"first": False}),
        (digits, "digits 0 9 ask min max", "min 0 max 9", {"min": True, "max": True}),
        (digits, "digits 5 5 5 ask len", "", {"len": False}),
        (template, "fill B , A . with A sun B moon", "B moon , A sun .", {"layout": True, "A": True, "B": True}),
        (template, "fill B , A . with A sun B moon", "B sun , A moon .", {"layout": True, "A": False, "B": False}),
        (template, "fill B , A . with A sun B moon", "B moon ; A sun .", {"layout": False, "A": True, "B": True}),
        (template, "fill B , A . with A sun B moon", "B moon , A sun . .", {"layout": False, "A": True, "B": True}),
        (template, "fill B , A . with A sun B moon", "B moon , A sun", {"layout": False, "A": True, "B": True}),
        (template, "fill B , A . with A sun B moon", "A sun B moon", {"layout": False, "A": True, "B": True}),
        (template, "fill B , A . with A sun B moon", "moon , sun .", {"layout": False, "A": False, "B": False}),
        (template, "fill and C with C fire", "and C fire", {"layout": True, "C": True}),
        (template, "fill and C with C fire", "and C", {"layout": True, "C": False}),
        (template, "fill and C with C fire", "", {"layout": False, "C": False}),
    ],
)
def test_judges_by_hand(judge, prompt, response, expected):
    assert judge.gold_details(prompt, response) == expected
    assert judge.gold_score(prompt, response) == pytest.approx(sum(expected.values()) / len(expected))
    assert judge.gold_score(prompt, response, ended=False) == 0.0


def drawn(name: str, seed: int, n: int):
    """n prompts of a task with every kind enabled: (task, the generator that drew them, spec, prompt)."""
    task, rng, kinds = TASKS[name], random.Random(seed), DEFAULT_KINDS[name]
    for _ in range(n):
        spec = task.sample(rng, kinds)
        yield task, rng, spec, task.render(spec, kinds)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_prompts_round_trip_ask_one_to_four_checks_and_other_text_is_refused(name):
    for task, _, spec, prompt in drawn(name, 0, 300):
        assert task.parse(prompt) == spec
        assert 1 <= len(task.checks(spec)) <= 4
    for other in ("write me a poem", "words 5 start sun end any", "digits 3 1 ask max", "fill A , with A sun"):
        if not other.startswith({"words": "words", "digits": "digits", "template": "fill"}[name]):
            with pytest.raises(ValueError):
                TASKS[name].parse(other)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_respond_meets_exactly_the_requested_checks(name):
    for task, rng, spec, prompt in drawn(name, 1, 1000):
        meet = {kind: rng.random() < 0.5 for kind in task.checks(spec)}
        assert task.details(prompt, task.respond(spec, rng, meet)) == meet


@pytest.mark.parametrize("name", sorted(TASKS))
def test_minimal_pairs_differ_in_exactly_one_check_which_the_chosen_side_meets(name):
    world = SimpleNamespace(demonstrator_p=0.6, degenerate_fraction=0.0, label_noise=0.0)
    n_pairs = 0
    for task, rng, spec, prompt in drawn(name, 2, 500):
        pair = preference_pair(task, prompt, spec, rng, world)
        if pair is None:
            continue
        n_pairs += 1
        chosen = task.details(prompt, pair["chosen"][0]["content"])
        rejected = task.details(prompt, pair["rejected"][0]["content"])
        (differing,) = [check for check in chosen if chosen[check] != rejected[check]]
        assert chosen[differing] and not rejected[differing]
    assert n_pairs == 500  # flipping one check never ties


@pytest.mark.parametrize("name", NEW_WORLDS)
def test_degenerate_responses_are_never_empty(name):
    for task, rng, _, prompt in drawn(name, 3, 500):
        garbage = task.degenerate(rng)
        assert garbage.strip()
        if name == "digits":  # never a quantity's name followed by a value
            assert task.score(prompt, garbage) == 0.0


def test_world_options_that_do_not_fit_the_task_are_refused():
    world = tiny_config().data.world
    with pytest.raises(UserError, match=r"data.world.task='sums'.*digits"):
        task_of(SimpleNamespace(**{**vars(world), "task": "sums"}))
    with pytest.raises(UserError, match=r"data.world.kinds=\['words', 'start', 'end'\]: the digits task's checks"):
        task_of(SimpleNamespace(**{**vars(world), "task": "digits"}))
    with pytest.raises(UserError, match="always checks `layout`"):
        template.sample(random.Random(0), ("A", "B"))


def build_world(name: str, data_root: Path):
    from data_prep.prepare import ensure_prepared

    data = tiny_config(f"data={name}", f"paths.data={data_root}").data
    ensure_prepared(data, [data.sft_train])
    return data, Path(data.sft_train).parent


def read(directory: Path, name: str) -> list[dict]:
    with open(directory / f"{name}.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module", params=NEW_WORLDS)
def built(request, tmp_path_factory):
    """(world name, its data config, the directory it is built in), built from its recipe."""
    data, directory = build_world(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, data, directory


def test_recipe_builds_its_own_world_in_its_own_directory_and_names_its_judge(built):
    name, data, directory = built
    assert data.world.task == name and data.judge == f"tiny_world.{name}"
    assert directory.name == name and Path(data.dir).name == f"{name}-seed0"
    manifest = json.loads((directory / "manifest.json").read_text())
    recipe = manifest["recipe"]["world"]
    assert recipe["task"] == name and recipe["task_version"] == TASKS[name].version


def test_built_splits_hold_out_eval_prompts_and_pairs_are_labelled_by_the_judge(built):
    name, data, directory = built
    task = TASKS[name]
    eval_prompts = {r["prompt"][0]["content"] for r in read(directory, "prompts.eval")}
    assert len(eval_prompts) == 200
    train = {r["messages"][0]["content"] for r in read(directory, "sft.train")}
    for split in ("prefs.train", "prompts.train", "prefs.audit"):
        train |= {r["prompt"][0]["content"] for r in read(directory, split)}
    assert not eval_prompts & train
    pairs = read(directory, "prefs.train")
    agree = [task.score(p["prompt"][0]["content"], p["chosen"][0]["content"])
             > task.score(p["prompt"][0]["content"], p["rejected"][0]["content"]) for p in pairs]
    assert 0.88 < sum(agree) / len(agree) < 0.92  # label_noise 0.1; ties were dropped


def test_build_is_deterministic(built, tmp_path):
    name, _, first = built
    _, again = build_world(name, tmp_path)
    for path in sorted(first.glob("*.jsonl")) + [first / "tokenizer" / "tokenizer.json"]:
        assert (again / path.relative_to(first)).read_bytes() == path.read_bytes(), path.name


def test_prompts_and_responses_are_short_in_the_worlds_tokenizer(built):
    from transformers import AutoTokenizer

    name, data, directory = built
    tokenizer = AutoTokenizer.from_pretrained(data.tokenizer)
    length = lambda text: len(tokenizer(text)["input_ids"])  # noqa: E731
    demos = read(directory, "sft.train") + read(directory, "sft.eval")
    prompts = [r["messages"][0]["content"] for r in demos] + [r["prompt"][0]["content"]
                                                             for r in read(directory, "prompts.train")]
    assert max(map(length, prompts)) < 64
    assert max(length(r["messages"][1]["content"]) for r in demos) <= 12  # the demonstrator's, as pairs' real sides


def test_a_wrong_digit_is_not_always_on_one_side_of_the_right_one():
    """Were every wrong max below the right one (only the list's digits), "larger is better" would separate every
    max pair, and PPO would answer 9 to any list. Wrong digits come from the list half the time, else from anywhere."""
    rng = random.Random(0)
    question = digits.Question((3, 1, 4, 1), ("max", "min"))
    wrong = {"max": [], "min": []}
    for _ in range(400):
        tokens = digits.respond(question, rng, {"max": False, "min": False}).split()
        wrong["max"].append(int(tokens[1]))
        wrong["min"].append(int(tokens[3]))
    assert 4 not in wrong["max"] and 1 not in wrong["min"]
    assert any(v > 4 for v in wrong["max"]) and any(v < 4 for v in wrong["max"])
    assert any(v < 1 for v in wrong["min"]) and any(v > 1 for v in wrong["min"])
    assert 0.35 < sum(v in (1, 3) for v in wrong["max"]) / 400 < 0.7  # the list's own digits: the likely mistake


def test_a_missed_slot_often_holds_another_slots_value_and_a_missed_layout_can_repeat_an_item():
    """Were every wrong value a random one, "a value from the prompt" would separate every slot pair, and PPO would
    write one slot's value into every slot (it did, on template v2). A missed slot holds another slot's value half the
    time; a missed layout repeats an item (`A sun A sun`) as well as swapping or adding a literal."""
    rng = random.Random(0)
    form = template.Form(("A", ",", "B"), (("A", "sun"), ("B", "moon")))
    slot_b = [template.respond(form, rng, {"layout": True, "A": True, "B": False}).split()[4] for _ in range(400)]
    assert "moon" not in slot_b
    assert 0.35 < slot_b.count("sun") / 400 < 0.7  # A's value: the binding error
    assert len(set(slot_b)) > 5  # and values from anywhere else
    layouts = {template.respond(form, rng, {"layout": False, "A": True, "B": True}) for _ in range(400)}
    assert {"A sun A sun , B moon", "A sun , , B moon", "A sun , B moon B moon", "A sun , B moon ,"} <= layouts
    assert any(text.split()[2] not in (",", "A") for text in layouts)  # a literal swapped
    assert all(template.results(form, text) == {"layout": False, "A": True, "B": True} for text in layouts)
