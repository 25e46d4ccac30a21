"""Stage 1 through the real entry point (`python -m align.sft`) on the offline tiny world."""

from __future__ import annotations

import json

import pytest
from helpers import SHARED_DATA, run_module, tiny_config, world_dir

pytestmark = pytest.mark.slow


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sft_run(tiny_sft_dir):
    return tiny_sft_dir


def test_sft_lowers_its_loss_and_records_the_run(sft_run):
    rows = metrics(sft_run)
    train_losses = [r["sft/loss"] for r in rows if "sft/loss" in r]
    eval_losses = [r["sft/eval_loss"] for r in rows if "sft/eval_loss" in r]
    assert train_losses[-1] < train_losses[0] - 0.5
    assert eval_losses[-1] < eval_losses[0]
    assert (sft_run / "config.resolved.yaml").read_text().count("run_name: tiny") == 1
    assert json.loads((sft_run / "provenance.json").read_text())["packages"]["trl"]


def test_final_directory_works_in_plain_transformers_and_stops_at_eos(sft_run, tiny_data_root):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = sft_run / "final"
    assert (final / "model.safetensors").exists()
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    prompts_file = world_dir(tiny_data_root) / "prompts.eval.jsonl"
    prompts = [json.loads(line)["prompt"] for line in prompts_file.read_text().splitlines()]
    ended = 0
    for messages in prompts[:20]:
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        ended += new[-1] == tokenizer.eos_token_id  # generation stopped on the end-of-turn token
    assert ended >= 19


def test_gold_judge_scores_sft_above_the_untrained_model(sft_run, tiny_data_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.evaluation.judging import gold_evaluation
    from align.modeling.models import load_causal_lm

    config = tiny_config(f"paths.data={tiny_data_root}")
    tokenizer = AutoTokenizer.from_pretrained(sft_run / "final")
    untrained = load_causal_lm(config.model, tokenizer, None, seed=config.seed)
    trained = AutoModelForCausalLM.from_pretrained(sft_run / "final")
    base = gold_evaluation(untrained, tokenizer, config.data, config.eval, seed=0)
    sft = gold_evaluation(trained, tokenizer, config.data, config.eval, seed=0)
    print(f"gold on held-out prompts: untrained {base['gold_score']:.3f}, SFT {sft['gold_score']:.3f}")
    assert sft["gold_score"] > base["gold_score"]
    assert sft["eos_rate"] > 0.95
    recorded = json.loads((sft_run / "metrics.json").read_text())
    assert recorded["eval_gold_score"] == pytest.approx(sft["gold_score"])  # the stage reports the same number


def test_resume_continues_the_step_count(tmp_path, tiny_data_root):
    common = ["+experiment=tiny", f"paths.root={tmp_path}", f"paths.data={tiny_data_root}",
              "sft.save_steps=15", "sft.eval_steps=1000", "sft.logging_steps=5"]
    first = run_module("align.sft", *common, "sft.max_steps=30")
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "tiny" / "sft"
    assert (run_dir / "checkpoint-30").is_dir()
    second = run_module("align.sft", *common, "sft.max_steps=45")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout and "checkpoint-30" in second.stdout
    steps = [r["step"] for r in metrics(run_dir) if "sft/loss" in r]
    assert steps == [5, 10, 15, 20, 25, 30, 35, 40, 45]  # the second run logged 35..45, not 5..15 again
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 45


def test_conversations_longer_than_max_length_are_left_out_and_counted_not_cut(tmp_path, tiny_data_root):
    # a conversation cut at max_length would train on a reply without its end-of-turn token (issue 18)
    from align.core.records import read_records
    from align.core.tokens import chat_ids
    from align.modeling.models import load_tokenizer

    config = tiny_config(f"paths.data={tiny_data_root}")
    tokenizer = load_tokenizer(config.model)
    records, _ = read_records(config.data.sft_train, "sft", "error")
    lengths = sorted(len(chat_ids(tokenizer, r["messages"])) for r in records)
    limit = lengths[len(lengths) // 2]
    result = run_module("align.sft", "+experiment=tiny", f"paths.root={tmp_path}", f"paths.data={tiny_data_root}",
                        f"sft.max_length={limit}", "sft.max_steps=2", "sft.eval_steps=1000", "sft.save_steps=1000")
    assert result.returncode == 0, result.stderr[-3000:]
    dropped = json.loads((tmp_path / "tiny" / "sft" / "metrics.json").read_text())["dropped_too_long"]
    assert dropped["train"] == sum(n > limit for n in lengths) > 0
    assert f"longer than sft.max_length={limit}" in result.stdout


def test_packing_runs(tmp_path, tiny_data_root):
    result = run_module("align.sft", "+experiment=tiny", f"paths.root={tmp_path}", f"paths.data={tiny_data_root}",
                        "sft.packing=true", "sft.max_steps=10", "sft.eval_steps=1000", "sft.save_steps=1000")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "tiny" / "sft" / "final" / "model.safetensors").exists()


def test_small_without_the_hub_fails_fast_with_a_clear_message(tmp_path):
    result = run_module("align.sft", "+experiment=small", f"paths.root={tmp_path}", f"paths.data={tmp_path}",
                        timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "tatsu-lab/alpaca" in result.stderr and "data.sources.alpaca" in result.stderr


def test_small_runs_on_local_copies_of_model_and_data(tmp_path):
    """The real loading path of `+experiment=small`: a local GPT-2 directory and a local Alpaca file."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from align.core.tokens import train_tiny_tokenizer

    alpaca = SHARED_DATA / "alpaca_first100" / "alpaca_tiny.json"
    assert alpaca.exists(), f"set ALIGN_SHARED_DATA to the data slices (docs/data.md): {alpaca}"
    model_dir = tmp_path / "gpt2-local"
    train_tiny_tokenizer([r["output"] for r in json.loads(alpaca.read_text())], 600, model_dir)
    GPT2LMHeadModel(GPT2Config(vocab_size=600, n_layer=2, n_embd=32, n_head=2, n_positions=256)).save_pretrained(
        model_dir)
    result = run_module("align.sft", "+experiment=small", f"paths.root={tmp_path}", f"paths.data={tmp_path}/data",
                        f"data.sources.alpaca.source={alpaca}", f"model.name_or_path={model_dir}",
                        "data.sources.alpaca.eval_size=10",
                        "sft.max_steps=3", "sft.batch_size=4", "sft.max_length=256", "eval.max_new_tokens=8")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "data" / "alpaca" / "manifest.json").read_text())
    assert manifest["counts"]["out"] == {"sft.train.jsonl": 90, "sft.eval.jsonl": 10}
    assert (tmp_path / "small" / "sft" / "final" / "model.safetensors").exists()
