"""One PPO update on a tiny model, through the functions align/ppo.py calls (align.rlhf.ppo_step): what each line of
the update must compute, checked against an independent computation, so that breaking any one of them fails here.

The batch is built by hand so that it holds what sampling rarely gives a random policy: responses that end with an
EOS before the last position, tokens after that EOS (to be padded away), and a response that never ends.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import pytest
import torch
from accelerate import Accelerator
from helpers import tiny_config

from align.core.tokens import chat_ids
from align.modeling.forward import left_pad, lm_logits, response_logprobs
from align.modeling.models import disable_dropout, load_causal_lm, load_reward_model, load_tokenizer
from align.modeling.reward_model import reward_at_eos
from align.rlhf import losses as L
from align.rlhf import ppo_step
from align.rlhf.policy_value import PolicyAndValue, response_values

PROMPTS = ["words 3 start sun end any", "words any start any end moon", "words 8 start bad end happy",
           "words 5 start any end any"]


@pytest.fixture()
def setup(tiny_data_root):
    config = tiny_config(f"paths.data={tiny_data_root}")
    tokenizer = load_tokenizer(config.model)
    policy = load_causal_lm(config.model, tokenizer, None, seed=0)
    reward_model = load_reward_model(config.model, tokenizer, None, seed=1)
    for m in (policy, reward_model):
        disable_dropout(m)
    reference = copy.deepcopy(policy)
    model = PolicyAndValue(policy, copy.deepcopy(reward_model))  # the value model starts as the RM
    ppo = dataclasses.replace(config.ppo, batch_size=len(PROMPTS), num_minibatches=1, ppo_epochs=1, temperature=0.7,
                              missing_eos_mode="subtract", missing_eos_penalty=1.0, kl_estimator="k1",
                              whiten_rewards=False, whiten_advantages=True, gamma=1.0, lam=0.95, ptx_coef=0.0)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    queries, _ = left_pad([chat_ids(tokenizer, [{"role": "user", "content": p}], generation_prompt=True)
                           for p in PROMPTS], pad)
    words = tokenizer("sun moon happy bad good", add_special_tokens=False)["input_ids"]
    a, b, c, d, e = words[:5]
    sampled = torch.tensor([
        [a, b, eos, c, d, e],   # ends at 2; the tokens after its EOS become padding
        [a, b, c, d, e, a],     # never ends: the missing-EOS penalty
        [c, eos, eos, a, b, c],
        [a, b, c, d, e, eos],   # ends on the last position
    ])
    return dict(tokenizer=tokenizer, model=model, reference=reference, reward_model=reward_model, ppo=ppo,
                queries=queries, sampled=sampled, pad=pad, eos=eos)


def scored(s, reference=None, ppo=None):
    return ppo_step.score(s["model"], lambda: contextlib.nullcontext(reference or s["reference"]),
                          ppo_step.rm_reward(s["reward_model"], s["pad"]), s["queries"], s["sampled"], s["pad"],
                          s["eos"], ppo or s["ppo"])


def test_responses_are_cut_after_their_first_eos(setup):
    batch = scored(setup)
    eos, pad = setup["eos"], setup["pad"]
    assert batch.mask.tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6, [1, 1, 0, 0, 0, 0], [1] * 6]
    assert batch.responses[0, 3:].tolist() == [pad] * 3 and batch.responses[2, 2:].tolist() == [pad] * 4
    assert batch.has_eos.tolist() == [True, False, True, True]
    assert batch.responses[0, 2] == eos


def test_step_zero_kl_is_zero_and_values_sit_before_each_token(setup):
    """Policy = reference: the KL is exactly 0 at the sampling temperature. Value = RM: the value before response
    token i is the RM's score of the prefix that ends just before it, and the value at each EOS is the RM score."""
    batch = ppo_step.shape(scored(setup), kl_coef=0.1, ppo=setup["ppo"])
    assert torch.equal(batch.kl, torch.zeros_like(batch.kl))
    C, rm = batch.context_length, setup["reward_model"]
    for i in range(batch.responses.shape[1]):
        prefix = batch.query_responses[:, : C + i]
        with torch.no_grad():
            before = reward_at_eos(rm, prefix, (prefix != setup["pad"]).long())
        real = batch.mask[:, i].bool()  # after an EOS the state is padding, and its value is never used
        assert torch.allclose(batch.values[real, i], before[real], atol=1e-5), i
    with torch.no_grad():
        _, all_values = setup["model"](batch.query_responses, setup["pad"])
    ends = C + L.last_index(batch.mask)
    assert torch.allclose(all_values[torch.arange(len(ends)), ends], batch.raw_scores, atol=1e-5)


