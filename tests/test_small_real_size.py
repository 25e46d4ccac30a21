"""`+experiment=small` end to end at GPT-2 124M, offline: SFT -> RM -> PPO -> eval -> chat, a few steps each.

Pretrained weights cannot be downloaded here, so the model is `GPT2Config()` (GPT-2 small's real shapes) with
GPT-2's real tokenizer (../shared/data/gpt2_tokenizer), saved as a local directory a user would pass as
`model.name_or_path`; the data are the shared Alpaca and HH-RLHF slices, given as `data.sources.<name>.source`.
Only the documented overrides are used. What real size changes is what is asserted: a 50,257-token vocabulary grown
by the chat tokens, pad != EOS, the chat template on real English, long HH conversations scored at their end-of-turn
token, and final directories that plain transformers loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SHARED_DATA, run_module

pytestmark = pytest.mark.slow

GPT2_VOCAB = 50257


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A GPT-2 124M with random weights and GPT-2's own tokenizer: what `gpt2` on the hub is, but for the weights."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    out = tmp_path_factory.mktemp("gpt2")
    tokenizer = GPT2Tokenizer.from_pretrained(SHARED_DATA / "gpt2_tokenizer")
    assert len(tokenizer) == GPT2_VOCAB and tokenizer("Hello world")["input_ids"] == [15496, 995]
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def small_run(gpt2_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    overrides = (
        "+experiment=small", f"paths.root={root / 'runs'}", f"paths.data={root / 'data'}",
        f"model.name_or_path={gpt2_dir}",
        f"data.sources.alpaca.source={SHARED_DATA / 'alpaca_first100' / 'alpaca_tiny.json'}",
        "data.sources.alpaca.eval_size=8",
        f"data.sources.hh_rlhf.source={SHARED_DATA / 'hh_rlhf_harmless_base_test' / 'test_first1600.jsonl.gz'}",
        "data.sources.hh_rlhf.eval_size=16",
        "sft.max_steps=2", "sft.batch_size=2", "sft.logging_steps=1", "sft.eval_steps=2", "sft.save_steps=2",
        "rm.max_steps=2", "rm.batch_size=2", "rm.grad_accum=1", "rm.eval_batch_size=4", "rm.logging_steps=1",
        "rm.eval_steps=2", "rm.save_steps=2", "rm.normalize_samples=4",
        "ppo.total_episodes=4", "ppo.batch_size=4", "ppo.num_minibatches=2", "ppo.ppo_epochs=1",
        "ppo.response_tokens=8", "ppo.save_every=1",
        "eval.num_prompts=4", "eval.max_new_tokens=8", "eval.batch_size=4",
    )
    result = run_module("align.pipeline", *overrides, timeout=1800)
    (root / "pipeline.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return root


def test_every_stage_saves_a_model_with_gpt2s_vocabulary_grown_by_the_chat_tokens(small_run):
    from transformers import AutoConfig, AutoTokenizer

    for stage in ("sft", "rm", "ppo-baseline"):
        final = small_run / "runs" / "small" / stage / "final"
        tokenizer = AutoTokenizer.from_pretrained(final)
        config = AutoConfig.from_pretrained(final)
        assert len(tokenizer) > GPT2_VOCAB and config.vocab_size >= len(tokenizer), stage
        assert (config.n_layer, config.n_embd) == (12, 768), stage
        assert tokenizer.pad_token_id != tokenizer.eos_token_id, stage
        assert tokenizer.eos_token == "<|im_end|>", stage
        assert (final / "model.safetensors").exists() and not list(final.glob("pytorch_model*")), stage


def test_the_chat_template_keeps_real_english_exactly(small_run):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(small_run / "runs" / "small" / "sft" / "final")
    record = json.loads((small_run / "data" / "alpaca" / "sft.train.jsonl").read_text().splitlines()[0])
    ids = tokenizer.apply_chat_template(record["messages"], return_dict=True)["input_ids"]
    text = tokenizer.decode(ids)
    for message in record["messages"]:
        assert message["content"] in text
    assert ids.count(tokenizer.eos_token_id) == len(record["messages"])  # every turn ends with <|im_end|>
    assert tokenizer.pad_token_id not in ids


def test_long_conversations_are_scored_at_their_end_of_turn_token(small_run):
    """The longest multi-turn HH conversation of the held-out pairs: it ends on `<|im_end|>`, plain transformers
    scores it there, and batching it with a short one (padding that short one) changes neither score."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from align.core.tokens import chat_ids
    from align.modeling.reward_model import score

    final = small_run / "runs" / "small" / "rm" / "final"
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    lines = (small_run / "data" / "hh_rlhf" / "prefs.eval.jsonl").read_text().splitlines()
    pairs = [json.loads(line) for line in lines]
    longest = max(pairs, key=lambda p: len(chat_ids(tokenizer, p["prompt"] + p["chosen"])))
    shortest = min(pairs, key=lambda p: len(chat_ids(tokenizer, p["prompt"] + p["chosen"])))
    long_conversation = longest["prompt"] + longest["chosen"]
    ids = chat_ids(tokenizer, long_conversation)
    assert len(longest["prompt"]) >= 3 and len(ids) > 200
    assert ids[-1] == tokenizer.eos_token_id
    together = score(model, tokenizer, [long_conversation, shortest["prompt"] + shortest["chosen"]])
    alone = score(model, tokenizer, [long_conversation])
    short_alone = score(model, tokenizer, [shortest["prompt"] + shortest["chosen"]])
    assert torch.allclose(together, torch.cat([alone, short_alone]), atol=1e-4)
    with torch.no_grad():
        hidden = model.transformer(torch.tensor([ids])).last_hidden_state[0, -1]
        assert torch.allclose(model.score(hidden)[0], alone[0], atol=1e-4)


