"""Batched sampling: left-padded prompts, stop at the end-of-turn EOS (or, for plain text, at the end of the line).

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
           batch_size: int, seed: int, streamer=None) -> list[Completion]:
    """One response per prompt (a list of messages), under the chat template. temperature 0 is greedy decoding.
    A transformers streamer (one prompt only) is handed each token as it is sampled."""
    prompt_ids = [chat_ids(tokenizer, p, generation_prompt=True) for p in prompts]
    return sample_ids(model, tokenizer, prompt_ids, max_new_tokens, temperature, batch_size, seed,
                      [tokenizer.eos_token_id], streamer)


def line_end_ids(tokenizer) -> list[int]:
    """The EOS and every token whose text holds a line break: where an answer given as plain text ends."""
    return sorted({tokenizer.eos_token_id} | {i for i in tokenizer.get_vocab().values()
                                              if "\n" in tokenizer.decode([i])})


def sample_ids(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, temperature: float,
               batch_size: int, seed: int, stop_ids: list[int], streamer=None) -> list[Completion]:
    """One response per prompt, given as token ids, ending at the first of `stop_ids` (kept as its last token)."""
    if streamer is not None and len(prompt_ids) != 1:
        raise ValueError("a streamer follows one response: sample one prompt at a time")
    model.eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    stops = set(stop_ids)
    completions: list[Completion] = []
    try:
        for start in range(0, len(prompt_ids), batch_size):
            batch = prompt_ids[start : start + batch_size]
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
                    eos_token_id=list(stop_ids),
                    pad_token_id=tokenizer.pad_token_id,
                    suppress_tokens=never_sampled(tokenizer) or None,
                    streamer=streamer,
                )
            for ids, row in zip(batch, out[:, width:].tolist()):
                end = next((i for i, token in enumerate(row) if token in stops), None)
                response_ids = row if end is None else row[: end + 1]
                if end is None or row[end] == tokenizer.eos_token_id:
                    text = tokenizer.decode(response_ids[: end], skip_special_tokens=True)
                else:  # a line end, which may share its token with the line's last characters
                    text = tokenizer.decode(response_ids, skip_special_tokens=True).split("\n")[0]
                completions.append(Completion(text, end is not None, len(response_ids), ids, response_ids))
    finally:
        torch.random.set_rng_state(generator_state)
    return completions
