"""Talk to any stage's output through its chat template.

    python -m align.chat +experiment=tiny                                   # the PPO model of the tiny run
    python -m align.chat chat.model=outputs/tiny/sft/final                  # any stage's final/ directory
    python -m align.chat chat.model=outputs/tiny/sft/final chat.prompt="words 3 start sun end any"   # one-shot

Interactive: each line you type is a user turn; the conversation so far is the context, and each reply is printed
token by token as it is sampled. `/history` shows the conversation so far; `/reset` shows it and starts over;
`/exit` (or end of input) leaves. When the conversation outgrows the model's positions, its oldest turns leave the
context (said when it happens; `/history` still shows them).
"""

from __future__ import annotations

import dataclasses
import sys

import hydra
from omegaconf import DictConfig

from align.core.config import Config
from align.core.errors import UserError
from align.runtime.runs import require_stage_output, run_stage

CUT = " [...]"  # after a reply that reached chat.max_new_tokens before its end of turn


def printing_streamer(tokenizer):
    """A transformers streamer that prints a reply's text as its tokens are sampled, leaving the line open."""
    from transformers import TextStreamer

    class ReplyStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            print(text, end="", flush=True)

    return ReplyStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def reply(model, tokenizer, messages: list[dict], cfg: Config, streamer=None) -> str:
    from align.evaluation.sampling import sample

    (completion,) = sample(model, tokenizer, [messages], cfg.chat.max_new_tokens, cfg.chat.temperature,
                           batch_size=1, seed=cfg.seed + len(messages), streamer=streamer)
    return completion.text if completion.ended else completion.text + CUT


def fitting_context(tokenizer, messages: list[dict], start: int, room: int) -> list[dict]:
    """`messages` without as many of its oldest exchanges (after the first `start` messages: the system turn) as it
    takes for the prompt to fit `room` tokens; empty when even the last user turn alone does not."""
    from align.core.tokens import chat_ids

    head, turns = messages[:start], messages[start:]
    while turns and len(chat_ids(tokenizer, head + turns, generation_prompt=True)) > room:
        turns = turns[2:] if len(turns) > 1 else []  # a user turn and the reply to it
    return head + turns if turns else []


def transcript(messages: list[dict]) -> str:
    """The conversation so far, a turn a line, indented apart from the live prompts."""
    return "\n".join(f"  {m['role']}: {m['content']}" for m in messages) or "  (no turns yet)"


def chat(cfg: Config) -> dict:
    from transformers import AutoModelForCausalLM

    from align.core.hub import load_local_or_hub
    from align.modeling.models import context_size, load_tokenizer

    name = cfg.chat.model
    require_stage_output(name, cfg.paths.root, "train it first, or set chat.model to a stage's final/ directory")
    tokenizer = load_tokenizer(cfg.model, path=name)
    model = load_local_or_hub(lambda n, local_files_only: AutoModelForCausalLM.from_pretrained(
        n, local_files_only=local_files_only, trust_remote_code=cfg.model.trust_remote_code), name, "model",
        "chat.model")
    start = [{"role": "system", "content": cfg.chat.system}] if cfg.chat.system else []
    positions = context_size(model) or sys.maxsize
    if cfg.chat.max_new_tokens > positions // 2:  # half the positions stay for the conversation
        cfg = dataclasses.replace(cfg, chat=dataclasses.replace(cfg.chat, max_new_tokens=positions // 2))
        print(f"(chat.max_new_tokens lowered to {positions // 2}: the model has {positions} positions)",
              file=sys.stderr)
    room = positions - cfg.chat.max_new_tokens  # for the prompt, once the reply has its tokens
    too_long = (f"does not fit the model's {positions} positions with chat.max_new_tokens={cfg.chat.max_new_tokens}"
                " (ask for fewer new tokens, or say it shorter)")

    if cfg.chat.prompt is not None:
        messages = start + [{"role": "user", "content": cfg.chat.prompt}]
        if not fitting_context(tokenizer, messages, len(start), room):
            raise UserError(f"chat.prompt {too_long}")
        print(reply(model, tokenizer, messages, cfg))
        return {"turns": 1}

    messages, turns = list(start), 0
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return {"turns": turns}
        if line.strip() in ("/history", "/reset"):
            print(transcript(messages), flush=True)
            if line.strip() == "/reset":
                messages = list(start)
                print("-- a new conversation --", flush=True)
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.strip()})
        context = fitting_context(tokenizer, messages, len(start), room)
        if not context:
            print(f"(that message {too_long}; nothing was sent)", flush=True)
            messages.pop()
            continue
        if len(context) < len(messages):
            print(f"(the conversation outgrew the model's {positions} positions: the model no longer sees its "
                  f"first {len(messages) - len(context)} turns)", flush=True)
        print("assistant> ", end="", flush=True)
        answer = reply(model, tokenizer, context, cfg, printing_streamer(tokenizer))
        print(CUT if answer.endswith(CUT) else "", flush=True)
        messages.append({"role": "assistant", "content": answer.removesuffix(CUT)})
        turns += 1


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_stage(chat, cfg, preemptible=False)  # nothing to checkpoint: SIGTERM ends a chat at once


if __name__ == "__main__":
    main()
