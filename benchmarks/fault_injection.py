"""Fault injection: SIGKILL each stage at a random moment, resume it, and compare with a run never interrupted.

    python -m benchmarks.fault_injection                          # 20 trials per stage, sft rm ppo
    python -m benchmarks.fault_injection --trials 4 --stages ppo

Each stage runs a shortened tiny configuration (seconds per run, a checkpoint every few steps). One uninterrupted
reference run per stage, then per trial: start the same command in its own run directory, SIGKILL it either at a
uniformly random moment of training (even trials) or a random 0-20 ms after a random checkpoint directory appears,
while it is being written (odd trials); check every checkpoint left on disk (one with the completeness marker that
does not load is corrupt; one without it was cut short and must be ignored); run the same command again and compare
its final weights (bitwise) and its metrics with the reference. Metrics compared: every metrics.jsonl row and
metrics.json, except wall-clock times and what describes one invocation, not the run: `resumed_from`, the Trainer's
end-of-call summary row and `train_loss` (over the steps that call trained), and TRL's `num_tokens` (a counter TRL
does not checkpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR = re.compile(r"^\.?checkpoint-\d+(\.tmp)?$")  # PPO writes .checkpoint-N.tmp, the Trainer checkpoint-N
PER_INVOCATION = ("runtime", "_time", "per_second", "time/", "resumed_from", "train_loss", "num_tokens")


@dataclass
class Stage:
    module: str
    run_dir_key: str  # the paths.* override that gives a trial its own run directory
    overrides: list[str]  # shortened tiny configuration
    checkpoints: int  # checkpoints an uninterrupted run writes


STAGES = {
    "sft": Stage("align.sft", "paths.sft", ["sft.max_steps=30", "sft.save_steps=5", "sft.logging_steps=5",
                                            "sft.eval_steps=15"], checkpoints=6),
    # One RM (the tiny experiment trains two, each in a directory of its own): the kills land in the run directory.
    "rm": Stage("align.rm", "paths.rm", ["rm.max_steps=24", "rm.save_steps=4", "rm.logging_steps=4",
                                         "rm.eval_steps=12", "rm.normalize_samples=200", "rm.restarts=1"],
                checkpoints=6),
    "ppo": Stage("align.ppo", "paths.ppo", ["ppo.total_episodes=256", "ppo.save_every=2"], checkpoints=4),
}


def command(stage: Stage, root: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", stage.module, "+experiment=tiny", f"paths.root={root / 'reference'}",
            f"paths.data={root / 'data'}", "eval.num_prompts=10", *stage.overrides, f"{stage.run_dir_key}={run_dir}"]


def environment() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(stage: Stage, root: Path, run_dir: Path, log: Path) -> subprocess.CompletedProcess:
    with open(log, "a") as out:
        return subprocess.run(command(stage, root, run_dir), cwd=REPO, env=environment(), stdout=out,
                              stderr=subprocess.STDOUT)


def reference(stage: Stage, root: Path) -> tuple[Path, float]:
    """The uninterrupted run (made once) and how long its training took, from its first metrics row to its end."""
    run_dir = root / "reference-runs" / stage.module.split(".")[1]
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as out:
        process = subprocess.Popen(command(stage, root, run_dir), cwd=REPO, env=environment(), stdout=out,
                                   stderr=subprocess.STDOUT)
        while not (run_dir / "metrics.jsonl").exists() and process.poll() is None:
            time.sleep(0.01)
        started = time.monotonic()
        if process.wait() != 0:
            raise SystemExit(f"the reference {stage.module} run failed: see {run_dir.parent / run_dir.name}.log")
    return run_dir, time.monotonic() - started


def upstream(root: Path) -> None:
    """SFT and RM final models in root/reference for the stages that start from them (shortened runs)."""
    for stage in (STAGES["sft"], STAGES["rm"]):
        name = stage.module.split(".")[1]
        if not (root / "reference" / "tiny" / name / "final").is_dir():
            result = run(stage, root, root / "reference" / "tiny" / name, root / f"upstream-{name}.log")
            if result.returncode != 0:
                raise SystemExit(f"building the upstream {name} model failed: see {root / f'upstream-{name}.log'}")


def loads(checkpoint: Path) -> bool:
    """Whether every file resume reads from this checkpoint loads."""
    import torch
    from safetensors.torch import load_file
    from transformers.trainer_pt_utils import safe_globals

    try:
        load_file(checkpoint / "model.safetensors")
        for path in [*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth")]:
            with safe_globals():  # the Trainer's rng_state.pth holds numpy state
                torch.load(path, weights_only=True)
        for path in checkpoint.glob("*.json"):
            json.loads(path.read_text())
        return True
    except Exception:  # any failure to read is what this counts
        return False


def survey(run_dir: Path) -> tuple[int, int]:
    """(checkpoints cut short: no marker, corrupt checkpoints: marker but a file does not load)."""
    from align.runtime.checkpoints import is_complete

    found = [p for p in run_dir.iterdir() if CHECKPOINT_DIR.match(p.name) and p.is_dir()] if run_dir.is_dir() else []
    cut_short = sum(not is_complete(p) for p in found)
    corrupt = sum(is_complete(p) and not loads(p) for p in found)
    return cut_short, corrupt


def comparable(run_dir: Path) -> tuple[dict, list[dict], dict]:
    """Final weights, metrics.jsonl rows and metrics.json without the per-invocation numbers."""
    from safetensors.torch import load_file

    def keep(row: dict) -> dict:
        return {k: v for k, v in row.items() if not any(word in k for word in PER_INVOCATION)}

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [keep(r) for r in rows if not any("train_runtime" in k for k in r)]  # not the Trainer's per-call summary
    final = keep(json.loads((run_dir / "metrics.json").read_text()))
    return load_file(run_dir / "final" / "model.safetensors"), [r for r in rows if len(r) > 1], final


def same(a: tuple, b: tuple) -> tuple[bool, bool]:
    """(weights bitwise equal, metrics equal)."""
    import torch

    weights = a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    return weights, a[1:] == b[1:]


def kill_during_checkpoint(process: subprocess.Popen, run_dir: Path, nth: int, delay: float) -> None:
    """SIGKILL `delay` seconds after the nth checkpoint directory appears (it is being written then)."""
    seen: set[str] = set()
    while process.poll() is None:
        names = {e.name for e in os.scandir(run_dir) if CHECKPOINT_DIR.match(e.name)} if run_dir.is_dir() else set()
        seen |= {re.sub(r"^\.|\.tmp$", "", n) for n in names}
        if len(seen) >= nth:
            time.sleep(delay)
            break
        time.sleep(0.0005)
    process.send_signal(signal.SIGKILL)


def trial(stage: Stage, root: Path, index: int, rng: random.Random, training_s: float, expected: tuple) -> dict:
    run_dir = root / "trials" / f"{stage.module.split('.')[1]}-{index}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    during = "checkpoint" if index % 2 else "training"
    with open(log, "w") as out:
        process = subprocess.Popen(command(stage, root, run_dir), cwd=REPO, env=environment(), stdout=out,
                                   stderr=subprocess.STDOUT)
        if during == "training":
            while not (run_dir / "metrics.jsonl").exists() and process.poll() is None:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, training_s))
            process.send_signal(signal.SIGKILL)
        else:
            kill_during_checkpoint(process, run_dir, rng.randint(1, stage.checkpoints), rng.uniform(0, 0.02))
        killed = process.wait() == -signal.SIGKILL
    cut_short, corrupt = survey(run_dir)
    resumed = run(stage, root, run_dir, log)
    weights, metrics = same(comparable(run_dir), expected) if resumed.returncode == 0 else (False, False)
    return {"during": during, "killed": killed, "cut_short": cut_short, "corrupt": corrupt,
            "resumed_ok": resumed.returncode == 0, "weights": weights, "metrics": metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per stage")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--root", type=Path, default=Path("outputs/fault_injection"), help="work directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run_trials(args.root.resolve(), args.stages, args.trials, args.seed, after_each_round=print_table)


def run_trials(root: Path, stages: list[str], trials: int, seed: int, after_each_round=None) -> dict[str, list[dict]]:
    """References, then `trials` trials of every stage, round-robin (a benchmark cut short has as many of each)."""
    rng = random.Random(seed)
    if any(s != "sft" for s in stages):
        upstream(root)
    references = {name: reference(STAGES[name], root) for name in stages}
    expected = {name: comparable(run_dir) for name, (run_dir, _) in references.items()}
    results: dict[str, list[dict]] = {name: [] for name in stages}
    for index in range(trials):
        for name in stages:
            results[name].append(trial(STAGES[name], root, index, rng, references[name][1], expected[name]))
            print(f"{name} trial {index}: {results[name][-1]}", flush=True)
        if after_each_round:
            after_each_round(results)
    return results


def print_table(table: dict[str, list[dict]]) -> None:
    print(f"\n{'stage':<6} {'trials':>6} {'killed':>6} {'in ckpt':>7} {'cut short':>9} {'corrupt':>7} "
          f"{'resumed':>7} {'same weights':>12} {'same metrics':>12} {'identical':>9}")
    for name, results in table.items():
        def count(key, results=results):
            return sum(bool(r[key]) for r in results)

        identical = sum(r["weights"] and r["metrics"] for r in results)
        in_checkpoint = sum(r["killed"] and r["during"] == "checkpoint" for r in results)
        print(f"{name:<6} {len(results):>6} {count('killed'):>6} {in_checkpoint:>7} "
              f"{sum(r['cut_short'] for r in results):>9} {sum(r['corrupt'] for r in results):>7} "
              f"{count('resumed_ok'):>7} {count('weights'):>12} {count('metrics'):>12} {identical:>9}")
    print("\nkilled: the SIGKILL landed before the run ended; in ckpt: of those, aimed at a checkpoint being written; "
          "cut short: checkpoint directories without the completeness marker left by the kill (resume must skip "
          "them); corrupt: directories with the marker that do not load (must be 0).", flush=True)


if __name__ == "__main__":
    main()