def test_value_read_position_is_pinned():
    """response_values takes the head at positions C-1 .. L-2: the state before each response token."""
    values = torch.arange(10.0)[None].expand(2, -1)
    assert response_values(values, 6).tolist() == [[5.0, 6.0, 7.0, 8.0]] * 2


def test_logprobs_of_policy_and_reference_are_at_the_sampling_temperature(setup):
    reference = copy.deepcopy(setup["reference"])
    torch.manual_seed(3)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    batch = ppo_step.shape(scored(setup, reference), kl_coef=0.1, ppo=setup["ppo"])
    q_r, C, t, pad = batch.query_responses, batch.context_length, setup["ppo"].temperature, setup["pad"]
    with torch.no_grad():
        policy_logits = lm_logits(setup["model"].policy, q_r, pad)[:, C - 1 : -1]
        reference_logits = lm_logits(reference, q_r, pad)[:, C - 1 : -1]
    expected_policy = torch.log_softmax(policy_logits / t, -1).gather(-1, batch.responses[..., None])[..., 0]
    expected_ref = torch.log_softmax(reference_logits / t, -1).gather(-1, batch.responses[..., None])[..., 0]
    assert torch.allclose(batch.logprobs, expected_policy, atol=1e-5)
    assert torch.allclose(batch.ref_logprobs, expected_ref, atol=1e-5)
    assert torch.allclose(batch.kl, (expected_policy - expected_ref) * batch.mask, atol=1e-5)
    assert batch.kl.abs().sum() > 0


def test_rewards_advantages_and_returns(setup):
    """The missing-EOS penalty on the one response without EOS; -beta KL on every token and the score on the EOS;
    value targets from the raw GAE advantages, the policy's advantages whitened."""
    reference = copy.deepcopy(setup["reference"])
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(1.01)
    ppo = setup["ppo"]
    batch = ppo_step.shape(scored(setup, reference), kl_coef=0.1, ppo=ppo)
    assert torch.equal(batch.scores, batch.raw_scores - torch.tensor([0.0, 1.0, 0.0, 0.0]))
    expected_rewards = -0.1 * batch.kl * batch.mask
    expected_rewards[torch.arange(4), L.last_index(batch.mask)] += batch.scores
    assert torch.allclose(batch.rewards, expected_rewards)
    advantages, returns = L.gae(expected_rewards, batch.values, batch.mask, ppo.gamma, ppo.lam)
    assert torch.allclose(batch.returns, returns, atol=1e-6)
    assert torch.allclose(batch.advantages, L.masked_whiten(advantages, batch.mask), atol=1e-6)


def optimise(setup, batch, lr=1e-3, optimizer_class=torch.optim.AdamW, **changes):
    ppo = dataclasses.replace(setup["ppo"], **changes)
    model = setup["model"]
    optimizer = optimizer_class([p for p in model.parameters() if p.requires_grad], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / 4)
    checked = []
    stats = ppo_step.optimise(model, optimizer, scheduler, Accelerator(cpu=True), batch, ppo, setup["pad"],
                              torch.Generator().manual_seed(0), iter(()),
                              lambda name, value: checked.append(name))
    return stats, optimizer, scheduler, checked


def test_first_minibatch_is_at_the_old_policy_and_the_value_loss_targets_the_returns(setup):
    batch = ppo_step.shape(scored(setup), kl_coef=0.1, ppo=setup["ppo"])
    stats, *_ = optimise(setup, batch)
    first = stats[0]
    assert first["ratio"].item() == pytest.approx(1.0, abs=1e-6) and first["clipfrac"].item() == 0.0
    expected_vf = 0.5 * L.masked_mean((batch.values - batch.returns) ** 2, batch.mask)
    assert first["vf_loss"].item() == pytest.approx(expected_vf.item(), rel=1e-5)


