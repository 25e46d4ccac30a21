"""Two-turn evaluation (MT-bench's way): a follow-up asked after the model's own answer, each turn judged and scored."""

from __future__ import annotations

import json

import pytest
from helpers import tiny_config

from align.core.tokens import chat_ids
from align.evaluation.multi_turn import next_turn, turn_label, turn_prompt

FIRST = [{"role": "user", "content": "words 3 start sun end any"}]


def test_a_follow_up_comes_after_the_models_own_answer():
    conversations = {0: FIRST, 1: [{"role": "user", "content": "words any"}], 2: FIRST}
    followups = [["again start moon"], [], ["again end bird", "again words 4"]]
    second = next_turn(conversations, {0: "sun sun sun", 1: "x", 2: "sun a b"}, followups, turn=2)
    assert sorted(second) == [0, 2]  # the prompt without a follow-up has no second turn
    assert second[0] == [*FIRST, {"role": "assistant", "content": "sun sun sun"},
                         {"role": "user", "content": "again start moon"}]
    third = next_turn(second, {0: "moon a b", 2: "sun a bird"}, followups, turn=3)
    assert list(third) == [2] and [m["content"] for m in third[2]] == [
        FIRST[0]["content"], "sun a b", "again end bird", "sun a bird", "again words 4"]
    assert turn_prompt(FIRST, followups[2], 1) == FIRST[0]["content"]  # what a single-turn judge always read
    assert turn_prompt(FIRST, followups[2], 3) == f"{FIRST[0]['content']}\nagain end bird\nagain words 4"
    history = [*FIRST, {"role": "assistant", "content": "sun a b"}, {"role": "user", "content": "again end bird"}]
    assert turn_prompt(history, ["again words 4"], 2) == f"{FIRST[0]['content']}\nagain end bird\nagain words 4"
    assert (turn_label("sft", 1), turn_label("sft", 2)) == ("sft", "sft turn 2")


