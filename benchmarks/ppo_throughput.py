"""PPO throughput on this machine: our stage (align.ppo.train) on the peer's configuration, seconds per update.

The peer is TRL 1.12's PPOTrainer (its configuration and measured numbers: docs/benchmarks.md) on a toy problem: a GPT-2
of 2 layers x 64 wide, a ~2000-token byte-level BPE, randomly initialised reward and value models of the same shape, 256
template prompts of 9-18 tokens, 8 episodes per update, 1 minibatch, 4 PPO epochs, 64 updates (512 episodes), 32-token
responses at temperature 0.7, k1 KL at 0.05, missing-EOS penalty 1.0, fp32, seed 42. At that size the models cost almost
nothing, so the benchmark measures the per-update overhead of the training loop: generation, the scoring passes, the PPO
epochs and everything Python does around them.

This benchmark builds the same kind of problem offline in a temporary directory (tokenizer trained with
align.core.tokens.train_tiny_tokenizer, random GPT-2 policy and reward model saved as the upstream stages would save
them, a prompts JSONL), composes the stage's config from conf/ with Hydra as `python -m align.ppo +experiment=tiny
...` would, and runs align.ppo.train through align.runtime.runs.run_stage (config validation, the allocator setting of
align.runtime.allocator) in a child process, so that the peak RSS reported is the stage's own (imports, config, models,
the loop) and not the tokenizer training of the setup.

Timing comes from the stage itself: every update logs time/rollout_s, time/score_s and time/update_s into
<run_dir>/metrics.jsonl. The child also timestamps each metrics.jsonl write (a wrapper around MetricsLog.write), so
the wall time of a whole loop iteration, logging included, is known too. The first --warmup updates are not timed.
The peer's numbers are quoted from docs/benchmarks.md, not measured here: the peer is never installed or run.

    python -m benchmarks.ppo_throughput                 # the peer configuration
    python -m benchmarks.ppo_throughput --profile       # also cProfile the stage (slower; timings not comparable)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The peer's numbers as docs/benchmarks.md records them (TRL 1.12 PPOTrainer, same configuration, quiet 2-core machine).
PEER_SOURCE = "peer, measured by the project on 2026-11-23 (docs/benchmarks.md)"
PEER = {"s_per_update": 0.63, "episodes_per_s": 12.5, "rss_mib": 515}
PEER_NO_GC = {"s_per_update": 0.15, "episodes_per_s": 53}  # the same without TRL's two gc.collect() per update
TARGET_EPISODES_PER_S = 100.0
TARGET_RSS_MIB = 515.0

# The peer configuration (the defaults of the peer's script; docs/benchmarks.md).
SEED = 42
VOCAB_SIZE = 2000
NUM_PROMPTS = 256
PROMPT_TOKENS = (9, 18)
ARCHITECTURE = dict(n_layer=2, n_embd=64, n_head=2, n_positions=256)
STAGE_OVERRIDES = [
    "ppo.batch_size=8",
    "ppo.num_minibatches=1",
    "ppo.ppo_epochs=4",
    "ppo.total_episodes=512",
    "ppo.response_tokens=32",
    "ppo.temperature=0.7",
    "ppo.kl_coef=0.05",
    "ppo.kl_estimator=k1",
    "ppo.adaptive_kl=false",
    "ppo.missing_eos_mode=subtract",
    "ppo.missing_eos_penalty=1.0",
    # The peer's learning rate and schedule (PPOConfig defaults). They cost nothing, but they keep the policy near
    # its random start, so responses stay as long as the peer's (a random policy almost never samples the EOS).
    "ppo.lr=3e-6",
    "ppo.lr_schedule=linear",
    "ppo.ptx_coef=0.0",
    "ppo.log_every=1000",  # one progress line at the end, not one per update
    "distributed=single",  # fp32, one process
    f"seed={SEED}",
]
# Options that older commits of the stage lack (A/B runs against them): set only where they exist.
# No checkpoint may land inside the timed updates, and a fresh run directory must not look for one to resume.
OPTIONAL_OVERRIDES = {"save_every": "ppo.save_every=0", "resume": "ppo.resume=false"}

# ---------------------------------------------------------------- the toy problem (the peer's, rebuilt offline)

# The peer's prompt templates, copied: the peer's script is not part of this repository (docs/benchmarks.md).
TOPICS = ["the ocean", "a robot", "the moon", "coffee", "a small town", "winter", "a library", "the forest",
          "an old map", "a train", "music", "a garden", "the desert", "a lighthouse", "rain", "a market"]
VERBS = ["Describe", "Write a line about", "Tell me about", "Summarize", "Explain", "Imagine", "Praise",
         "List facts on"]
STYLES = ["briefly", "in one sentence", "politely", "with humor", "plainly", "for a child", "as a poem", "quickly"]


def peer_prompts(n: int, seed: int) -> list[str]:
    """The peer's prompts, drawn from its templates with its seeded RNG: the very same 256 strings."""
    rng = random.Random(seed)
    return [f"{rng.choice(VERBS)} {rng.choice(TOPICS)} {rng.choice(STYLES)}." for _ in range(n)]