def test_later_epochs_see_the_policy_move_away_from_the_old_one(setup):
    """The ratio compares the current policy with the one that sampled: after a step it is no longer 1."""
    batch = ppo_step.shape(scored(setup), kl_coef=0.1, ppo=setup["ppo"])
    stats, *_ = optimise(setup, batch, lr=1e-2, ppo_epochs=3)
    assert stats[0]["approx_kl"].item() == 0.0
    assert stats[-1]["approx_kl"].item() > 1e-6 and abs(stats[-1]["ratio"].item() - 1.0) > 1e-6


def test_with_one_minibatch_the_first_epoch_reuses_the_scoring_pass_and_updates_the_same(setup):
    """The scoring pass keeps its graph as the first epoch's forward (one pass fewer): the weights and statistics
    after the update are those of the update that runs that forward again. With two minibatches nothing is kept."""
    assert scored(setup, ppo=dataclasses.replace(setup["ppo"], num_minibatches=2)).first_forward is None
    start = copy.deepcopy(setup["model"].state_dict())
    results = []
    for reuse in (True, False):
        setup["model"].load_state_dict(start)
        batch = ppo_step.shape(scored(setup), kl_coef=0.1, ppo=setup["ppo"])
        assert batch.first_forward is not None and batch.first_forward[0].requires_grad
        if not reuse:
            batch.first_forward = None
        passes = []
        hook = setup["model"].register_forward_hook(lambda *_, passes=passes: passes.append(1))
        # SGD: Adam turns a gradient that is 0 up to rounding (a key bias's) into a step of the full rate
        stats, *_ = optimise(setup, batch, lr=1e-1, optimizer_class=torch.optim.SGD, ppo_epochs=3)
        hook.remove()
        results.append((len(passes), stats, copy.deepcopy(setup["model"].state_dict())))
    (reused_passes, reused_stats, reused_weights), (passes, stats, weights) = results
    assert (reused_passes, passes) == (2, 3)
    for key in weights:
        assert torch.allclose(reused_weights[key], weights[key], atol=1e-6), key
    assert not torch.equal(weights["policy.lm_head.weight"], start["policy.lm_head.weight"])
    for reused, recomputed in zip(reused_stats, stats, strict=True):
        for name in ("pg_loss", "vf_loss", "approx_kl", "ratio"):
            assert reused[name].item() == pytest.approx(recomputed[name].item(), rel=1e-5, abs=1e-6), name


def test_with_lora_only_the_reference_pass_runs_without_the_adapter(setup):
    """With LoRA the reference is the policy with its adapter disabled; the policy's own pass keeps the adapter, so
    once the adapter has moved, the old log-probabilities and the KL are those of the adapted policy."""
    from align.rlhf.policy_value import PolicyAndValue, adapter_disabled, add_lora

    policy, value = add_lora(setup["model"].policy, setup["model"].value, r=4, alpha=8,
                             target_modules=["c_attn", "c_proj", "c_fc"])
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)  # as if trained
    model = PolicyAndValue(policy, value)
    reward = ppo_step.rm_reward(setup["reward_model"], setup["pad"])
    batch = ppo_step.score(model, lambda: adapter_disabled(policy), reward, setup["queries"], setup["sampled"],
                           setup["pad"], setup["eos"], setup["ppo"])
    q_r, C, t, pad = batch.query_responses, batch.context_length, setup["ppo"].temperature, setup["pad"]
    with torch.no_grad():
        adapted = response_logprobs(lm_logits(policy, q_r, pad, C), batch.responses, t)
        sft = response_logprobs(lm_logits(setup["reference"], q_r, pad, C), batch.responses, t)
    assert torch.allclose(batch.logprobs, adapted, atol=1e-5)
    assert torch.allclose(batch.ref_logprobs, sft, atol=1e-5)
    assert (batch.logprobs - batch.ref_logprobs).abs().max() > 1e-3


def test_each_step_starts_from_zero_gradients_and_the_schedule_steps_once(setup):
    """Two minibatches, two optimizer steps, each gradient cleared after its step (none is left to add to the next
    one); every loss and gradient norm goes through the guard; the learning rate moves one step of its schedule."""
    batch = ppo_step.shape(scored(setup), kl_coef=0.1, ppo=setup["ppo"])
    stats, optimizer, scheduler, checked = optimise(setup, batch, lr=1e-3, num_minibatches=2, ppo_epochs=1)
    assert len(stats) == 2
    assert all(p.grad is None or not p.grad.any() for group in optimizer.param_groups for p in group["params"])
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-3 * 0.75)
    assert checked == ["loss", "gradient norm"] * 2


