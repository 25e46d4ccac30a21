"""Prompting with solved examples before the question (the GPT-3 step): zero-, one- and few-shot prompts, as earlier
chat turns for a chat model or as plain text for a base model, and what every row of the evaluation is scored in."""

from __future__ import annotations

import random

from align.core.contracts import PLAIN_TEXT_SEPARATOR, plain_text_example
from align.core.tokens import chat_ids
from align.evaluation.sampling import Completion


def solved_examples(records: list[dict], held_out: set[str], judge) -> list[tuple[str, str]]:
    """(prompt, answer) pairs of single-turn demonstrations to show before a question: never one of the held-out
    prompts themselves, and, where the task has a judge, only answers it scores in full."""
    examples = []
    for record in records:
        messages = record["messages"]
        if len(messages) != 2 or messages[0]["role"] != "user":
            continue
        prompt, answer = messages[0]["content"], messages[1]["content"]
        if prompt in held_out or (judge is not None and judge.score(prompt, answer, True) < 1.0):
            continue
        examples.append((prompt, answer))
    return examples


def shots_for(n_prompts: int, examples: list[tuple[str, str]], k: int, seed: int) -> list[list[tuple[str, str]]]:
    """k examples for each of n prompts, drawn without replacement per prompt; the same prompt gets the same first
    examples at every k, so 1-shot and 4-shot differ only by the examples added."""
    if k > len(examples):
        raise ValueError(f"{k} examples asked for, {len(examples)} available")
    rng = random.Random(seed)
    most = min(len(examples), max(k, 8))
    return [rng.sample(examples, most)[:k] for _ in range(n_prompts)]


def chat_prompt(question: list[dict], shots: list[tuple[str, str]]) -> list[dict]:
    """The examples as earlier turns of the conversation, then the question."""
    turns = [m for prompt, answer in shots for m in ({"role": "user", "content": prompt},
                                                    {"role": "assistant", "content": answer})]
    return turns + question


def plain_text_prompt(question: str, shots: list[tuple[str, str]]) -> str:
    """The examples as a page of plain text, then the question's line: the answer is the next line."""
    return "".join(plain_text_example(p, a) + PLAIN_TEXT_SEPARATOR for p, a in shots) + question + "\n"


def as_zero_shot_chat(tokenizer, question: list[dict], completion: Completion) -> Completion:
    """The completion as if answered to the bare question in the chat format, the context every row of the evaluation
    is scored in by the reward model: the answer's text as an assistant turn, ended with the EOS if it ended."""
    prompt_ids = chat_ids(tokenizer, question, generation_prompt=True)
    full = chat_ids(tokenizer, question + [{"role": "assistant", "content": completion.text}])
    response_ids = full[len(prompt_ids):]
    response_ids = response_ids[: response_ids.index(tokenizer.eos_token_id) + 1]
    if not completion.ended:
        response_ids = response_ids[:-1]
    return Completion(completion.text, completion.ended, len(response_ids), prompt_ids, response_ids)
