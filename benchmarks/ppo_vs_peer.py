"""PPO at GPT-2 124M: align's stage and TRL 1.12's PPOTrainer (the peer) side by side, seconds per update and peak RSS.

Both start from the same saved weights and run the same prompts:
- a policy built from `GPT2Config()` (GPT-2 small's shapes, random weights: no hub here) with GPT-2's real tokenizer
  plus align's chat tokens, and random one-label reward and value models of the same shape;
- HH-RLHF prompts from a local slice, converted as `data_prep` converts them and rendered with the chat template,
  kept where they are `--prompt-tokens` long (both implementations tokenize them to the same ids: checked);
- 8 episodes per update, one minibatch, 4 PPO epochs, 64-token responses, temperature 0.7, k1 KL at 0.05, missing-EOS
  penalty 1.0, lr 3e-6, fp32, one process, seed 42 (the peer's script fixes most of these; align is set to match).

The runs alternate (align, peer, align, peer, ...), each in a process of its own, so that both meet the same machine
load. An update's time is the wall time between two consecutive updates' ends, the first update left out (it pays
for warm-up). Peak RSS is each process's ru_maxrss, imports included.

The peer runs in a virtual environment of its own (`../shared/peer/README.md` says how to make it):

    python -m benchmarks.ppo_vs_peer       # the peer in /tmp/trl-peer, the peer and data in ../shared (options)
    python -m benchmarks.ppo_vs_peer ... --layers 2 --width 64 --heads 2 --updates 3 --rounds 1   # a quick check
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.ppo_throughput import REPO, measure, summarise

SEED = 42
BATCH = 8
EPOCHS = 4
RESPONSE_TOKENS = 64


def hh_prompts(path: Path, tokenizer, lengths: tuple[int, int], n: int) -> list[list[dict]]:
    """The first n HH-RLHF prompts (as data_prep converts them) whose rendered length is within `lengths` tokens."""
    from align.core.tokens import chat_ids
    from data_prep.convert import Bad
    from data_prep.hh_rlhf import to_contracts

    prompts = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            try:
                (_, pair), = to_contracts(json.loads(line))
            except Bad:
                continue
            if lengths[0] <= len(chat_ids(tokenizer, pair["prompt"], generation_prompt=True)) <= lengths[1]:
                prompts.append(pair["prompt"])
                if len(prompts) == n:
                    return prompts
    raise SystemExit(f"{path}: only {len(prompts)} prompts of {lengths[0]}-{lengths[1]} tokens, {n} wanted")


def build_init(work: Path, args) -> dict:
    """The peer's --init-from layout (tokenizer/, policy/, reward/, value/) and the prompts for both."""
    import torch
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel, GPT2Tokenizer

    from align.core.config import ScratchArchitecture
    from align.core.tokens import add_chat_tokens, chat_ids
    from align.modeling.models import scratch_config, set_chat_token_ids

    tokenizer = add_chat_tokens(GPT2Tokenizer.from_pretrained(args.tokenizer))
    arch = ScratchArchitecture(n_layer=args.layers, n_embd=args.width, n_head=args.heads, n_positions=1024,
                               initializer_range=0.02, dropout=0.0)
    torch.manual_seed(SEED)
    models = {
        "policy": GPT2LMHeadModel(scratch_config(arch, tokenizer)),
        "reward": GPT2ForSequenceClassification(scratch_config(arch, tokenizer, num_labels=1)),
        "value": GPT2ForSequenceClassification(scratch_config(arch, tokenizer, num_labels=1)),
    }
    for name, model in models.items():
        set_chat_token_ids(model, tokenizer)
        model.save_pretrained(work / name)
        tokenizer.save_pretrained(work / name)
    tokenizer.save_pretrained(work / "tokenizer")

    prompts = hh_prompts(Path(args.hh), tokenizer, tuple(args.prompt_tokens), args.num_prompts)
    rendered = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    for messages, text in zip(prompts, rendered):  # the peer tokenizes the rendered text itself
        assert tokenizer(text)["input_ids"] == chat_ids(tokenizer, messages, generation_prompt=True)
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    (work / "prompts.json").write_text(json.dumps(rendered))
    lengths = [len(chat_ids(tokenizer, p, generation_prompt=True)) for p in prompts]
    return {"params": sum(p.numel() for p in models["policy"].parameters()), "vocab": len(tokenizer),
            "prompt_lengths": lengths}


def align_overrides(work: Path, run: str, updates: int) -> list[str]:
    """`python -m align.ppo +experiment=small` pointed at the saved models and prompts, set to the peer's settings."""
    return [
        "+experiment=small", f"paths.root={work / run}", f"paths.data={work / 'data'}",
        f"model.name_or_path={work / 'policy'}", f"model.tokenizer={work / 'policy'}",
        "data.sources={}", "data.mixtures={}", f"data.prompts_train={work / 'prompts.jsonl'}",
        "data.prompts_eval=null", "data.ptx_train=null", "data.judge=null",
        f"ppo.policy_init={work / 'policy'}", f"ppo.value_init={work / 'value'}", f"ppo.reward_model={work / 'reward'}",
        f"ppo.batch_size={BATCH}", "ppo.num_minibatches=1", f"ppo.ppo_epochs={EPOCHS}",
        f"ppo.total_episodes={BATCH * updates}", f"ppo.response_tokens={RESPONSE_TOKENS}", "ppo.temperature=0.7",
        "ppo.kl_coef=0.05", "ppo.kl_estimator=k1", "ppo.adaptive_kl=false", "ppo.missing_eos_mode=subtract",
        "ppo.missing_eos_penalty=1.0", "ppo.lr=3e-6", "ppo.lr_schedule=linear", "ppo.ptx_coef=0.0",
        "ppo.log_every=1000", "ppo.save_every=0", "ppo.resume=false", "distributed=single", f"seed={SEED}",
    ]