def test_the_update_moves_policy_and_value_towards_their_objectives(setup):
    """Several epochs on one batch: the clipped objective's advantage-weighted log-probability rises and the clipped
    value loss to the returns falls."""
    batch = ppo_step.shape(scored(setup), kl_coef=0.1, ppo=setup["ppo"])
    model, pad, C = setup["model"], setup["pad"], batch.context_length

    def objectives():
        with torch.no_grad():
            logits, all_values = model(batch.query_responses, pad, C)
        logprobs = response_logprobs(logits, batch.responses, setup["ppo"].temperature)
        gain = L.masked_mean(batch.advantages * logprobs, batch.mask)
        # the clipped value loss the update minimises: its unclipped error alone may rise where clipping holds
        value_error, _ = L.value_loss(response_values(all_values, C), batch.values, batch.returns, batch.mask,
                                      setup["ppo"].cliprange_value)
        return gain.item(), value_error.item()

    gain_before, error_before = objectives()
    optimise(setup, batch, lr=3e-5, ppo_epochs=4)  # small steps descend; Adam's first steps at 1e-3 overshoot here
    gain_after, error_after = objectives()
    assert gain_after > gain_before and error_after < error_before


def test_the_judge_as_reward_scores_the_decoded_response_to_its_prompt(setup):
    """The oracle row (ppo.reward=judge): each response, decoded without pads or EOS, judged against the text of its
    own prompt; a response that never ended scores as unfinished."""
    from data_prep.tiny_world.judge import gold_score

    tokenizer, eos, pad = setup["tokenizer"], setup["eos"], setup["pad"]
    sun_moon = tokenizer("sun moon", add_special_tokens=False)["input_ids"]
    responses = torch.tensor([sun_moon + [eos, pad], sun_moon + [eos, pad], sun_moon + [pad, pad]])
    prompts = ["words 2 start sun end moon", "words 3 start moon end any", "words 2 start sun end moon"]
    reward = ppo_step.judge_reward(gold_score, tokenizer, prompts, eos)
    assert reward(torch.zeros(3, 1), responses).tolist() == [1.0, 0.0, 0.0]


@pytest.fixture()
def bf16_accelerator():
    """An Accelerator with distributed.mixed_precision=bf16 on the CPU, in a state of its own (accelerate keeps one
    per process)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield Accelerator(cpu=True, mixed_precision="bf16")
    AcceleratorState._reset_state(reset_partial_state=True)


def test_step_zero_invariants_hold_under_bf16(setup, bf16_accelerator):
    """Under bf16 autocast, as align.ppo prepares its four models: the policy and the reference compute in the same
    precision, so the step-0 KL is exactly 0, and the value model and the RM in the same precision, so the value at
    each EOS is the RM's score (to bf16's resolution: the two passes see different padding)."""
    from align.runtime.distributed import prepare_frozen

    accelerator, fp32_reference = bf16_accelerator, copy.deepcopy(setup["reference"])
    s = {**setup, "model": accelerator.prepare(setup["model"]),
         "reference": prepare_frozen(setup["reference"], accelerator),
         "reward_model": prepare_frozen(setup["reward_model"], accelerator)}
    batch = ppo_step.shape(scored(s), kl_coef=0.1, ppo=s["ppo"])
    assert torch.equal(batch.kl, torch.zeros_like(batch.kl))
    with torch.no_grad():
        _, all_values = s["model"](batch.query_responses, s["pad"])
    ends = batch.context_length + L.last_index(batch.mask)
    at_eos = all_values[torch.arange(len(ends)), ends]
    assert at_eos.dtype == batch.raw_scores.dtype == batch.logprobs.dtype == torch.float32
    assert torch.allclose(at_eos, batch.raw_scores, atol=2e-2)
    # bf16 is really in effect: the same reference in fp32 gives other log-probabilities
    C, t = batch.context_length, s["ppo"].temperature
    with torch.no_grad():
        fp32 = response_logprobs(lm_logits(fp32_reference, batch.query_responses, s["pad"], C), batch.responses, t)
    assert (fp32 - batch.ref_logprobs)[batch.mask.bool()].abs().max() > 1e-4
