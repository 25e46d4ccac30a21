"""Preference pairs of a model's own answers, labelled by a task's judge: the comparisons InstructGPT's labellers
made, of the model's samples rather than of mistakes an author wrote (docs/ablations.md, "A task nobody tuned for").

    python examples/sort_task/policy_pairs.py outputs/sort2k-seed0/sft/final /tmp/sort2k/prompts.train.jsonl \
        sort_judge:score /tmp/policy_pairs.jsonl --samples 4 --seed 0

Each prompt gets `--samples` answers sampled as the evaluation samples (eval.max_new_tokens 16, temperature 0.8);
of those that ended, the one the judge scores highest against the one it scores lowest is a pair. Prompts whose
answers all score the same give no pair, nor do those the pair contract refuses (an empty answer, say).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace


def best_against_worst(scores: list[float]) -> tuple[int, int] | None:
    """Indices of the highest and the lowest score (the first of equals), or None when all are equal."""
    if not scores:
        return None
    best = max(range(len(scores)), key=scores.__getitem__)
    worst = min(range(len(scores)), key=scores.__getitem__)
    return None if scores[best] == scores[worst] else (best, worst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model directory with its tokenizer and chat template (a stage's final/)")
    parser.add_argument("prompts", type=Path, help="a prompt contract file (prompts.train.jsonl)")
    parser.add_argument("judge", help="the task's judge, as data.judge names it (package.module:function)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.core.contracts import check_pair, judged_prompt
    from align.core.records import read_records
    from align.evaluation.judging import load_judge
    from align.evaluation.sampling import sample

    score = load_judge(SimpleNamespace(judge=args.judge)).score  # the stages' loader, which reads data.judge only
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    prompts = [r["prompt"] for r in read_records(args.prompts, "prompt", "error")[0]]
    answers = [sample(model, tokenizer, prompts, args.max_new_tokens, args.temperature, 200, args.seed * 1000 + k)
               for k in range(args.samples)]
    pairs = []
    for i, prompt in enumerate(prompts):
        ended = [a[i] for a in answers if a[i].ended]
        chosen = best_against_worst([score(judged_prompt(prompt), c.text, True) for c in ended])
        if chosen is None:
            continue
        best, worst = (ended[j].text for j in chosen)
        pair = {"prompt": prompt, "chosen": [{"role": "assistant", "content": best}],
                "rejected": [{"role": "assistant", "content": worst}]}
        if check_pair(pair) is None:
            pairs.append(pair)
    args.out.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    print(f"wrote {len(pairs)} pairs of {len(prompts)} prompts to {args.out}")


if __name__ == "__main__":
    main()
