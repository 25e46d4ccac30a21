"""The implicit reward model: a causal LM trained with DPO's loss on the preference pairs, whose score of a reply is
beta x the sum over the reply's tokens of log pi(token) - log pi_ref(token), pi_ref the SFT model it started from
(Rafailov et al. 2023, section 5: the language model is secretly a reward model).

Why it exists beside the classifier: a sequence classifier reads one vector at the EOS, and on the tiny worlds it
stays blind to copy checks (a slot's bound value, the first word asked for) that the log-ratio reads through the LM
head at every reply token (docs/ablations.md). Its score is unbounded off the data: PPO against it needs a KL
coefficient of at least beta, where the best policy is a geometric mix of SFT and the DPO model.

Length-normalised (rm.length_normalize): the sum divided by the reply's tokens plus one, times that count for a
typical training reply. DPO lowers the likelihood of nearly every token a little (the per-token log-ratio of the
training pairs' chosen replies is below zero), so the plain sum falls with length, and an empty reply outscored long,
partly right ones (docs/ablations.md). At the typical length the two scores are equal, so what PPO's KL coefficient
needs (`kl_coef_floor`) holds for replies of that length; the extra one keeps a lone EOS from counting as a whole
reply.

On disk: the trained causal LM (a plain Hugging Face directory) and `implicit_reward.json` (beta, the reference's
path, the normalisation offset, the typical reply's tokens plus one when length-normalised). `forward` takes what a
sequence classifier takes and returns the score as `.logits[:, 0]`, so every reader of a reward model (PPO,
RLOO/GRPO, the RM's and the evaluation's scoring) reads it unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutputWithPast

from align.core.tokens import IM_START, chat_ids, reply_tokens
from align.modeling.forward import lm_logits, response_logprobs

CONFIG_FILE = "implicit_reward.json"


def is_implicit(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def reply_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, im_start_id: int, header: int) -> torch.Tensor:
    """(B, L) True at the tokens of each row's last turn after its `<|im_start|>assistant\\n` header (`header`
    tokens from the `<|im_start|>`), the EOS included and padding not."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    last_start = torch.where(input_ids == im_start_id, positions, -1).max(dim=1).values
    return (positions[None, :] >= (last_start + header)[:, None]) & (last_start >= 0)[:, None] & attention_mask.bool()


class ImplicitRewardModel(nn.Module):
    """beta x sum over the reply of log pi - log pi_ref (times typical_tokens / (reply tokens + 1) when
    `typical_tokens` is set), minus the normalisation offset; `policy` and `reference` causal LMs with one tokenizer."""

    def __init__(self, policy: nn.Module, reference: nn.Module, beta: float, offset: float, tokenizer,
                 typical_tokens: float | None = None):
        super().__init__()
        self.policy, self.reference = policy, reference
        self.config = policy.config  # what TRL's DeepSpeed preparation reads of a model (its hidden size)
        self.beta, self.offset, self.typical_tokens = beta, offset, typical_tokens
        self.pad_id = tokenizer.pad_token_id
        self.im_start_id = tokenizer.convert_tokens_to_ids(IM_START)
        prompt = chat_ids(tokenizer, [{"role": "user", "content": "x"}], generation_prompt=True)
        self.header = len(prompt) - max(i for i, t in enumerate(prompt) if t == self.im_start_id)

    def forward(self, input_ids, attention_mask=None, position_ids=None, **_):
        """Attention and positions come from the pad tokens, as in every read of a model here (lm_logits); the LM
        head runs only from the first column where a reply starts."""
        mask = reply_mask(input_ids, input_ids != self.pad_id, self.im_start_id, self.header)
        columns = mask.any(dim=0).nonzero()
        start = int(columns[0]) if len(columns) else input_ids.shape[1] - 1
        targets = input_ids[:, start:]
        ratio = (response_logprobs(lm_logits(self.policy, input_ids, self.pad_id, start), targets, 1.0)
                 - response_logprobs(lm_logits(self.reference, input_ids, self.pad_id, start), targets, 1.0))
        total = (ratio * mask[:, start:]).sum(dim=1)
        if self.typical_tokens is not None:
            total = total * self.typical_tokens / (mask.sum(dim=1) + 1)
        score = self.beta * total - self.offset
        return SequenceClassifierOutputWithPast(logits=score[:, None])

    def save(self, directory: Path, reference_path: str) -> None:
        """The policy's weights (the Trainer saves them) are in `directory`; this adds what scoring needs besides."""
        config = {"beta": self.beta, "reference": str(Path(reference_path).resolve()), "offset": self.offset,
                  "typical_tokens": self.typical_tokens}
        (Path(directory) / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def typical_tokens(tokenizer, conversations: list[list[dict]]) -> float:
    """The mean over `conversations` of their last reply's tokens as the score counts them (after the assistant
    header, the EOS included), plus one."""
    return sum(reply_tokens(tokenizer, c) for c in conversations) / len(conversations) + 1


def kl_coef_floor(beta: float, temperature: float) -> float:
    """The smallest KL coefficient at which PPO against this reward still aims at the DPO model, not past it.

    PPO sampling at `temperature` T takes its own and the reference's log-probabilities at T, so its best policy is the
    reference at T times exp(reward / kl_coef) = (pi_DPO / pi_ref)^(beta / kl_coef). The DPO model sampled at T is
    the reference at T times (pi_DPO / pi_ref)^(1 / T), up to tempered sampling's per-token normalisers: the two meet
    at kl_coef = beta x T. Below it PPO's best policy sharpens the log-ratio past anything the pairs taught, where the
    reward grows without bound. Per reply token (rm.length_normalize) a reply of n tokens is scored with beta x
    typical / (n + 1) in beta's place: the floor is exact at the typical length, and PPO's best policy at it goes
    past the DPO model on shorter replies (an empty one included: lower still) and stops short of it on longer ones.
    """
    return beta * temperature


def read_config(path: str | Path) -> dict:
    return json.loads((Path(path) / CONFIG_FILE).read_text())
