"""The evaluation's parts: win rates, teacher-forced scores of sampled completions, the report's table."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from align.eval import audit_sensitivity, greedy_losses, unconfirmed_gains, win_rate
from align.evaluation.sampling import Completion
from align.evaluation.scoring import response_logprob_sums, reward_scores, rollout_layout
from align.evaluation.tables import markdown_table, table_rows, write_report

PAD = 0


def completion(prompt: list[int], response: list[int]) -> Completion:
    return Completion("", True, len(response), prompt, response)


def tiny_lm(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=40, n_positions=64,
                                      pad_token_id=PAD)).eval()


def test_win_rate_counts_ties_half():
    assert win_rate([1.0, 0.0, 0.5, 0.2], [0.0, 1.0, 0.5, 0.1]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert win_rate([0.3] * 5, [0.3] * 5) == 0.5
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])


def test_rollout_layout_left_pads_prompts_and_right_pads_responses():
    ids, width = rollout_layout([completion([5, 6, 7], [8, 9]), completion([5], [8, 9, 10, 11])], PAD)
    assert width == 3
    assert ids.tolist() == [[5, 6, 7, 8, 9, 0, 0], [0, 0, 5, 8, 9, 10, 11]]


def test_logprob_sums_match_each_sequence_alone_and_ignore_padding():
    """Batched with left and right padding, each response's log-probability equals the one computed unpadded."""
    lm = tiny_lm(0)
    batch = [completion([5, 6, 7, 3], [8, 9]), completion([5], [8, 9, 10, 11, 12]), completion([4, 4], [30])]
    temperature = 0.7
    batched = response_logprob_sums(lm, batch, PAD, temperature, batch_size=8)
    for c, got in zip(batch, batched):
        ids = torch.tensor([c.prompt_ids + c.response_ids])
        with torch.no_grad():
            logits = lm(ids).logits[0, len(c.prompt_ids) - 1 : -1] / temperature
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.response_ids)[:, None]).sum()
        assert got.item() == pytest.approx(expected.item(), abs=1e-4)


def test_kl_of_a_model_to_itself_is_zero_and_to_another_is_not():
    batch = [completion([5, 6, 7], [8, 9, 10]), completion([5], [11, 12])]
    own = response_logprob_sums(tiny_lm(0), batch, PAD, 1.0, batch_size=1)
    same = response_logprob_sums(tiny_lm(0), batch, PAD, 1.0, batch_size=2)
    other = response_logprob_sums(tiny_lm(1), batch, PAD, 1.0, batch_size=2)
    assert torch.allclose(own - same, torch.zeros(2), atol=1e-5)
    assert (own - other).abs().min() > 1e-3


def test_reward_scores_read_the_last_response_token():
    torch.manual_seed(0)
    rm = GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=40, n_positions=64,
                                                  num_labels=1, pad_token_id=PAD)).eval()
    batch = [completion([5, 6, 7], [8, 9]), completion([5], [8, 9, 10, 11])]
    scores = reward_scores(rm, batch, PAD, batch_size=2)
    for c, got in zip(batch, scores):
        with torch.no_grad():
            alone = rm(torch.tensor([c.prompt_ids + c.response_ids])).logits[0, 0]
        assert got.item() == pytest.approx(alone.item(), abs=1e-4)


def test_report_table_shows_the_columns_present_and_escapes_cells():
    results = {"reference": "sft", "models": {
        "sft": {"gold_score": 0.5, "gold_win_rate": 0.5, "eos_rate": 1.0, "response_tokens": 6.0, "prompts": 2},
        "ppo": {"gold_score": 0.75, "gold_win_rate": 0.625, "eos_rate": 1.0, "response_tokens": 5.5, "prompts": 2},
    }}
    header, rows = table_rows(results)
    assert header == ["model", "gold score", "win rate vs sft (gold)", "response tokens", "EOS rate"]
    assert rows[1] == ["ppo", "0.750", "0.625", "5.5", "1.00"]
    assert "a \\| b<br>c" in markdown_table(["x"], [["a | b\nc"]])


