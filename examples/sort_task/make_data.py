"""Contract files for the sort task, a task the tiny experiment was never tuned on (docs/ablations.md, "A task
nobody tuned for").

    python examples/sort_task/make_data.py /tmp/sort/data                      # 8,000 demonstrations
    python examples/sort_task/make_data.py /tmp/sort/data --demos 2000 --mistakes model
    python -m data_prep --tokenizer /tmp/sort/data

A prompt is `sort` and 3-8 letters; the answer, the letters in order. Each pair's rejected reply is the answer with
one mistake: a letter replaced, two letters swapped, the letters left unsorted, or a letter dropped or added.
--mistakes random replaces a letter with any other; --mistakes model, half the time with another letter of the
prompt, the mistake a small model makes (it repeats one of the letters it sorts).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

LETTERS = "abcdefghjkmnprst"


def question(rng: random.Random) -> list[str]:
    return [rng.choice(LETTERS) for _ in range(rng.randint(3, 8))]


def mistake(rng: random.Random, letters: list[str], model_like: bool) -> list[str]:
    """The sorted letters with one mistake, never the right answer."""
    right = sorted(letters)
    while True:
        reply, kind = list(right), rng.random()
        if kind < 0.4:
            i = rng.randrange(len(reply))
            own = [c for c in sorted(set(letters)) if c != reply[i]] if model_like and rng.random() < 0.5 else []
            reply[i] = rng.choice(own or [c for c in LETTERS if c != reply[i]])
        elif kind < 0.7:
            i, j = rng.sample(range(len(reply)), 2)
            reply[i], reply[j] = reply[j], reply[i]
        elif kind < 0.85:
            reply = list(letters)
        elif rng.random() < 0.5:
            del reply[rng.randrange(len(reply))]
        else:
            reply.insert(rng.randrange(len(reply) + 1), rng.choice(LETTERS))
        if reply != right:
            return reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--demos", type=int, default=8000, help="SFT demonstrations")
    parser.add_argument("--mistakes", choices=("random", "model"), default="random")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    def user(letters: list[str]) -> list[dict]:
        return [{"role": "user", "content": "sort " + " ".join(letters)}]

    def reply(letters: list[str]) -> list[dict]:
        return [{"role": "assistant", "content": " ".join(letters)}]

    def demo(rng: random.Random) -> dict:
        letters = question(rng)
        return {"messages": user(letters) + reply(sorted(letters))}

    def pair(rng: random.Random) -> dict:
        letters = question(rng)
        return {"prompt": user(letters), "chosen": reply(sorted(letters)),
                "rejected": reply(mistake(rng, letters, args.mistakes == "model"))}

    def prompt(rng: random.Random) -> dict:
        return {"prompt": user(question(rng))}

    files = {"sft.train": (demo, args.demos), "sft.eval": (demo, 200), "prefs.train": (pair, 12000),
             "prefs.eval": (pair, 400), "prefs.audit": (pair, 2000), "prompts.train": (prompt, 4000),
             "prompts.eval": (prompt, 200)}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (record, n) in files.items():
        rng = random.Random(f"{args.seed}-{name}")  # a file's own stream: the others stay the same when one changes
        with open(args.out / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(record(rng)) + "\n" for _ in range(n))
    print(f"wrote {', '.join(files)} to {args.out}")


if __name__ == "__main__":
    main()
