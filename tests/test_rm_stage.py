"""Stage 2 through the real entry point (`python -m align.rm`): the tiny world and the real HH-RLHF slice."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from helpers import SHARED_DATA, run_module, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rm_run(tiny_rm_dir):
    return tiny_rm_dir


def test_rm_agrees_with_the_gold_judge_on_held_out_pairs(rm_run):
    evaluation = json.loads((rm_run / "eval.json").read_text())
    print(f"tiny RM: gold agreement {evaluation['gold_agreement']:.3f}, label accuracy {evaluation['accuracy']:.3f}, "
          f"longer-wins baseline {evaluation['longer_wins_accuracy']:.3f}")
    assert evaluation["gold_agreement"] >= 0.75
    assert evaluation["accuracy"] > evaluation["longer_wins_accuracy"]
    assert evaluation["correct_vs_empty"] >= 0.95  # a right answer over none
    assert evaluation["good_vs_empty"] >= 0.95  # and a partly right one: the length-normalised implicit score
    assert sum(b["pairs"] for b in evaluation["by_margin"].values()) == evaluation["pairs"]
    # on the SFT model's own answers too: the tiny world's pairs hold the mistakes a small model makes
    print(f"on SFT's own answers: {evaluation['policy_gold_agreement']:.3f} of {evaluation['policy_decided_pairs']}")
    assert evaluation["policy_decided_pairs"] >= 100 and evaluation["policy_gold_agreement"] >= 0.85


def test_saved_rm_scores_in_plain_transformers_normalised(rm_run, tiny_data_root):
    """The tiny experiment's implicit RM from its files alone: two causal LMs and implicit_reward.json give
    beta x the reply's log-ratio, times the typical reply's tokens over the reply's tokens + 1, minus the offset,
    which is 0 on average over the reference demonstrations."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = tiny_config(f"paths.data={tiny_data_root}")
    spec = json.loads((rm_run / "final" / "implicit_reward.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(rm_run / "final")
    policy, reference = (AutoModelForCausalLM.from_pretrained(p) for p in (rm_run / "final", spec["reference"]))
    demos = [json.loads(line)["messages"] for line in open(config.data.sft_eval)][: config.rm.normalize_samples]

    def reply_logprob(model, ids, start):
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        return logprobs.gather(1, ids[0, 1:, None])[start - 1:].sum().item()

    scores = []
    for messages in demos:
        ids = tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)["input_ids"]
        start = len(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True,
                                                  return_dict=True)["input_ids"])
        ratio = reply_logprob(policy, ids, start) - reply_logprob(reference, ids, start)
        per_token = spec["typical_tokens"] / (ids.shape[1] - start + 1)
        scores.append(spec["beta"] * ratio * per_token - spec["offset"])
    assert abs(sum(scores) / len(scores)) < 1e-3  # the reference demonstrations score a mean of 0


