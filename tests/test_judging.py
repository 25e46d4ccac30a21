"""Loading the task's gold judge by name, and the per-check numbers that show which part of a task a model (or a
reward model) fails."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import tiny_config

from align.core.errors import UserError
from align.evaluation.judging import NO_JUDGE, Judge, check_judge, check_rates, load_judge
from align.evaluation.rm_eval import agreement_by_check, checks_at_chance, held_out_overstates, own_samples_agreement
from data_prep.tiny_world import judge as tiny_judge


def data(judge: str | None):
    return dataclasses.replace(tiny_config("paths.data=/unused").data, judge=judge)


def test_a_built_in_judge_by_module_name_and_any_function_by_its_import_path():
    built_in = load_judge(data("tiny_world.judge"))
    assert built_in.score is tiny_judge.gold_score and built_in.details is tiny_judge.gold_details
    by_path = load_judge(data("data_prep.tiny_world.judge:gold_score"))
    assert by_path.score is tiny_judge.gold_score and by_path.details is tiny_judge.gold_details
    assert load_judge(data(None)) is None


@pytest.mark.parametrize("name, message", [("no_such_task.judge", "cannot import data_prep.no_such_task.judge"),
                                           ("json:no_such_function", "json has no function 'no_such_function'"),
                                           ("no_such_package.mod:f", "cannot import no_such_package.mod")])
def test_a_judge_that_cannot_be_loaded_is_a_user_error_naming_the_key(name, message):
    with pytest.raises(UserError, match="data.judge=") as error:
        load_judge(data(name))
    assert message in str(error.value)


def test_check_rates_count_only_the_prompts_that_ask_for_the_check():
    judge = load_judge(data("tiny_world.judge"))
    prompts = ["words 2 start sun end any", "words any start any end moon", "words 2 start any end any"]
    responses = ["sun moon", "sun moon", "sun"]
    assert check_rates(judge, prompts, responses, [True, True, True]) == {"end": 1.0, "start": 1.0, "words": 0.5}
    # a response that never ended passes nothing
    assert check_rates(judge, prompts, responses, [False, True, True]) == {"end": 1.0, "start": 0.0, "words": 0.0}


def test_rm_agreement_by_check_uses_only_pairs_that_differ_in_that_check_alone():
    judge = Judge("fake", score=lambda p, r, ended=True: 0.0,
                  details=lambda p, r: {"a": "a" in r, "b": "b" in r})
    pairs = [{"chosen": [{"content": c}], "rejected": [{"content": r}]}
             for c, r in [("a", ""), ("ab", "b"), ("b", ""), ("ab", ""), ("a", "a")]]
    agrees = torch.tensor([True, False, True, True, False])
    decided = torch.tensor([True, True, True, True, False])
    by_check = agreement_by_check(judge, [""] * 5, pairs, agrees, decided)
    assert by_check == {"a": {"agreement": 0.5, "pairs": 2}, "b": {"agreement": 1.0, "pairs": 1}}


def test_agreement_on_own_samples_counts_the_pairs_of_one_prompt_the_judge_tells_apart():
    gold = torch.tensor([[1.0, 0.0, 0.0],    # pairs (0,1), (0,2) decided; (1,2) not
                         [0.5, 0.5, 0.5],    # nothing decided
                         [0.0, 1.0, 0.5]])   # all three decided
    scores = torch.tensor([[2.0, 1.0, 3.0],  # (0,1) agrees, (0,2) disagrees
                           [0.0, 9.0, -9.0],
                           [1.0, 1.0, 0.0]])  # (0,1) a tie: half; (0,2) disagrees; (1,2) agrees
    assert own_samples_agreement(gold, scores) == ((1 + 0 + 0.5 + 0 + 1) / 5, 5)
    # the scores of different prompts are never compared: shifting one prompt's scores changes nothing
    assert own_samples_agreement(gold, scores + torch.tensor([[100.0], [0.0], [-100.0]])) == ((2.5) / 5, 5)
    assert own_samples_agreement(torch.ones(4, 2), torch.randn(4, 2)) == (None, 0)


@pytest.mark.parametrize("own, pairs, warned", [(0.62, 306, True),    # the sort task's RM at 2,000 demonstrations
                                                (0.96, 667, False),   # words seed 0
                                                (0.88, 284, True), (0.90, 284, False),  # more than 0.1 below 0.99
                                                (0.50, 49, False),    # too few pairs to say
                                                (None, 0, False)])
def test_held_out_agreement_overstates_the_rm_when_it_misses_the_policys_own_mistakes(own, pairs, warned):
    evaluation = {"gold_agreement": 0.99, "policy_gold_agreement": own, "policy_decided_pairs": pairs}
    assert held_out_overstates(evaluation) is warned
    assert held_out_overstates({"gold_agreement": 0.99}) is False  # no check ran


def test_a_check_the_rm_agrees_on_no_better_than_a_coin_is_named():
    """Within two standard errors of 0.5 (below 0.5 + 1/sqrt(n)) is chance; fewer than 10 pairs say nothing."""
    by_check = {"start": {"agreement": 0.53, "pairs": 116},   # words seed 0's blind RM: bound 0.593
                "end": {"agreement": 0.97, "pairs": 131},
                "A": {"agreement": 0.60, "pairs": 73},        # bound 0.617
                "B": {"agreement": 0.62, "pairs": 73},        # just above it
                "rare": {"agreement": 0.0, "pairs": 9}}
    assert checks_at_chance(by_check) == ["start", "A"]


def test_check_judge_tries_the_judge_on_every_held_out_prompt_and_names_the_keys_when_it_fails(
        tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "prompts.eval.jsonl"
    prompts.write_text('{"prompt": [{"role": "user", "content": "say sun"}]}\n'
                       '{"prompt": [{"role": "user", "content": "say moon"}]}\n')
    (tmp_path / "own_judge.py").write_text("def score(prompt, response, ended=True):\n"
                                           "    return float(ended and response == prompt.split()[-1])\n\n\n"
                                           "def broken(prompt, response, ended=True):\n    return float('nan')\n\n\n"
                                           "def sun_only(prompt, response, ended=True):\n"
                                           "    return {'sun': 1.0}[prompt.split()[-1]]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    other_task = dataclasses.replace(data("tiny_world.judge"), prompts_eval=str(prompts))
    with pytest.raises(UserError, match=r"data.judge='tiny_world.judge' fails on prompt 1 of "
                                        rf"data.prompts_eval={prompts} \('say sun'\).*data.judge=null"):
        check_judge(other_task)
    with pytest.raises(UserError, match="data.judge='own_judge:broken' fails .* is nan"):
        check_judge(dataclasses.replace(other_task, judge="own_judge:broken"))
    with pytest.raises(UserError, match=r"'own_judge:sun_only' fails on prompt 2 .*\('say moon'\): KeyError"):
        check_judge(dataclasses.replace(other_task, judge="own_judge:sun_only"))
    assert check_judge(dataclasses.replace(other_task, judge="own_judge:score")).name == "own_judge:score"
    assert capsys.readouterr().out == ""
    assert check_judge(dataclasses.replace(other_task, judge=None)) is None
    assert capsys.readouterr().out == f"{NO_JUDGE}\n"  # said once, so that missing gold numbers are no surprise


@pytest.mark.parametrize("override, said", [("rm.policy_check_samples=1", None),
                                            ("paths.rm=/runs/tiny/rm-audit", None),  # the audit RM: PPO never uses it
                                            ("data.prompts_eval=null", None),
                                            ("distributed.world_size=2", "runs in one process"),
                                            ("ppo.policy_init=/no/such/model", "not a local model directory")])
def test_the_rms_check_on_the_policys_own_answers_is_left_out_where_it_cannot_run(override, said, capsys):
    from align.rm import check_on_policy

    cfg = tiny_config("paths.root=/runs", "paths.data=/data", override, stage="rm")
    judge = Judge("fake", score=lambda p, r, ended=True: 0.0, details=None)
    assert check_on_policy(cfg, None, None, judge) == {}
    printed = capsys.readouterr().out
    assert (said in printed) if said else "policy's own answers" not in printed