def run_align(work: Path, run: str, updates: int) -> dict:
    result = measure(work, align_overrides(work, run, updates), profile=False, threads=0)
    summary = summarise(result, warmup=1)
    return {"s_per_update": summary["wall"], "rss_mib": result["peak_rss_mib"],
            "phases": {name: statistics.mean(v) for name, v in summary["phases"].items()}}


def run_peer(work: Path, run: str, updates: int, args) -> dict:
    out = work / run
    command = [args.peer_python, args.peer_script, "--init-from", str(work), "--prompts-file",
               str(work / "prompts.json"), "--out", str(out), "--seed", str(SEED), "--batch-size", str(BATCH),
               "--num-ppo-epochs", str(EPOCHS), "--response-length", str(RESPONSE_TOKENS),
               "--total-episodes", str(BATCH * updates)]
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
    timings = json.loads((out / "timings.json").read_text())
    return {"s_per_update": timings["per_update_s"]["all"][1:], "rss_mib": timings["ru_maxrss_MiB"]}


def parse_args() -> argparse.Namespace:
    shared = REPO.parent / "shared"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-python", default="/tmp/trl-peer/bin/python")
    parser.add_argument("--peer-script", default=str(shared / "peer" / "run_trl_ppo.py"))
    parser.add_argument("--tokenizer", default=str(shared / "data" / "gpt2_tokenizer"))
    parser.add_argument("--hh", default=str(shared / "data" / "hh_rlhf_harmless_base_test" / "test_first1600.jsonl.gz"))
    parser.add_argument("--prompt-tokens", type=int, nargs=2, default=(96, 160), metavar=("MIN", "MAX"),
                        help="rendered prompt length range (the peer's batches pad to the longest, as align's do)")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--updates", type=int, default=3, help="per run; the first is not timed")
    parser.add_argument("--rounds", type=int, default=2, help="align-then-peer pairs")
    parser.add_argument("--keep", default=None, help="work in this directory and keep it (default: a temp dir)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ppo-vs-peer-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        problem = build_init(work, args)
        runs = []
        for r in range(args.rounds):
            runs.append(("align", r, run_align(work, f"align-{r}", args.updates)))
            runs.append(("peer", r, run_peer(work, f"peer-{r}", args.updates, args)))
    lines = ["| run | round | s/update (each timed update) | median | peak RSS MiB |", "|---|---|---|---|---|"]
    for name, r, m in runs:
        each = " / ".join(f"{s:.1f}" for s in m["s_per_update"])
        lines.append(f"| {name} | {r} | {each} | {statistics.median(m['s_per_update']):.1f} | {m['rss_mib']:.0f} |")

    def pooled(name, key):
        values = [m[key] for n, _, m in runs if n == name]
        return statistics.median(sum(values, []) if key == "s_per_update" else values)

    speed = pooled("peer", "s_per_update") / pooled("align", "s_per_update")
    memory = pooled("align", "rss_mib") / pooled("peer", "rss_mib")
    phases = {k: statistics.mean(m["phases"][k] for n, _, m in runs if n == "align")
              for k in ("rollout", "score", "update")}
    lengths = problem["prompt_lengths"]
    lines += [
        "",
        "| measure | align | peer (TRL 1.12 PPOTrainer) | align vs peer |",
        "|---|---|---|---|",
        f"| s/update, median of every timed update | {pooled('align', 's_per_update'):.1f} | "
        f"{pooled('peer', 's_per_update'):.1f} | {speed:.2f}x the speed |",
        f"| peak RSS MiB, median of the runs | {pooled('align', 'rss_mib'):.0f} | {pooled('peer', 'rss_mib'):.0f} | "
        f"{memory:.2f}x the memory |",
        "",
        f"align's update, mean seconds: generation {phases['rollout']:.1f}, scoring (logprobs, reference, values, "
        f"reward) {phases['score']:.1f}, {EPOCHS} PPO epochs {phases['update']:.1f}.",
        f"Models: GPT-2 {args.layers} layers x {args.width} ({args.heads} heads), {problem['params']:,} parameters in "
        f"the policy, vocabulary {problem['vocab']:,}; {len(lengths)} HH-RLHF prompts of {min(lengths)}-"
        f"{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}); {BATCH} episodes per update, {EPOCHS} epochs, "
        f"{RESPONSE_TOKENS}-token responses; {args.updates} updates per run, the first not timed.",
        f"Machine: {os.cpu_count()} CPUs; load average (1 min) {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after. Whole command {time.perf_counter() - started:.0f} s.",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
