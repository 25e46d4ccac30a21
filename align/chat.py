"""Talk to any stage's output through its chat template.

    python -m align.chat +experiment=tiny                                   # the PPO model of the tiny run
    python -m align.chat chat.model=outputs/tiny/sft/final                  # any stage's final/ directory
    python -m align.chat chat.model=outputs/tiny/sft/final chat.prompt="words 3 start sun end any"   # one-shot

Interactive: each line you type is a user turn; the conversation so far is the context. `/reset` starts over,
`/exit` (or end of input) leaves.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from align.core.config import Config
from align.runtime.runs import require_stage_output, run_stage


def reply(model, tokenizer, messages: list[dict], cfg: Config) -> str:
    from align.evaluation.sampling import sample

    (completion,) = sample(model, tokenizer, [messages], cfg.chat.max_new_tokens, cfg.chat.temperature,
                           batch_size=1, seed=cfg.seed + len(messages))
    return completion.text if completion.ended else completion.text + " [...]"


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
        if line.strip() == "/reset":
            messages = list(start)
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.strip()})
        answer = reply(model, tokenizer, messages, cfg)
        messages.append({"role": "assistant", "content": answer.removesuffix(" [...]")})
        turns += 1
        print(f"assistant> {answer}", flush=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_stage(chat, cfg, preemptible=False)  # nothing to checkpoint: SIGTERM ends a chat at once


if __name__ == "__main__":
    main()