def test_rm_without_sft_output_fails_with_a_clear_message(tmp_path, tiny_data_root):
    result = run_module("align.rm", "+experiment=tiny", f"paths.root={tmp_path}", f"paths.data={tiny_data_root}",
                        timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no model at" in result.stderr and "align.sft" in result.stderr


def test_pairs_with_a_margin_and_pairs_without_are_refused_before_training(tmp_path, tiny_data_root, rm_run):
    # the dataset takes its columns from the first pair: mixed, margins vanish or the collator fails (issue 18)
    config = tiny_config(f"paths.data={tiny_data_root}")
    pairs = [json.loads(line) for line in open(config.data.prefs_train)][:4]
    pairs[2]["margin"] = 1.5
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    result = run_module("align.rm", "+experiment=tiny", f"paths.root={tmp_path}", f"paths.data={tiny_data_root}",
                        f"rm.init_from={rm_run.parent / 'sft' / 'final'}", f"data.prefs_train={mixed}", timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{mixed}: 1 of 4 pairs have a margin" in result.stderr and "Traceback" not in result.stderr


def test_rm_and_eval_on_the_real_hh_rlhf_slice(tmp_path):
    """A tiny GPT-2 on the HH-RLHF slice through data_prep's converter: accuracy next to the length baseline; then
    align.eval on the slice's held-out prompts, where only the RM judges (no gold judge for real data)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from align.core.tokens import train_tiny_tokenizer
    from data_prep.sources import read_source

    hh = SHARED_DATA / "hh_rlhf_harmless_base_test" / "test_first1600.jsonl.gz"
    model_dir = tmp_path / "gpt2-local"
    texts = [row.record["chosen"] for row in read_source(str(hh), "train").rows[:400]]
    train_tiny_tokenizer(texts, 2000, model_dir)
    GPT2LMHeadModel(GPT2Config(vocab_size=2000, n_layer=2, n_embd=64, n_head=2, n_positions=512)).save_pretrained(
        model_dir)
    alpaca = SHARED_DATA / "alpaca_first100" / "alpaca_tiny.json"  # demonstrations to normalise on
    common = ["+experiment=small", f"paths.root={tmp_path}", f"paths.data={tmp_path}/data",
              f"data.sources.hh_rlhf.source={hh}", "data.sources.hh_rlhf.eval_size=200",
              f"data.sources.alpaca.source={alpaca}", "data.sources.alpaca.eval_size=20",
              f"model.name_or_path={model_dir}", "logger=none"]
    result = run_module("align.rm", *common, f"rm.init_from={model_dir}", "rm.max_steps=20", "rm.batch_size=8",
                        "rm.grad_accum=1", "rm.max_length=512", "rm.eval_steps=1000", "rm.lr=1e-3")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "data" / "hh_rlhf" / "manifest.json").read_text())
    assert manifest["counts"]["dropped"]["role_order"] == 3  # reported, not crashed on
    evaluation = json.loads((tmp_path / "small" / "rm" / "eval.json").read_text())
    print(f"HH slice, tiny RM, 20 steps: accuracy {evaluation['accuracy']:.3f} vs longer-wins "
          f"{evaluation['longer_wins_accuracy']:.3f} on {evaluation['pairs']} pairs")
    assert 0 <= evaluation["accuracy"] <= 1 and 0 <= evaluation["longer_wins_accuracy"] <= 1
    metrics = json.loads((tmp_path / "small" / "rm" / "metrics.json").read_text())
    assert evaluation["pairs"] == 200 - metrics["dropped_too_long"]["eval"]

    # The base model under two labels: the same weights and seed sample the same responses, so KL 0, win rate 1/2.
    result = run_module(
        "align.eval", *common, "eval.models.base=base", f"eval.models.sft={model_dir}", "eval.models.ppo=null",
        "eval.num_prompts=12", "eval.max_new_tokens=12", "eval.batch_size=6", "eval.temperature=1.0",
        "eval.max_prompt_tokens=400")
    assert result.returncode == 0, result.stderr[-3000:]
    models = json.loads((tmp_path / "small" / "eval-baseline" / "eval.json").read_text())["models"]
    assert set(models) == {"base", "sft"} and "gold_score" not in models["sft"]
    assert models["base"]["rm_win_rate"] == 0.5 and models["base"]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert models["base"]["rm_score"] == pytest.approx(models["sft"]["rm_score"])
    report = (tmp_path / "small" / "eval-baseline" / "report.md").read_text()
    first_prompt = json.loads((tmp_path / "data" / "hh_rlhf" / "prompts.eval.jsonl").read_text().splitlines()[0])
    assert first_prompt["prompt"][-1]["content"].splitlines()[0].replace("|", "\\|") in report


def test_small_rm_without_the_hub_fails_fast_with_a_clear_message(tmp_path):
    result = run_module("align.rm", "+experiment=small", f"paths.root={tmp_path}", f"paths.data={tmp_path}",
                        f"rm.init_from={tmp_path}", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hub is not reachable" in result.stderr and "data.sources." in result.stderr


def test_checks_the_rm_is_blind_to_are_named_in_a_warning_and_in_eval_json(tiny_data_root, tmp_path, capsys):
    """An RM that has barely trained agrees with the judge at chance: the stage says so by check, before PPO."""
    import json

    from helpers import rm_on_a_slice

    from align import rm as rm_stage

    cfg = rm_on_a_slice(tiny_data_root, tmp_path, "rm.max_steps=2", "rm.batch_size=8", "rm.restarts=1", train=32)
    rm_stage.train(cfg)
    evaluation = json.loads((tmp_path / "tiny" / "rm" / "eval.json").read_text())
    blind = evaluation["checks_at_chance"]
    assert blind and set(blind) <= set(evaluation["gold_agreement_by_check"])
    warning = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: on the held-out")]
    assert len(warning) == 1 and all(f"`{check}` (" in warning[0] for check in blind), warning


def test_an_implicit_rm_trains_scores_normalised_and_ppo_warns_below_its_floor(tmp_path, tiny_data_root):
    """rm.kind=implicit: DPO's loss from the SFT model, saved with its reference, scoring the demonstrations at mean
    0; PPO against it at a KL coefficient below beta x ppo.temperature warns (a KL sweep goes there on purpose) and
    runs."""
    from helpers import rm_on_a_slice

    from align import rm as rm_stage
    from align.modeling.implicit_reward import typical_tokens
    from align.modeling.models import load_reward_scorer, load_tokenizer
    from align.modeling.reward_model import score

    cfg = rm_on_a_slice(tiny_data_root, tmp_path, "rm.kind=implicit", "rm.beta=0.3", "rm.max_steps=10",
                        "rm.batch_size=8", "rm.lr=3e-4", train=64)
    rm_stage.train(cfg)
    rm_dir = Path(cfg.paths.rm)
    evaluation = json.loads((rm_dir / "eval.json").read_text())
    assert 0 <= evaluation["gold_agreement"] <= 1 and evaluation["pairs"] > 0
    spec = json.loads((rm_dir / "final" / "implicit_reward.json").read_text())
    assert spec["reference"] == str(tmp_path / "sft")
    tokenizer = load_tokenizer(cfg.model, path=str(rm_dir / "final"))
    chosen = [p["prompt"] + p["chosen"] for p in map(json.loads, open(cfg.data.prefs_train))]  # length-normalised
    assert spec["typical_tokens"] == pytest.approx(typical_tokens(tokenizer, chosen[: rm_stage.TYPICAL_SAMPLE]))
    scorer = load_reward_scorer(cfg.model, tokenizer, str(rm_dir / "final"), seed=0)
    demonstrations = [json.loads(line)["messages"] for line in open(cfg.data.sft_eval)][: cfg.rm.normalize_samples]
    assert abs(score(scorer, tokenizer, demonstrations).mean().item()) < 1e-3  # the reference set scores a mean of 0

    ppo = ["align.ppo", "+experiment=tiny", f"paths.root={tmp_path}", f"paths.data={tiny_data_root}",
           f"paths.rm={rm_dir}", f"ppo.policy_init={tmp_path / 'sft'}", "ppo.total_episodes=32",
           "ppo.gold_eval_every=0"]
    ran = run_module(*ppo, "ppo.kl_coef=0.1", timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "beta 0.3, and ppo.kl_coef 0.1 is below beta x ppo.temperature (0.24)" in ran.stdout
    assert (tmp_path / "tiny" / "ppo-baseline" / "final" / "model.safetensors").is_file()


def test_the_audit_rm_is_a_classifier_on_its_own_pairs_seed_and_directory():
    """An implicit audit RM would share the implicit training RM's reference, and the text off the data that both
    score without bound (docs/ablations.md): by default the audit RM is a classifier, whatever the training RM, and
    on the tiny worlds it trains at the classifier ablation's rate (the same five numbers), its other settings the
    training RM's; unset audit settings leave the training RM's."""
    from align.rm import audit_config

    cfg = tiny_config("paths.root=/runs", stage="rm")
    audit = audit_config(cfg)
    assert cfg.rm.kind == "implicit" and audit.rm.kind == "classifier"
    assert (audit.seed, audit.data.prefs_train, audit.paths.rm) == (cfg.seed + 1, cfg.data.prefs_audit,
                                                                   cfg.paths.rm_audit)
    assert audit.data.prefs_eval == cfg.data.prefs_eval and audit.rm.max_length == cfg.rm.max_length
    classifier = tiny_config("paths.root=/runs", "+ablation=classifier_rm", stage="rm").rm
    own = ("epochs", "lr", "lr_scheduler", "batch_size", "center_rewards_coefficient")
    assert [getattr(audit.rm, k) for k in own] == [getattr(classifier, k) for k in own]
    assert audit.rm.lr != cfg.rm.lr
    one_unset = audit_config(tiny_config("paths.root=/runs", "rm.audit_settings.lr=null", stage="rm"))
    assert one_unset.rm.lr == cfg.rm.lr and one_unset.rm.epochs == 6
    unset = [f"rm.audit_settings.{k}=null" for k in own]  # conf/rm/default.yaml's: the training RM's, but the kind
    assert audit_config(tiny_config("paths.root=/runs", *unset, stage="rm")).rm == dataclasses.replace(
        tiny_config("paths.root=/runs", *unset, stage="rm").rm, kind="classifier")
    assert audit_config(tiny_config("paths.root=/runs", "rm.audit_kind=implicit", stage="rm")).rm.kind == "implicit"
