"""Talk to any stage's output through its chat template.

    python -m align.chat +experiment=tiny                                   # the PPO model of the tiny run
    python -m align.chat chat.model=outputs/tiny/sft/final                  # any stage's final/ directory
    python -m align.chat chat.model=outputs/tiny/sft/final chat.prompt="words 3 start sun end any"   # one-shot

Interactive: each line you type is a user turn; the conversation so far is the context, and each reply is printed
token by token as it is sampled. `/history` shows the conversation so far; `/reset` shows it and starts over;
`/exit` (or end of input) leaves.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from align.core.config import Config
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


def transcript(messages: list[dict]) -> str:
    """The conversation so far, a turn a line, indented apart from the live prompts."""
    return "\n".join(f"  {m['role']}: {m['content']}" for m in messages) or "  (no turns yet)"


def chat(cfg: Config) -> dict:
    from transformers import AutoModelForCausalLM

    from align.modeling.models import load_tokenizer

    name = cfg.chat.model
    require_stage_output(name, cfg.paths.root, "train it first, or set chat.model to a stage's final/ directory")
    tokenizer = load_tokenizer(cfg.model, path=name)
    model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=cfg.model.trust_remote_code)
    start = [{"role": "system", "content": cfg.chat.system}] if cfg.chat.system else []

    if cfg.chat.prompt is not None:
        print(reply(model, tokenizer, start + [{"role": "user", "content": cfg.chat.prompt}], cfg))
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
        print("assistant> ", end="", flush=True)
        answer = reply(model, tokenizer, messages, cfg, printing_streamer(tokenizer))
        print(CUT if answer.endswith(CUT) else "", flush=True)
        messages.append({"role": "assistant", "content": answer.removesuffix(CUT)})
        turns += 1


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_stage(chat, cfg, preemptible=False)  # nothing to checkpoint: SIGTERM ends a chat at once


if __name__ == "__main__":
    main()