JUDGE = '''
import json, os

def score(prompt, response, ended=True):
    with open(os.environ["JUDGE_LOG"], "a") as f:
        f.write(json.dumps(prompt) + "\\n")
    return float(ended) * len(prompt.splitlines()) / 3
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    import torch

    from align.modeling.models import load_causal_lm, load_reward_model

    cfg = tiny_config()
    out = tmp_path_factory.mktemp("models")
    lm = load_causal_lm(cfg.model, tokenizer, None, seed=0)
    # an LM that says " sun" whatever it reads, so that its answers decode and encode back to the same tokens and
    # a turn can be rescored from the text alone; the reward model still reads every token of the conversation
    with torch.no_grad():
        sun = tokenizer(" sun")["input_ids"][0]
        direction = torch.nn.functional.normalize(torch.randn(lm.config.n_embd), dim=0)
        lm.transformer.ln_f.weight.zero_()
        lm.transformer.ln_f.bias.copy_(direction)
        lm.transformer.wte.weight[sun] = 100 * direction
    lm.save_pretrained(out / "lm")
    load_reward_model(cfg.model, tokenizer, None, seed=1).save_pretrained(out / "rm")
    for d in ("lm", "rm"):
        tokenizer.save_pretrained(out / d)
    return out


def test_every_turn_is_a_row_judged_and_scored_in_its_own_conversation(tiny_data_root, tmp_path, models, tokenizer,
                                                                        monkeypatch):
    from align.eval import evaluate
    from align.evaluation.sampling import Completion
    from align.evaluation.scoring import reward_scores
    from align.modeling.models import load_reward_model

    prompts = [{"prompt": FIRST, "followups": ["again start moon", "again words 4"], "id": "a", "category": "edit"},
               {"prompt": [{"role": "user", "content": "words 4 start any end sun"}], "id": "b",
                "category": "plain"},
               {"prompt": [{"role": "user", "content": "end bird"}], "followups": ["again end fish"], "id": "c",
                "category": "edit"}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    (tmp_path / "my_judge.py").write_text(JUDGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("JUDGE_LOG", str(tmp_path / "judged.jsonl"))
    results = evaluate(tiny_config(
        f"paths.data={tiny_data_root}", f"paths.root={tmp_path}", f"data.prompts_eval={path}",
        "data.judge=my_judge:score", f"eval.models.sft={models / 'lm'}", f"eval.models.ppo={models / 'lm'}",
        "eval.models.base=null", f"eval.reward_model={models / 'rm'}", "eval.max_new_tokens=6", stage="eval"))

    rows = results["models"]
    assert list(rows) == ["sft", "ppo", "sft turn 2", "sft turn 3", "ppo turn 2", "ppo turn 3"]
    assert [(rows[r]["turn"], rows[r]["prompts"]) for r in rows] == [(1, 3), (1, 3), (2, 2), (3, 1), (2, 2), (3, 1)]
    assert all("kl" in r and "rm_win_rate" in r for r in rows.values())
    # the same weights under two labels answer every turn alike: the reference of each turn is its own turn
    assert rows["ppo turn 2"]["rm_win_rate"] == 0.5 and abs(rows["ppo turn 2"]["kl"]) < 1e-4
    second = rows["sft turn 2"]
    assert rows["sft"]["by_category"]["edit"]["prompts"] == 2 and second["by_category"] == {
        "edit": {"prompts": 2, "gold_score": second["gold_score"], "rm_score": second["rm_score"]}}

    judged = [json.loads(line) for line in (tmp_path / "judged.jsonl").read_text().splitlines()]
    assert "words 3 start sun end any\nagain start moon\nagain words 4" in judged  # turn 3 reads every user turn
    assert "end bird\nagain end fish" in judged

    # the report's samples show each prompt's every user turn, so a later turn's answer can be read against its own
    report = (tmp_path / "tiny" / "eval-baseline" / "report.md").read_text()
    assert "| words 3 start sun end any<br>again start moon<br>again words 4 |" in report

    lines = [json.loads(line) for line in (tmp_path / "tiny" / "eval-baseline" / "responses.jsonl").open()]
    assert [(line["id"], line["category"], sorted(line["responses"])) for line in lines][1] == (
        "b", "plain", ["ppo", "sft"])
    first = lines[0]
    assert first["followups"] == prompts[0]["followups"]
    # the second turn was answered, and scored, after the model's own first answer
    answers = first["responses"]
    conversation = [*FIRST, {"role": "assistant", "content": answers["sft"]["text"]},
                    {"role": "user", "content": "again start moon"}]
    prompt_ids = chat_ids(tokenizer, conversation, generation_prompt=True)
    full = chat_ids(tokenizer, [*conversation, {"role": "assistant", "content": answers["sft turn 2"]["text"]}])
    response_ids = full[len(prompt_ids):]
    assert answers["sft turn 2"]["text"].split() == ["sun"] * 6 and not answers["sft turn 2"]["ended"]
    response_ids = response_ids[: response_ids.index(tokenizer.eos_token_id)]
    rm = load_reward_model(tiny_config().model, tokenizer, str(models / "rm"), 0)
    completion = Completion(answers["sft turn 2"]["text"], answers["sft turn 2"]["ended"], len(response_ids),
                            prompt_ids, response_ids)
    rescored = reward_scores(rm, [completion], tokenizer.pad_token_id, 1).item()
    assert rescored == pytest.approx(answers["sft turn 2"]["rm"], abs=1e-4)


def test_the_chat_prints_a_reply_piece_by_piece_as_it_is_sampled(models, tokenizer, monkeypatch):
    import io
    import sys

    from transformers import AutoModelForCausalLM

    from align.chat import CUT, printing_streamer, reply

    class Pieces(io.StringIO):
        def __init__(self):
            super().__init__()
            self.pieces = []

        def write(self, text):
            if text:
                self.pieces.append(text)
            return len(text)

    out = Pieces()
    monkeypatch.setattr(sys, "stdout", out)
    cfg = tiny_config("chat.max_new_tokens=6", "chat.temperature=1.0")
    lm = AutoModelForCausalLM.from_pretrained(models / "lm")
    answer = reply(lm, tokenizer, FIRST, cfg, printing_streamer(tokenizer))
    assert answer == "sun sun sun sun sun sun" + CUT  # never ended: six tokens, then cut
    assert len(out.pieces) >= 3  # printed while it was sampled, not once at the end
    assert "".join(out.pieces).strip() == answer.removesuffix(CUT)


def test_a_model_shown_examples_goes_on_from_its_zero_shot_answers(tiny_data_root, tmp_path, models):
    """With eval.shots a model's first-turn rows are `ppo 0-shot`, `ppo 1-shot`; its second turn follows the 0-shot
    answers."""
    from align.eval import evaluate

    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": FIRST, "followups": ["again start moon"]}) + "\n"
                    + json.dumps({"prompt": [{"role": "user", "content": "end bird"}]}) + "\n")
    results = evaluate(tiny_config(
        f"paths.data={tiny_data_root}", f"paths.root={tmp_path}", f"data.prompts_eval={path}", "data.judge=null",
        f"eval.models.sft={models / 'lm'}", f"eval.models.ppo={models / 'lm'}", "eval.models.base=null",
        "+eval.shots.ppo=[0,1]", f"eval.reward_model={models / 'rm'}", "eval.max_new_tokens=4", stage="eval"))
    rows = results["models"]
    assert list(rows) == ["sft", "ppo 0-shot", "ppo 1-shot", "sft turn 2", "ppo turn 2"]
    assert rows["ppo turn 2"]["prompts"] == 1 and rows["ppo turn 2"]["rm_win_rate"] == 0.5