def test_a_gain_the_audit_rm_does_not_confirm_is_a_warning():
    """Warn when the audit RM leaves less than half of the training RM's edge over the reference; a model whose edge
    both confirm, one without an edge, the reference itself and rows without an audit RM stay quiet."""
    summary = {
        "sft": {"rm_win_rate": 0.5, "audit_rm_win_rate": 0.5},
        "gamed": {"rm_win_rate": 0.80, "audit_rm_win_rate": 0.60},     # edge 0.30, confirmed 0.10 < 0.15
        "real": {"rm_win_rate": 0.70, "audit_rm_win_rate": 0.62},      # edge 0.20, confirmed 0.12 >= 0.10
        "no_edge": {"rm_win_rate": 0.52, "audit_rm_win_rate": 0.30},   # within the margin: nothing to confirm
        "unaudited": {"rm_win_rate": 0.90},
    }
    warnings = unconfirmed_gains(summary, "sft")
    assert len(warnings) == 1 and warnings[0].startswith("gamed beats sft on 80% of prompts by the training RM")
    results = {"reference": "sft", "models": {"sft": {"rm_score": 0.0}}, "warnings": warnings}
    header, rows = table_rows(results)
    assert header == ["model", "RM score"]


def test_a_weaker_audit_rm_is_expected_to_confirm_less(tmp_path):
    """The audit RM's expected share of a real gain is its held-out accuracy's distance from chance over the training
    RM's, each read from the eval.json its RM run wrote next to `final/`: a real gain that a half-sensitive audit RM
    confirms a third of warns at full sensitivity and is quiet at half; a collapse it scores below the reference warns
    at any; without an RM run's eval.json the share is unknown."""
    def rm_run(name: str, accuracy: float) -> str:
        (tmp_path / name / "final").mkdir(parents=True)
        (tmp_path / name / "eval.json").write_text(json.dumps({"pairs": 400, "accuracy": accuracy}))
        return str(tmp_path / name / "final")

    training, weak, strong, at_chance = (rm_run("rm", 0.86), rm_run("weak", 0.68), rm_run("strong", 0.95),
                                         rm_run("chance", 0.40))
    assert audit_sensitivity(training, weak) == pytest.approx(0.5)
    assert audit_sensitivity(training, strong) == 1.0 and audit_sensitivity(training, at_chance) == 0.0
    assert audit_sensitivity(training, str(tmp_path / "elsewhere")) is None and audit_sensitivity(None, weak) is None
    summary = {"sft": {"rm_win_rate": 0.5, "audit_rm_win_rate": 0.5},
               "real": {"rm_win_rate": 0.78, "audit_rm_win_rate": 0.59},       # edge 0.28, confirmed 0.09
               "collapsed": {"rm_win_rate": 0.98, "audit_rm_win_rate": 0.10}}
    assert [w.split()[0] for w in unconfirmed_gains(summary, "sft")] == ["real", "collapsed"]
    assert [w.split()[0] for w in unconfirmed_gains(summary, "sft", sensitivity=0.5)] == ["collapsed"]


def test_the_report_says_how_much_the_audit_rm_can_confirm(tmp_path):
    results = {"reference": "sft", "prompts_file": "p.jsonl", "temperature": 0.8, "max_new_tokens": 16, "seed": 0,
               "models": {"sft": {"prompts": 2, "rm_score": 0.0, "audit_rm_score": 0.0}}, "warnings": []}
    write_report(tmp_path / "plain.md", results, ["q1", "q2"], {"sft": ["a", "b"]})
    write_report(tmp_path / "audited.md", {**results, "audit_sensitivity": 0.42}, ["q1", "q2"], {"sft": ["a", "b"]})
    assert "audit RM sees" not in (tmp_path / "plain.md").read_text()
    assert "The audit RM sees 42% of a real gain" in (tmp_path / "audited.md").read_text()


def test_a_greedy_loss_beyond_two_standard_errors_is_a_warning():
    """Warn when a model no worse than the reference by its sampled gold answers worse greedily, by more than two
    paired standard errors on the same prompts; a loss within noise, a gain, a model worse in sampling too and the
    reference itself stay quiet."""
    sft = [1.0] * 100
    greedy = {"sft": sft,
              "worse": [0.0] * 10 + [1.0] * 90,    # 0.10 lower, standard error 0.03
              "noisy": [0.0] * 2 + [1.0] * 98,     # 0.02 lower, standard error 0.014: within two
              "better": [1.0] * 100,
              "base": [0.0] * 100}                 # far worse greedily, and in sampling too
    sampled = {"sft": 0.6, "worse": 0.7, "noisy": 0.7, "better": 0.7, "base": 0.1}
    warnings = greedy_losses(greedy, sampled, "sft")
    assert len(warnings) == 1
    assert warnings[0].startswith("worse's greedy answers score 0.900 by the gold judge, sft's 1.000")
    no_spread = greedy_losses({"sft": sft, "ppo": [0.9] * 100}, {"sft": 0.6, "ppo": 0.6}, "sft")  # any loss counts
    assert len(no_spread) == 1


