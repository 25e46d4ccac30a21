"""PPO's step-0 invariants and the rollout's consistency (docs/ppo_checklist.md A3, D1-D3, F2, F9, F10, G4).

With policy = reference = SFT and value = RM, on left-padded prompts at temperature 0.7: the per-token KL is exactly
0, the first minibatch has ratio 1, clip fraction 0 and approx KL 0, and the value at each EOS equals the RM score.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_config

from align.core.tokens import never_sampled
from align.modeling.forward import entropy, lm_logits, position_ids, response_logprobs
from align.modeling.models import disable_dropout, load_reward_model
from align.modeling.reward_model import reward_at_eos
from align.rlhf import losses as L
from align.rlhf.policy_value import PolicyAndValue, response_values
from align.rlhf.rollout import sample_responses

TEMPERATURE = 0.7
PROMPTS = [
    [{"role": "user", "content": "words 3 start sun end any"}],
    [{"role": "user", "content": "words any start any end moon"}],
    [{"role": "user", "content": "words 8 start bad end happy"}],
]


@pytest.fixture(scope="module")
def world(tiny_data_root):
    from align.modeling.models import load_causal_lm, load_tokenizer

    config = tiny_config(f"paths.data={tiny_data_root}").model
    tokenizer = load_tokenizer(config)
    policy = load_causal_lm(config, tokenizer, None, seed=0)
    reward_model = load_reward_model(config, tokenizer, None, seed=1)
    for m in (policy, reward_model):
        disable_dropout(m)
    model = PolicyAndValue(policy, copy.deepcopy(reward_model))  # the value model starts as the RM
    reference = copy.deepcopy(policy)

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    rows = [tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=True)["input_ids"]
            for p in PROMPTS]
    width = max(map(len, rows)) + 2  # at least two pads on every prompt
    queries = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    torch.manual_seed(0)
    responses, mask = L.truncate_after_eos(sample_responses(policy, queries, pad, eos, 12, TEMPERATURE), eos, pad)
    return dict(tokenizer=tokenizer, model=model, reference=reference, reward_model=reward_model, queries=queries,
                responses=responses, mask=mask, query_responses=torch.cat([queries, responses], 1), context=width)


def test_dropout_is_off_and_forward_is_deterministic_in_train_mode(world):
    model = world["model"]
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    model.train()
    pad = world["tokenizer"].pad_token_id
    first, second = model(world["query_responses"], pad), model(world["query_responses"], pad)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_forward_logprobs_match_generation_at_the_sampling_temperature(world):
    """Teacher-forced logprobs at temperature t are those of generate(temperature=t, top_k=0, top_p=1): the logits
    divided by the temperature and nothing else."""
    pad, eos, queries = world["tokenizer"].pad_token_id, world["tokenizer"].eos_token_id, world["queries"]
    policy, context = world["model"].policy, world["context"]
    torch.manual_seed(1)
    with torch.no_grad():
        out = policy.generate(input_ids=queries, attention_mask=(queries != pad).long(), do_sample=True,
                              temperature=TEMPERATURE, top_k=0, top_p=1.0, max_new_tokens=12, eos_token_id=eos,
                              pad_token_id=pad, output_scores=True, return_dict_in_generate=True)
        responses, mask = L.truncate_after_eos(out.sequences[:, context:], eos, pad)
        logits = lm_logits(policy, torch.cat([queries, responses], 1), pad, context)
    logprobs = response_logprobs(logits, responses, TEMPERATURE)
    generated = torch.stack(out.scores, dim=1).log_softmax(-1)  # (B, T, V)
    from_generate = generated.gather(-1, responses[..., None])[..., 0]
    assert torch.allclose(logprobs[mask.bool()], from_generate[mask.bool()], atol=1e-4)


def lora_policy(world):
    """The world's policy with LoRA adapters that have moved from zero, as after some training."""
    from align.rlhf.policy_value import add_lora

    policy, _ = add_lora(copy.deepcopy(world["reference"]), copy.deepcopy(world["reward_model"]), r=4, alpha=8,
                         target_modules=["c_attn", "c_proj", "c_fc"])
    torch.manual_seed(2)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    return policy