def stdlib_corpus(max_chars: int = 3_000_000) -> list[str]:
    """The peer's tokenizer text: this interpreter's stdlib *.py files, sorted by path, up to max_chars."""
    texts, total = [], 0
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        texts.append(Path(path).read_text(encoding="utf-8", errors="replace"))
        total += len(texts[-1])
        if total >= max_chars:
            break
    return texts


def chatml_prompt(content: str) -> str:
    """A one-turn user prompt as the project's chat template renders it with the generation prompt."""
    return f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"


def build_problem(work: Path, prompt_repeats: int) -> dict:
    """Tokenizer, random policy ("SFT") and reward model ("RM"), prompts JSONL under `work`; returns paths and stats.

    The peer's prompts are 9-18 tokens without any chat framing, but the stage renders every prompt with the chat
    template (about 8 tokens of framing once `user` and `assistant` are single tokens). So the BPE is trained on the
    stdlib text plus the rendered prompts, repeated `prompt_repeats` times so that their words become single tokens,
    which brings the templated prompts close to the peer's lengths with the peer's own prompt strings.

    The models are built as the upstream stages would leave them (align.modeling.models.scratch_config, the chat token
    ids set), with GPT2Config's default initializer range (0.02, the peer's) and no dropout, and saved with the
    tokenizer next to them. One reward model directory serves as both value_init and reward_model: same shape as the
    peer's separate reward and value models, so the same cost.
    """
    import torch
    from transformers import AutoTokenizer, GPT2ForSequenceClassification, GPT2LMHeadModel

    from align.core.config import ScratchArchitecture
    from align.core.tokens import train_tiny_tokenizer
    from align.modeling.models import scratch_config, set_chat_token_ids

    prompts = peer_prompts(NUM_PROMPTS, SEED)
    tokenizer_dir, policy_dir, rm_dir = work / "tokenizer", work / "sft", work / "rm"
    train_tiny_tokenizer(stdlib_corpus() + [chatml_prompt(p) for p in prompts] * prompt_repeats, VOCAB_SIZE,
                         tokenizer_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    lengths = [len(tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                 return_dict=True)["input_ids"]) for p in prompts]
    arch = ScratchArchitecture(**ARCHITECTURE, initializer_range=0.02, dropout=0.0)
    torch.manual_seed(SEED)
    for directory, model in (
        (policy_dir, GPT2LMHeadModel(scratch_config(arch, tokenizer))),
        (rm_dir, GPT2ForSequenceClassification(scratch_config(arch, tokenizer, num_labels=1))),
    ):
        set_chat_token_ids(model, tokenizer)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    prompts_file = work / "prompts.train.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": p}]}) + "\n" for p in prompts))
    return {
        "policy": str(policy_dir),
        "rm": str(rm_dir),
        "prompts": str(prompts_file),
        "vocab": len(tokenizer),
        "prompt_lengths": lengths,
        "policy_params": sum(p.numel() for p in GPT2LMHeadModel.from_pretrained(policy_dir).parameters()),
    }


