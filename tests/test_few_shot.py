"""Zero-, one- and few-shot prompting in the evaluation: which examples, how they are shown, how the rows are scored."""

from __future__ import annotations

import json

import pytest
from helpers import tiny_config

from align.core.errors import UserError
from align.core.tokens import chat_ids
from align.evaluation.few_shot import as_zero_shot_chat, chat_prompt, plain_text_prompt, shots_for, solved_examples
from align.evaluation.sampling import Completion, line_end_ids, sample_ids

QUESTION = [{"role": "user", "content": "words 3 start sun end any"}]


def demo(prompt: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


def test_examples_are_solved_and_never_an_evaluation_prompt():
    from align.evaluation.judging import load_judge

    judge = load_judge(tiny_config().data)
    records = [demo("words 2 start sun end any", "sun moon"),        # solved
               demo("words 2 start sun end any", "moon sun"),        # the start word missed
               demo("words 3 start sun end any", "sun moon tree"),   # solved, but an evaluation prompt
               demo("words any start any end tree", "fish tree")]    # solved
    held_out = {QUESTION[0]["content"]}
    assert solved_examples(records, held_out, judge) == [("words 2 start sun end any", "sun moon"),
                                                         ("words any start any end tree", "fish tree")]
    assert len(solved_examples(records, held_out, None)) == 3  # without a judge, every answer is an example


def test_more_examples_only_add_to_the_first_ones():
    examples = [(f"words {n} start any end any", "sun " * n) for n in range(1, 10)]
    one, four = shots_for(5, examples, 1, seed=0), shots_for(5, examples, 4, seed=0)
    assert all(a == b[:1] for a, b in zip(one, four))
    assert len({tuple(s) for s in four}) > 1  # prompts get different examples
    with pytest.raises(ValueError):
        shots_for(1, examples, 10, seed=0)


def test_examples_shown_as_turns_or_as_the_pretraining_pages_write_them():
    from data_prep.tiny_world.build import pretraining_document

    shots = [("words 2 start sun end any", "sun moon"), ("words any start any end tree", "fish tree")]
    assert chat_prompt(QUESTION, shots) == [*demo(*shots[0])["messages"], *demo(*shots[1])["messages"], *QUESTION]
    # plain text: each example a prompt line and an answer line, blank lines between, like a page of the world's web
    page = plain_text_prompt(QUESTION[0]["content"], shots) + "sun moon tree"
    assert page == "words 2 start sun end any\nsun moon\n\nwords any start any end tree\nfish tree\n\n" \
                   "words 3 start sun end any\nsun moon tree"
    # the world's pages are written the same way: examples split at blank lines, each a prompt line, an answer line
    import random

    from data_prep.tiny_world import words

    world = tiny_config().data.world
    world.pretrain_task_fraction = 1.0
    rng = random.Random(3)
    page = pretraining_document(words.TASK, lambda: (QUESTION[0]["content"], words.TASK.parse(QUESTION[0]["content"])),
                                rng, world)["text"]
    examples = page.split("\n\n")
    assert 2 <= len(examples) <= 5 and all(e.split("\n")[0] == QUESTION[0]["content"] for e in examples)
    assert all(len(e.split("\n")) == 2 for e in examples)


def test_an_answer_is_scored_as_the_same_tokens_a_chat_model_would_have_given(tokenizer):
    answer = "sun moon tree"
    full = chat_ids(tokenizer, QUESTION + [{"role": "assistant", "content": answer}])
    prompt = chat_ids(tokenizer, QUESTION, generation_prompt=True)
    eos_at = full.index(tokenizer.eos_token_id, len(prompt))
    plain = Completion(answer, True, 4, [1, 2, 3], [7, 8, 9, 10])  # sampled in another context
    scored = as_zero_shot_chat(tokenizer, QUESTION, plain)
    assert scored.prompt_ids == prompt and scored.response_ids == full[len(prompt): eos_at + 1]
    unfinished = as_zero_shot_chat(tokenizer, QUESTION, Completion(answer, False, 3, [1], [7, 8, 9]))
    assert unfinished.response_ids == scored.response_ids[:-1] and not unfinished.ended


def test_plain_text_answers_end_at_the_first_line_end(tokenizer):
    from align.modeling.models import load_causal_lm

    model = load_causal_lm(tiny_config().model, tokenizer, None, seed=0)
    stops = line_end_ids(tokenizer)
    assert tokenizer.eos_token_id in stops and tokenizer("a\nb")["input_ids"][1] in stops
    prompts = [tokenizer(plain_text_prompt(QUESTION[0]["content"], []))["input_ids"]] * 16
    completions = sample_ids(model, tokenizer, prompts, 24, 1.5, 16, 0, stops)
    assert any(c.ended for c in completions) and any(not c.ended for c in completions)
    for c in completions:
        assert [t for t in c.response_ids[:-1] if t in stops] == []
        assert c.ended == (c.response_ids[-1] in stops) and "\n" not in c.text


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    from align.modeling.models import load_causal_lm, load_reward_model

    cfg = tiny_config()
    out = tmp_path_factory.mktemp("models")
    load_causal_lm(cfg.model, tokenizer, None, seed=0).save_pretrained(out / "lm")
    load_reward_model(cfg.model, tokenizer, None, seed=1).save_pretrained(out / "rm")
    for d in ("lm", "rm"):
        tokenizer.save_pretrained(out / d)
    return out


def evaluation(tiny_data_root, tmp_path, model_dir, *overrides):
    from align.eval import evaluate

    return evaluate(tiny_config(
        f"paths.data={tiny_data_root}", f"paths.root={tmp_path}", f"eval.models.base={model_dir / 'lm'}",
        f"eval.models.sft={model_dir / 'lm'}", "eval.models.ppo=null", f"eval.reward_model={model_dir / 'rm'}",
        "eval.num_prompts=6", "eval.max_new_tokens=8", *overrides, stage="eval"))


def test_a_row_per_number_of_examples_each_scored_in_the_bare_chat_context(tiny_data_root, tmp_path, model_dir):
    results = evaluation(tiny_data_root, tmp_path, model_dir, "eval.shots.base=[0,2]", "eval.plain_text=[base]")
    rows = results["models"]
    assert list(rows) == ["base 0-shot", "base 2-shot", "sft"]
    assert [(r["shots"], r["plain_text"]) for r in rows.values()] == [(0, True), (2, True), (0, False)]
    assert "kl" not in rows["base 0-shot"] and "kl" in rows["sft"]  # KL only where the context is the reference's
    assert all("gold_score" in r and "rm_score" in r for r in rows.values())
    lines = [json.loads(line) for line in (tmp_path / "tiny" / "eval-baseline" / "responses.jsonl").open()]
    assert len(lines) == 6 and set(lines[0]["responses"]) == set(rows)


def test_the_reference_stays_zero_shot_and_labels_must_exist(tiny_data_root, tmp_path, model_dir):
    with pytest.raises(UserError, match="keep it zero-shot"):
        evaluation(tiny_data_root, tmp_path, model_dir, "+eval.shots.sft=[0,1]")
    with pytest.raises(UserError, match=r"eval.plain_text names \['mine'\]"):
        evaluation(tiny_data_root, tmp_path, model_dir, "eval.plain_text=[mine]")
