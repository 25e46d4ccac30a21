"""Batched sampling from a chat model: left-padded prompts, stop at the end-of-turn EOS.

Used wherever responses are sampled for judging (stage evaluations, the eval and chat commands).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from align.core.tokens import chat_ids, never_sampled
from align.modeling.forward import left_pad


@dataclass
class Completion:
    text: str  # decoded response without the EOS
    ended: bool  # the model emitted the end-of-turn EOS within the token budget
    n_tokens: int  # response tokens, the EOS included
    prompt_ids: list[int]  # the prompt as the model saw it (chat template, generation prompt)
    response_ids: list[int]  # the sampled tokens, up to and including the EOS


def sample(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, temperature: float,
           batch_size: int, seed: int) -> list[Completion]:
    """One response per prompt (a list of messages). temperature 0 is greedy decoding."""
    model.eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    completions: list[Completion] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = [chat_ids(tokenizer, p, generation_prompt=True) for p in prompts[start : start + batch_size]]
            input_ids, attention_mask = left_pad(batch, tokenizer.pad_token_id)
            width = input_ids.shape[1]
            with torch.no_grad():
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_k=0 if temperature > 0 else None,
                    top_p=1.0 if temperature > 0 else None,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    suppress_tokens=never_sampled(tokenizer) or None,
                )
            for prompt_ids, row in zip(batch, out[:, width:].tolist()):
                ended = tokenizer.eos_token_id in row
                response = row[: row.index(tokenizer.eos_token_id)] if ended else row
                response_ids = response + [tokenizer.eos_token_id] * ended
                completions.append(Completion(tokenizer.decode(response, skip_special_tokens=True), ended,
                                              len(response_ids), prompt_ids, response_ids))
    finally:
        torch.random.set_rng_state(generator_state)
    return completions