@pytest.mark.parametrize("decoder", ["gpt2", "gpt2 with LoRA", "transformers", "transformers, eager attention"])
def test_sampler_draws_each_token_from_the_teacher_forced_distribution(world, decoder, monkeypatch):
    """Replaying the sampler's random draws against the full prefix, without a cache: at every step the token is the
    one softmax(teacher-forced logits / t) gives that draw, so positions, the cache and the temperature are right;
    after a row's EOS only pad follows, and sampling stops once every row has ended. For each way of decoding: GPT-2's
    own step (align.rlhf.gpt2_decoding), with LoRA adapters in its layers, and transformers' forward (what any other
    model decodes with), also with the eager attention implementation, which adds the mask it is given to the
    attention scores."""
    from align.rlhf import rollout
    from align.rlhf.rollout import inverse_cdf_sample

    pad, eos, policy, queries = world["tokenizer"].pad_token_id, world["tokenizer"].eos_token_id, \
        world["model"].policy, world["queries"]
    if decoder == "gpt2 with LoRA":
        policy = lora_policy(world)
    if decoder.startswith("transformers"):
        monkeypatch.setattr(rollout, "supports", lambda lm: False)
    if decoder.endswith("eager attention"):
        policy = copy.deepcopy(policy)
        policy.set_attn_implementation("eager")
    never = never_sampled(world["tokenizer"])
    torch.manual_seed(5)
    sampled = sample_responses(policy, queries, pad, eos, 20, TEMPERATURE, never)
    torch.manual_seed(5)
    sequence, ended, replayed = queries, torch.zeros(len(queries), dtype=torch.bool), []
    for _ in range(sampled.shape[1]):
        with torch.no_grad():
            logits = lm_logits(policy, sequence, pad)[:, -1]
        probs = torch.softmax(logits / TEMPERATURE, -1)
        probs[:, never] = 0.0
        drawn = inverse_cdf_sample(probs, torch.rand(len(queries), dtype=torch.float64))
        token = torch.where(ended, pad, drawn)
        replayed.append(token)
        ended |= token == eos
        sequence = torch.cat([sequence, token[:, None]], 1)
    assert torch.equal(sampled, torch.stack(replayed, 1))
    assert sampled.shape[1] == 20 or bool(ended.all())


@pytest.mark.parametrize("lora", [False, True])
def test_gpt2_decoding_steps_give_the_logits_of_the_full_forward(world, lora):
    """Each step of GPT2Decoder after a left-padded prefill returns the logits transformers computes for the whole
    sequence at its last position."""
    from align.rlhf.gpt2_decoding import GPT2Decoder, supports

    pad, queries, responses = world["tokenizer"].pad_token_id, world["queries"], world["responses"]
    policy = lora_policy(world) if lora else world["model"].policy
    assert supports(policy)
    responses = torch.where(responses == pad, 5, responses)  # every row decodes every step
    mask = (queries != pad).long()
    steps = responses.shape[1]
    with torch.no_grad():
        prefill = policy(input_ids=queries, attention_mask=mask, position_ids=position_ids(mask), use_cache=True)
        decode = GPT2Decoder(policy, prefill.cache, mask, steps)
        positions = position_ids(mask)[:, -1:]
        for t in range(steps):
            positions = positions + 1
            logits = decode(responses[:, t], positions)
            full = lm_logits(policy, torch.cat([queries, responses[:, : t + 1]], 1), pad)[:, -1]
            assert torch.allclose(logits, full, atol=1e-5), t


def test_only_gpt2_with_default_attention_is_decoded_by_its_own_step(world):
    from transformers import LlamaConfig, LlamaForCausalLM

    from align.rlhf.gpt2_decoding import supports

    gpt2 = world["model"].policy
    assert supports(gpt2) and supports(lora_policy(world))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    assert not supports(llama)
    scaled = copy.deepcopy(gpt2)
    scaled.config.scale_attn_by_inverse_layer_idx = True
    assert not supports(scaled)