def test_greedy_answers_in_a_left_padded_batch_are_each_prompts_own(tiny_data_root):
    """The evaluation's sampler (transformers' generate, which decodes finished rows on as padding without an
    attention mask, and warns so) answers each prompt of a left-padded batch as it answers that prompt alone."""
    from helpers import tiny_config

    from align.evaluation.sampling import sample_ids
    from align.modeling.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_config(f"paths.data={tiny_data_root}").model)
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=64,
                                    initializer_range=0.3, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id)).eval()
    prompts = [tokenizer("words 3 start sun end any")["input_ids"], tokenizer("moon")["input_ids"],
               tokenizer("words any start any end happy bad")["input_ids"]]

    def answers(batch_size):
        return [c.response_ids for c in sample_ids(lm, tokenizer, prompts, max_new_tokens=8, temperature=0,
                                                   batch_size=batch_size, seed=0, stop_ids=[tokenizer.eos_token_id])]

    together, alone = answers(3), answers(1)
    assert together == alone
    assert len({tuple(a) for a in alone}) == 3  # the answers differ, so each row's own context decided its answer


def test_the_evaluation_scores_with_the_audit_rm_and_reads_each_rms_accuracy_from_its_own_run(tiny_data_root,
                                                                                              tokenizer, tmp_path):
    """align.eval end to end with an audit RM: every row gets the audit RM's score and win rate beside the training
    RM's, and the audit sensitivity comes from the two RM runs in the right order (swapped, it would be 1)."""
    from helpers import tiny_config

    from align.eval import evaluate
    from align.modeling.models import load_causal_lm, load_reward_model

    cfg = tiny_config()
    for name, seed in (("sft", 0), ("ppo", 3)):
        load_causal_lm(cfg.model, tokenizer, None, seed=seed).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    for name, seed, accuracy in (("rm", 1, 0.9), ("audit", 2, 0.7)):
        final = tmp_path / name / "final"
        load_reward_model(cfg.model, tokenizer, None, seed=seed).save_pretrained(final)
        tokenizer.save_pretrained(final)
        (tmp_path / name / "eval.json").write_text(json.dumps({"pairs": 400, "accuracy": accuracy}))
    results = evaluate(tiny_config(
        f"paths.data={tiny_data_root}", f"paths.root={tmp_path}", "eval.models.base=null",
        f"eval.models.sft={tmp_path / 'sft'}", f"eval.models.ppo={tmp_path / 'ppo'}",
        f"eval.reward_model={tmp_path / 'rm' / 'final'}", f"eval.audit_reward_model={tmp_path / 'audit' / 'final'}",
        "eval.max_new_tokens=4", stage="eval"))

    assert results["audit_sensitivity"] == pytest.approx((0.7 - 0.5) / (0.9 - 0.5))
    sft, ppo = results["models"]["sft"], results["models"]["ppo"]
    assert sft["audit_rm_score"] != pytest.approx(sft["rm_score"])  # another model's scores, not the training RM's
    assert sft["audit_rm_win_rate"] == 0.5 and ppo["audit_rm_win_rate"] != ppo["rm_win_rate"]
    assert "The audit RM sees 50% of a real gain" in (tmp_path / "tiny" / "eval-baseline" / "report.md").read_text()


def test_no_prompt_short_enough_is_an_error_naming_the_file_the_limit_and_the_key(tiny_data_root, tokenizer, tmp_path):
    from helpers import tiny_config

    from align.core.errors import UserError
    from align.eval import evaluate

    tokenizer.save_pretrained(tmp_path / "sft")
    cfg = tiny_config(f"paths.data={tiny_data_root}", f"paths.root={tmp_path}", "eval.models.base=null",
                      "eval.models.ppo=null", f"eval.models.sft={tmp_path / 'sft'}", "eval.reward_model=null",
                      "eval.max_prompt_tokens=2", stage="eval")
    with pytest.raises(UserError, match=r"none of the 200 prompts of .*/prompts\.eval\.jsonl fits eval\.max_prompt_"
                                        r"tokens=2: the shortest has \d+ tokens; raise eval\.max_prompt_tokens"):
        evaluate(cfg)