def test_eval_and_chat_run_on_the_final_models(small_run):
    evaluation = json.loads((small_run / "runs" / "small" / "eval-baseline" / "eval.json").read_text())
    assert set(evaluation["models"]) >= {"base", "sft", "ppo"}
    for row in evaluation["models"].values():
        assert row["prompts"] > 0 and 0 < row["response_tokens"] <= 8
    chat = run_module("align.chat", "+experiment=small", f"paths.root={small_run / 'runs'}",
                      f"chat.model={small_run / 'runs' / 'small' / 'ppo-baseline' / 'final'}",
                      "chat.prompt=Name three colours.", "chat.max_new_tokens=8", timeout=600)
    assert chat.returncode == 0, chat.stderr[-3000:]


def test_the_final_policy_loads_in_a_plain_transformers_chat_pipeline(small_run):
    from transformers import pipeline

    chat = pipeline("text-generation", model=str(small_run / "runs" / "small" / "ppo-baseline" / "final"))
    (out,) = chat([{"role": "user", "content": "Give me one word for happy."}], max_new_tokens=4, do_sample=False)
    reply = out["generated_text"][-1]
    assert reply["role"] == "assistant" and isinstance(reply["content"], str)


def test_ppo_samples_at_real_size_stop_at_their_first_eos_and_read_a_long_prompt_as_alone(small_run):
    """PPO's sampler and forward on the 124M policy with GPT-2's vocabulary, on a batch of the longest HH prompt
    within ppo.max_prompt_tokens and the three shortest (hundreds of left-pad tokens): every response stops at its
    first EOS, and the log-probabilities PPO trains on are those of the long prompt alone. A policy after a few
    steps almost never samples the EOS among 50,000 tokens, so its logit is raised here, in the LM head's output."""
    import torch
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.core.tokens import chat_ids, never_sampled
    from align.modeling.forward import left_pad, lm_logits, response_logprobs
    from align.rlhf.rollout import sample_responses

    run = small_run / "runs" / "small" / "ppo-baseline"
    max_prompt_tokens = yaml.safe_load((run / "config.resolved.yaml").read_text())["ppo"]["max_prompt_tokens"]
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    lm = AutoModelForCausalLM.from_pretrained(run / "final").eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    lines = (small_run / "data" / "hh_rlhf" / "prompts.train.jsonl").read_text().splitlines()
    prompts = sorted((chat_ids(tokenizer, json.loads(line)["prompt"], generation_prompt=True) for line in lines),
                     key=len)
    fitting = [p for p in prompts if len(p) <= max_prompt_tokens]
    rows = [fitting[-1], *fitting[:3]] * 2
    assert len(rows[0]) >= 0.75 * max_prompt_tokens and len(rows[1]) < 0.25 * max_prompt_tokens

    def raise_eos(module, inputs, logits):
        logits[..., eos] += 9.0
        return logits

    queries, _ = left_pad(rows, pad)
    hook = lm.lm_head.register_forward_hook(raise_eos)
    torch.manual_seed(0)
    responses = sample_responses(lm, queries, pad, eos, max_new_tokens=24, temperature=1.0,
                                 never=never_sampled(tokenizer))
    hook.remove()
    ended = 0
    for response in responses.tolist():
        assert pad not in response[: response.index(eos) + 1 if eos in response else None]
        assert not set(response) & (set(never_sampled(tokenizer)) - {pad})
        if eos in response:
            ended += 1
            assert all(t == pad for t in response[response.index(eos) + 1 :])
    assert 0 < ended

    with torch.no_grad():
        context = queries.shape[1]
        batched = response_logprobs(lm_logits(lm, torch.cat([queries, responses], 1), pad, context), responses, 0.7)
        alone_ids = torch.tensor([rows[0]])
        alone = response_logprobs(lm_logits(lm, torch.cat([alone_ids, responses[:1]], 1), pad, alone_ids.shape[1]),
                                  responses[:1], 0.7)
    real = responses[0] != pad
    assert torch.allclose(batched[0][real], alone[0][real], atol=1e-3)
