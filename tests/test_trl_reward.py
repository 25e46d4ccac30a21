"""RLOO and GRPO get the reward PPO would give: our RM read at the EOS of what TRL sampled, with the EOS trick."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_config

from align.modeling.models import load_causal_lm, load_reward_model, load_tokenizer
from align.modeling.reward_model import reward_at_eos
from align.rlhf import losses as L
from align.trainers.alternatives import alternative_arguments, online_trainer

EOS_CHANCE = 0.1  # per sampled token: some completions end within the budget, others are cut off


def ends_at_a_fixed_rate(policy, eos_id: int, chance: float) -> None:
    """Make the final layer norm output one constant vector along the EOS embedding: the next-token distribution is
    then the same at every position, with `chance` on the EOS (the other logits are near 0, the head is tied)."""
    with torch.no_grad():
        w = policy.transformer.wte.weight[eos_id]
        vocab = policy.transformer.wte.weight.shape[0]
        policy.transformer.ln_f.weight.zero_()
        policy.transformer.ln_f.bias.copy_(w * math.log(chance * vocab / (1 - chance)) / w.dot(w))


@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_the_reward_trl_gets_is_ppos_score(algorithm, tiny_data_root, tmp_path):
    cfg = tiny_config(f"paths.data={tiny_data_root}", f"paths.root={tmp_path}", f"+ablation={algorithm}",
                      "ppo.batch_size=16", "ppo.response_tokens=12", "ppo.missing_eos_mode=subtract",
                      "ppo.missing_eos_penalty=1.0", stage="ppo")
    from data_prep.prepare import ensure_prepared

    ensure_prepared(cfg.data, [cfg.data.prompts_train])
    tokenizer = load_tokenizer(cfg.model)
    sft = load_causal_lm(cfg.model, tokenizer, None, seed=0)
    ends_at_a_fixed_rate(sft, tokenizer.eos_token_id, EOS_CHANCE)
    sft.save_pretrained(tmp_path / "sft")
    load_reward_model(cfg.model, tokenizer, None, seed=1).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    cfg.ppo.policy_init, cfg.ppo.reward_model = str(tmp_path / "sft"), str(tmp_path / "rm")
    policy, reference = (load_causal_lm(cfg.model, tokenizer, cfg.ppo.policy_init, seed=0) for _ in range(2))
    prompts = [{"prompt": [{"role": "user", "content": f"words {n} start sun end any"}]} for n in range(2, 6)]
    trainer = online_trainer(cfg, alternative_arguments(cfg, tmp_path / "run", steps=1), policy, reference, tokenizer,
                             prompts, callbacks=[])

    # Spies on the real calls: what TRL generated from and sampled, and the rewards it was given.
    seen = {}
    generate, reward = trainer._generate, trainer.reward_funcs[0]

    def recording_generate(*args, **kwargs):
        out = generate(*args, **kwargs)
        seen["prompt_ids"], seen["completion_ids"] = out[0], out[1]
        return out

    def recording_reward(*args, **kwargs):
        seen["prompts"], seen["rewards"] = kwargs["prompts"], reward(*args, **kwargs)
        return seen["rewards"]

    recording_reward.__name__ = reward.__name__
    trainer._generate, trainer.reward_funcs[0] = recording_generate, recording_reward
    trainer.train()

    # PPO's way: its own prompt ids, TRL's sampled tokens cut after the first EOS, the RM at the EOS, the EOS trick.
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    ppo_prompts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=True)["input_ids"]
                   for p in seen["prompts"]]
    assert seen["prompt_ids"] == ppo_prompts
    width = max(map(len, ppo_prompts))
    queries = torch.tensor([[pad_id] * (width - len(p)) + p for p in ppo_prompts])
    length = cfg.ppo.response_tokens
    sampled = torch.tensor([c + [pad_id] * (length - len(c)) for c in seen["completion_ids"]])
    responses, _ = L.truncate_after_eos(sampled, eos_id, pad_id)
    query_responses = torch.cat([queries, responses], dim=1)
    rm = load_reward_model(cfg.model, tokenizer, cfg.ppo.reward_model, seed=0)
    with torch.no_grad():
        raw = reward_at_eos(rm, query_responses, (query_responses != pad_id).long())
    has_eos = (responses == eos_id).any(dim=1)
    expected = L.apply_missing_eos_penalty(raw, has_eos, "subtract", 1.0)
    assert 0 < has_eos.sum() < len(has_eos), "want completions that end and completions that are cut off"
    torch.testing.assert_close(torch.tensor(seen["rewards"]), expected, atol=1e-5, rtol=0)