def test_inverse_cdf_sampling_is_exact():
    """Evenly spaced draws land on each token in proportion to its probability; zero-probability tokens never."""
    from align.rlhf.rollout import inverse_cdf_sample

    probs = torch.tensor([0.0, 0.1, 0.0, 0.25, 0.65, 0.0])
    n = 2000
    uniforms = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    tokens = inverse_cdf_sample(probs.expand(n, -1), uniforms)
    counts = torch.bincount(tokens, minlength=len(probs))
    assert counts.tolist() == [0, 200, 0, 500, 1300, 0]
    # The extreme draws of [0, 1) land on the first and the last token that can be drawn, never beside them.
    extremes = torch.tensor([0.0, 1.0 - 1e-12], dtype=torch.float64)
    assert inverse_cdf_sample(probs.expand(2, -1), extremes).tolist() == [4, 1]


def test_left_padding_does_not_change_logits(world):
    pad = world["tokenizer"].pad_token_id
    row = world["query_responses"][0]
    unpadded = row[row != pad][None]
    more_padded = torch.cat([torch.full((1, 5), pad), unpadded], dim=1)
    with torch.no_grad():
        a = lm_logits(world["model"].policy, unpadded, pad)
        b = lm_logits(world["model"].policy, more_padded, pad)[:, 5:]
    assert torch.allclose(a, b, atol=1e-5)


def test_step_zero_invariants(world):
    tokenizer, model, q_r, context = world["tokenizer"], world["model"], world["query_responses"], world["context"]
    pad, mask = tokenizer.pad_token_id, world["mask"]
    with torch.no_grad():
        logits, all_values = model(q_r, pad, context)
        old_logprobs = response_logprobs(logits, world["responses"], TEMPERATURE)
        ref_logprobs = response_logprobs(lm_logits(world["reference"], q_r, pad, context), world["responses"],
                                         TEMPERATURE)
        scores = reward_at_eos(world["reward_model"], q_r, (q_r != pad).long())
    # KL to the reference is exactly 0, not merely small, with either estimator.
    for estimator in ("k1", "k3"):
        assert torch.equal(L.kl_per_token(old_logprobs, ref_logprobs, estimator) * mask, torch.zeros_like(mask,
                           dtype=torch.float))
    # The value at each response's last real token (its EOS) is the RM score: same weights, same position.
    last = context + L.last_index(mask)
    assert torch.allclose(all_values[torch.arange(len(last)), last], scores, atol=1e-5)
    # First minibatch of the first epoch: ratio 1, nothing clipped, approx KL 0.
    values = response_values(all_values, context)
    rewards = L.shape_rewards(scores, L.kl_per_token(old_logprobs, ref_logprobs, "k1") * mask, mask, 0.05)
    advantages, returns = L.gae(rewards, values, mask, 1.0, 0.95)
    advantages = L.masked_whiten(advantages, mask)
    new_logits, new_values = model(q_r, pad, context)
    new_logprobs = response_logprobs(new_logits, world["responses"], TEMPERATURE)
    _, stats = L.policy_loss(new_logprobs, old_logprobs, advantages, mask, 0.2)
    assert stats["ratio"].item() == 1.0 and stats["clipfrac"].item() == 0.0 and stats["approx_kl"].item() == 0.0
    _, vf_stats = L.value_loss(response_values(new_values, context), values, returns, mask, 0.2)
    assert vf_stats["vf_clipfrac"].item() == 0.0


def test_reference_and_reward_model_are_not_optimised(world):
    """Only the policy and the value model are in the PPO optimizer (docs/ppo_checklist.md G4)."""
    model = world["model"]
    optimised = {id(p) for p in model.parameters()}
    assert not optimised & {id(p) for p in world["reference"].parameters()}
    assert not optimised & {id(p) for p in world["reward_model"].parameters()}
    expected = sum(p.numel() for p in model.policy.parameters()) + sum(p.numel() for p in model.value.parameters())
    assert sum(p.numel() for p in model.parameters()) == expected