def stage_overrides(problem: dict, work: Path) -> list[str]:
    """The command line of `python -m align.ppo` for the problem: the tiny experiment, pointed at the problem's files.

    The tiny world's data sources are dropped (data.sources={}) so ensure_prepared builds nothing, and there is no
    judge or eval prompt set, so the stage's final evaluation is a no-op; the PPO-ptx text is not read (ptx_coef 0).
    """
    return [
        "+experiment=tiny",
        f"paths.root={work / 'runs'}",
        f"paths.data={work / 'data'}",
        f"model.name_or_path={problem['policy']}",
        f"model.tokenizer={problem['policy']}",
        "model.scratch=null",
        "data.sources={}",
        f"data.prompts_train={problem['prompts']}",
        "data.prompts_eval=null",
        "data.ptx_train=null",
        "data.judge=null",
        f"ppo.policy_init={problem['policy']}",
        f"ppo.value_init={problem['rm']}",
        f"ppo.reward_model={problem['rm']}",
        *STAGE_OVERRIDES,
    ]


def compose_stage_config(overrides: list[str]):
    """The config the stage would run with (align.core.config.compose), for align.runtime.runs.run_stage or
    align.core.config.load. Options in OPTIONAL_OVERRIDES are added when the composed ppo node has them.
    """
    from align.core.config import compose

    def composed(extra: list[str]):
        return compose([*overrides, *extra], stage="ppo")

    extra = [override for key, override in OPTIONAL_OVERRIDES.items() if key in composed([]).ppo]
    return composed(extra), extra


# ---------------------------------------------------------------- the child process: the stage, measured


def run_child(spec_path: Path) -> None:
    """Run align.ppo.train on the composed config, through align.runtime.runs.run_stage as `python -m align.ppo` does,
    and write what the parent needs next to the spec.

    Each metrics.jsonl write of an update is timestamped (MetricsLog.write wrapped on the class; nothing in align/
    changes), giving the wall time of every loop iteration. ru_maxrss is this process's peak: Python, torch,
    transformers, TRL and accelerate imports included, as they are in any run of the stage.
    """
    spec = json.loads(spec_path.read_text())
    import torch

    import align.runtime.runs
    from align.core.config import load
    from align.ppo import train
    from align.runtime.runs import run_stage

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    stage_cfg, extra = compose_stage_config(spec["overrides"])
    cfg = load(stage_cfg)
    stamps: list[tuple[int, float]] = []
    write = align.runtime.runs.MetricsLog.write

    def timed_write(self, step, metrics):
        if "time/rollout_s" in metrics:  # an update's line, not the final summary
            stamps.append((step, time.perf_counter()))
        write(self, step, metrics)

    align.runtime.runs.MetricsLog.write = timed_write
    started = time.perf_counter()
    if spec["profile"]:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        results = profiler.runcall(run_stage, train, stage_cfg)
        stats = pstats.Stats(profiler, stream=sys.stderr)
        for key in ("tottime", "cumulative"):
            stats.sort_stats(key).print_stats(30)
        stats.dump_stats(str(spec_path.with_name("ppo.prof")))
    else:
        results = run_stage(train, stage_cfg)
    finished = time.perf_counter()
    result = {
        "run_dir": cfg.paths.ppo,
        "extra_overrides": extra,
        "stamps": stamps,
        "train_started": started,
        "train_finished": finished,
        "results": results,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch_size": cfg.ppo.batch_size,
    }
    spec_path.with_name("result.json").write_text(json.dumps(result, default=str))


# ---------------------------------------------------------------- the parent: setup, run, table


def measure(work: Path, overrides: list[str], profile: bool, threads: int) -> dict:
    """Run the stage with these overrides in a child process (its stdout goes to our stderr: only the table goes to
    stdout)."""
    spec = work / "spec.json"
    spec.write_text(json.dumps({"overrides": overrides, "profile": profile,
                                "threads": threads}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmarks.ppo_throughput", "--child", str(spec)], cwd=REPO, env=env,
                   stdout=sys.stderr, check=True)
    result = json.loads((work / "result.json").read_text())
    result["child_wall_s"] = time.perf_counter() - started
    result["rows"] = [json.loads(line) for line in (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()
                      if line.strip() and "time/rollout_s" in line]
    return result


def summarise(result: dict, warmup: int) -> dict:
    """Per-update seconds of the timed updates: wall (between consecutive metrics writes) and the logged phases."""
    rows = [row for row in result["rows"] if row["step"] > warmup]
    stamps = dict((step, t) for step, t in result["stamps"])
    wall = [stamps[row["step"]] - stamps[row["step"] - 1] for row in rows if row["step"] - 1 in stamps]
    phases = {name: [row[f"time/{name}_s"] for row in rows] for name in ("rollout", "score", "update")}
    logged = [sum(values) for values in zip(*phases.values())]
    return {"rows": rows, "wall": wall, "phases": phases, "logged": logged}


def table(result: dict, summary: dict, warmup: int) -> list[str]:
    """The Markdown table: per-update time, throughput, phase split, memory, and the peer's quoted numbers."""
    batch = result["batch_size"]
    wall, logged, phases = summary["wall"], summary["logged"], summary["phases"]
    eps = batch * len(wall) / sum(wall)
    lines = [
        "| measure | this run: align.ppo | peer TRL 1.12 PPOTrainer (quoted, not measured here) |",
        "|---|---|---|",
        f"| updates timed (after {warmup} warm-up) | {len(wall)} of {len(result['rows'])} | 63 of 64 |",
        f"| s/update, wall, median | {statistics.median(wall):.4f} | |",
        f"| s/update, wall, mean | {statistics.mean(wall):.4f} | {PEER['s_per_update']} "
        f"({PEER_NO_GC['s_per_update']} without gc.collect) |",
        f"| s/update, sum of logged phases, median / mean | {statistics.median(logged):.4f} / "
        f"{statistics.mean(logged):.4f} | |",
        f"| episodes/s (episodes / wall of the timed updates) | {eps:.1f} | {PEER['episodes_per_s']} "
        f"({PEER_NO_GC['episodes_per_s']} without gc.collect) |",
    ]
    total = sum(wall)
    for name, label in (("rollout", "rollout: generate"), ("score", "scoring: logprobs + ref + values + RM"),
                        ("update", f"update: {result['ppo_epochs']} PPO epochs")):
        seconds = phases[name]
        lines.append(f"| {label}, s/update median / mean (share of wall) | {statistics.median(seconds):.4f} / "
                     f"{statistics.mean(seconds):.4f} ({sum(seconds) / total:.0%}) | |")
    rest = total - sum(logged)
    lines += [
        f"| rest of the loop (metrics, logging), s/update mean (share) | {rest / len(wall):.4f} ({rest / total:.0%}) "
        "| |",
        f"| peak RSS MiB (ru_maxrss of the stage's process, imports included) | {result['peak_rss_mib']:.0f} "
        f"| {PEER['rss_mib']} |",
        f"| torch threads | {result['torch_threads']} | |",
    ]
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=3, help="first updates left out of the timing")
    parser.add_argument("--prompt-repeats", type=int, default=32,
                        help="times the rendered prompts are added to the tokenizer's training text")
    parser.add_argument("--profile", action="store_true", help="cProfile the stage; top functions go to stderr")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads in the stage's process before it starts (0: torch's default, as "
                        "`python -m align.ppo` runs)")
    parser.add_argument("--keep", default=None, help="build in this directory and keep it (default: a temp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        run_child(Path(args.child))
        return
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ppo-throughput-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        setup_started = time.perf_counter()
        problem = build_problem(work, args.prompt_repeats)
        setup_s = time.perf_counter() - setup_started
        result = measure(work, stage_overrides(problem, work), args.profile, args.threads)
    summary = summarise(result, args.warmup)
    # The config the stage ran with, re-composed here for the notes (cheap, and the same files are not needed).
    from align.core.config import load

    cfg = load(compose_stage_config(stage_overrides(problem, work))[0])
    result["ppo_epochs"] = cfg.ppo.ppo_epochs
    eps = result["batch_size"] * len(summary["wall"]) / sum(summary["wall"])
    lengths = problem["prompt_lengths"]
    stamps = [t for _, t in result["stamps"]]
    load_after = os.getloadavg()
    s = cfg.ppo
    lines = table(result, summary, args.warmup)
    lines += [
        "",
        f"Peer column: {PEER_SOURCE}. NOT measured by this run: TRL 1.12's PPOTrainer on the same configuration, "
        f"{PEER['s_per_update']} s/update, {PEER['episodes_per_s']} episodes/s, {PEER['rss_mib']} MiB peak RSS; "
        f"without its two gc.collect() per update {PEER_NO_GC['s_per_update']} s/update, "
        f"{PEER_NO_GC['episodes_per_s']} episodes/s.",
        f"Problem: GPT-2 {ARCHITECTURE['n_layer']} layers x {ARCHITECTURE['n_embd']} wide ({ARCHITECTURE['n_head']} "
        f"heads, {ARCHITECTURE['n_positions']} positions), {problem['policy_params']:,} parameters, random weights; "
        f"byte-level BPE of {problem['vocab']} tokens trained on stdlib sources + the rendered prompts "
        f"x{args.prompt_repeats}; reward and value models the same GPT-2 with a one-label head (random, one "
        f"directory for both). {len(lengths)} prompts (the peer's strings), chat-templated length "
        f"{min(lengths)}-{max(lengths)} tokens, mean {statistics.mean(lengths):.1f}, "
        f"{sum(PROMPT_TOKENS[0] <= n <= PROMPT_TOKENS[1] for n in lengths)} of {len(lengths)} within the peer's "
        f"{PROMPT_TOKENS[0]}-{PROMPT_TOKENS[1]} (the peer's are 9-18 without chat framing, mean 13.6).",
        f"Stage config: batch {s.batch_size}, {s.num_minibatches} minibatch, {s.ppo_epochs} PPO epochs, "
        f"{s.total_episodes} episodes, {s.response_tokens}-token responses, temperature {s.temperature}, "
        f"{s.kl_estimator} KL x {s.kl_coef}, missing EOS {s.missing_eos_mode} {s.missing_eos_penalty}, lr {s.lr} "
        f"{s.lr_schedule}, mixed_precision={cfg.distributed.mixed_precision}, seed {cfg.seed}; composed as "
        f"`python -m align.ppo {' '.join(o for o in STAGE_OVERRIDES)} {' '.join(result['extra_overrides'])}` on "
        "+experiment=tiny pointed at the files above. Final: "
        f"mean response {summary['rows'][-1]['rollout/response_tokens']:.1f} tokens, "
        f"EOS rate {summary['rows'][-1]['rollout/eos_rate']:.2f}.",
        "Timing: wall s/update = time between consecutive metrics.jsonl writes of the timed updates (everything in "
        "the loop); phases = the stage's own time/rollout_s, time/score_s, time/update_s. episodes/s = episodes of "
        "the timed updates / their wall time.",
        f"Times: setup (tokenizer, models, prompts) {setup_s:.1f} s; stage process {result['child_wall_s']:.1f} s, "
        f"of which train() up to the end of update 1 {stamps[0] - result['train_started']:.1f} s "
        f"(TRL import, models, update 1), updates 2-{len(stamps)} {stamps[-1] - stamps[0]:.1f} s, after the "
        f"loop (final evaluation: none; save) {result['train_finished'] - stamps[-1]:.1f} s. Whole command "
        f"{time.perf_counter() - started:.0f} s.",
        f"Machine: {os.cpu_count()} CPUs, torch {result['torch']} with {result['torch_threads']} threads. Load average "
        f"(1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after: the machine may be shared, so numbers can be "
        "contended." + (" PROFILED RUN: cProfile overhead inflates every time above." if args.profile else ""),
        "",
        f"- target: >= {TARGET_EPISODES_PER_S:.0f} episodes/s: {eps:.1f} -> "
        f"{'met' if eps >= TARGET_EPISODES_PER_S else 'MISSED'}",
        f"- target: peak RSS <= {TARGET_RSS_MIB:.0f} MiB: {result['peak_rss_mib']:.0f} -> "
        f"{'met' if result['peak_rss_mib'] <= TARGET_RSS_MIB else 'MISSED'}",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