def test_logprobs_and_entropy_match_the_plain_formulas():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 50) * 3
    tokens = torch.randint(50, (2, 6))
    logprobs = response_logprobs(logits, tokens, TEMPERATURE)
    probs = torch.softmax(logits.double() / TEMPERATURE, -1)
    assert torch.allclose(logprobs.double(), probs.gather(-1, tokens[..., None])[..., 0].log(), atol=1e-5)
    assert torch.allclose(entropy(logits, TEMPERATURE).double(), -(probs * probs.log()).sum(-1), atol=1e-5)


def test_response_logits_are_the_full_logits_that_predict_the_response(world):
    """lm_logits(..., response_from=C) computes the LM head only where it predicts tokens C.. (positions C-1..L-2)."""
    pad, q_r, context = world["tokenizer"].pad_token_id, world["query_responses"], world["context"]
    with torch.no_grad():
        full = lm_logits(world["reference"], q_r, pad)
        response_only = lm_logits(world["reference"], q_r, pad, context)
    assert response_only.shape[1] == q_r.shape[1] - context
    assert torch.allclose(response_only, full[:, context - 1 : -1], atol=1e-5)


def test_lora_starts_at_the_sft_model_and_its_reference_stays_there(world):
    """With LoRA the reference is the policy with its adapter disabled: no copy, and it never moves."""
    from align.rlhf.policy_value import add_lora

    pad, q_r = world["tokenizer"].pad_token_id, world["query_responses"]
    policy, value = add_lora(copy.deepcopy(world["reference"]), copy.deepcopy(world["reward_model"]), r=4, alpha=8,
                             target_modules=["c_attn", "c_proj", "c_fc"])
    model = PolicyAndValue(policy, value)
    with torch.no_grad():
        sft_logits = lm_logits(world["reference"], q_r, pad)
        logits, all_values = model(q_r, pad)
        assert torch.equal(logits, sft_logits)  # the adapters start at zero
        last = world["context"] + L.last_index(world["mask"])
        scores = reward_at_eos(world["reward_model"], q_r, (q_r != pad).long())
        assert torch.allclose(all_values[torch.arange(len(last)), last], scores, atol=1e-5)
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)  # as if trained
        moved, _ = model(q_r, pad)
        with policy.disable_adapter():
            reference_logits = lm_logits(policy, q_r, pad)
    assert not torch.allclose(moved, sft_logits, atol=1e-3)
    assert torch.equal(reference_logits, sft_logits)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable)


def test_no_sampler_draws_the_pad_or_the_start_of_turn_token(world):
    """A policy that puts almost all its mass on the pad and <|im_start|> still samples neither, in PPO's sampler or
    in the evaluation's (which chat uses): a pad inside a response would be a loss token that every forward pass
    treats as padding."""
    from align.core.tokens import IM_START
    from align.evaluation.sampling import sample

    tokenizer = world["tokenizer"]
    pad, eos, never = tokenizer.pad_token_id, tokenizer.eos_token_id, never_sampled(tokenizer)
    assert never == sorted([pad, tokenizer.convert_tokens_to_ids(IM_START)])
    policy = copy.deepcopy(world["model"].policy)
    with torch.no_grad():  # every position's final hidden state about e_0, and e_0 picks the never-sampled tokens
        policy.transformer.ln_f.weight.mul_(0.01)
        policy.transformer.ln_f.bias.zero_()
        policy.transformer.ln_f.bias[0] = 1.0
        policy.lm_head.weight[never, 0] = 40.0
    torch.manual_seed(0)
    sampled = sample_responses(policy, world["queries"], pad, eos, 12, TEMPERATURE, never)
    responses, mask = L.truncate_after_eos(sampled, eos, pad)
    assert not torch.isin(responses[mask.bool()], torch.tensor(never)).any()
    prompts = [[{"role": "user", "content": "words 3 start sun end any"}]] * 8
    for completion in sample(policy, tokenizer, prompts, 12, TEMPERATURE, batch_size=8, seed=0):
        assert not set(completion.response_ids) & set(never)
