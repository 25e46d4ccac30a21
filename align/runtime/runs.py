"""Run directories: the resolved config, provenance, metrics JSONL, and one error path for user mistakes."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from align.core.config import Config, load, to_yaml
from align.core.console import is_main_process, print0
from align.core.errors import UserError
from align.runtime import checkpoints
from align.runtime.allocator import keep_freed_memory
from align.runtime.distributed import join_processes, leave_processes
from align.runtime.preemption import PREEMPTED, Preempted, stop_request

PACKAGES = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "deepspeed", "hydra-core")

# What decides a stage's result: the config sections it reads, cumulatively. align.pipeline does not reuse a finished
# stage made with other ones, and start_run does not resume a checkpoint made with other ones.
STAGE_SECTIONS = {
    "pretrain": ("seed", "model", "data", "pretrain"),
    "sft": ("seed", "model", "data", "pretrain", "sft"),
    "rm": ("seed", "model", "data", "pretrain", "sft", "rm"),
    "rm_audit": ("seed", "model", "data", "pretrain", "sft", "rm"),  # align.rm on data.prefs_audit
    "ppo": ("seed", "variant", "model", "data", "pretrain", "sft", "rm", "ppo"),
    "eval": ("seed", "variant", "model", "data", "pretrain", "sft", "rm", "ppo", "eval"),
}

# Data files that only the RM and later stages read: changing one leaves a finished pretraining or SFT run as it is.
LATER_STAGES_DATA = ("prefs_train", "prefs_eval", "prefs_audit", "prompts_train", "ptx_train")

# Keys of the rm section that only the audit RM reads, and that audit_config writes into that section's own keys
# (kind, epochs, lr, ...) before the audit RM trains: compared there, they would only make other stages look stale.
AUDIT_ONLY = ("audit_kind", "audit_settings")

# Keys of those sections that a resume may change: how often and how much a run logs, evaluates and saves, and how it
# fits the machine it resumes on, none of which changes a weight; and, in the resumed stage's own section only, the step
# cap a resume raises to train on (an earlier stage's cap changed the model this one starts from or scores with).
NOT_TRAINED = ("logging_steps", "eval_steps", "save_steps", "save_every", "save_total_limit", "log_every",
               "gold_eval_every", "gold_eval_prompts", "eval_batch_size", "dataloader_workers",
               "gradient_checkpointing", "resume", "policy_check_samples", "policy_check_prompts")
STEP_CAPS = ("max_steps", "total_episodes")


def run_stage(train: Callable[[Config], dict], cfg: DictConfig, preemptible: bool = True) -> dict:
    """Validate the config, join the launcher's processes, then train, with freed CPU memory kept for reuse
    (align.runtime.allocator); a UserError becomes one message on stderr and exit status 2, a pre-emption
    (SIGTERM/SIGUSR1, checkpoint written) exit status PREEMPTED, Ctrl-C one line and 130 (the shell's own). A
    preemptible stage records SIGTERM/SIGUSR1 from here on, and must act on them (align.runtime.preemption)."""
    keep_freed_memory()
    if preemptible:
        stop_request()
    try:
        config = load(cfg)
        join_processes(config.distributed)
        results = train(config)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Preempted as stopped:
        print(f"pre-empted: {stopped}; re-run the same command to resume", file=sys.stderr)
        sys.exit(PREEMPTED)
    except KeyboardInterrupt:  # Ctrl-C: no checkpoint of this moment, but nothing half-written is ever resumed from
        print("interrupted" + (": re-run the same command to resume from the last complete checkpoint (SIGTERM or "
                               "SIGUSR1 writes one before stopping)" if preemptible else ""), file=sys.stderr)
        sys.exit(130)
    leave_processes()
    return results


def require_stage_output(path: str, root: str, how_to_make_it: str) -> None:
    """Fail in the stage's first second when the model it starts from should be an earlier stage's output (a path
    under the outputs `root`) and is not there yet; a hub name or a path elsewhere is left to the loader."""
    if path.startswith(root) and not Path(path).is_dir():
        raise UserError(f"no model at {path}: {how_to_make_it}")


def start_run(run_dir: Path, config: Config, stage: str | None = None) -> None:
    """Write what produced this run next to its outputs: resolved config, git commit, package versions, seed. A stage
    that resumes from checkpoints names itself (its config section), and is first refused a checkpoint made with other
    settings (require_resumable)."""
    if stage is not None:
        require_resumable(run_dir, config, stage)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not is_main_process():
        return
    checkpoints.write_atomic(run_dir / "config.resolved.yaml", to_yaml(config))  # other processes may read it
    (run_dir / "provenance.json").write_text(json.dumps(provenance(config), indent=2) + "\n")


def require_resumable(run_dir: Path, config: Config, stage: str) -> None:
    """Stop before anything is written when `stage` would resume a checkpoint in run_dir made with settings that
    decide what it trains other than these: it would train on from it and record these in config.resolved.yaml, where
    align.pipeline reads what its output was made with. The RM's restarts keep their checkpoints in restart-k/."""
    saved = run_dir / "config.resolved.yaml"
    restarts = sorted(run_dir.glob("restart-*"), key=lambda d: int(d.name.split("-")[1]))
    found = [c for d in (run_dir, *restarts) if (c := checkpoints.newest_complete(d))]
    if not getattr(config, stage).resume or not found or not saved.is_file():
        return

    def trained(resolved: dict) -> dict:
        chosen = settings(resolved, STAGE_SECTIONS[stage])
        return {section: {k: v for k, v in value.items()
                          if k not in NOT_TRAINED and not (section == stage and k in STEP_CAPS)}
                if isinstance(value, dict) else value for section, value in chosen.items()}

    changed = differences(trained(OmegaConf.to_container(OmegaConf.load(saved))),
                          trained(OmegaConf.to_container(OmegaConf.structured(config))))
    if changed:
        raise UserError(f"{found[-1]} was written with other settings ({'; '.join(changed)}): resuming from it would "
                        f"mix two runs in one model and record only these. To resume it, run with the settings in "
                        f"{saved}; to train with these, use another run_name, or start {run_dir} over with "
                        f"{stage}.resume=false (it removes the checkpoints) or by deleting it")


def settings(config: dict, sections: tuple[str, ...]) -> dict:
    """The sections of a resolved config that decide a stage's result, with paths under the run's output and data
    roots written relative to them (moving outputs or data elsewhere does not change a result), without the audit
    RM's own keys, and before the RM without the data files only later stages read."""
    roots = {config["paths"][name].rstrip("/") + "/": f"${{paths.{name}}}/" for name in ("root", "data")}

    def relative(value):
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items()}
        if isinstance(value, list):
            return [relative(v) for v in value]
        if isinstance(value, str):
            for root, placeholder in roots.items():
                if value.startswith(root):
                    return placeholder + value[len(root):]
        return value

    chosen = {key: relative(config[key]) for key in sections}
    if "rm" in chosen:
        chosen["rm"] = {k: v for k, v in chosen["rm"].items() if k not in AUDIT_ONLY}
    elif "data" in chosen:
        chosen["data"] = {k: v for k, v in chosen["data"].items() if k not in LATER_STAGES_DATA}
    return chosen


def differences(old, new, key: str = "") -> list[str]:
    """Every dotted key whose value differs between two nested dicts, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [found for k in sorted(set(old) | set(new))
                for found in differences(old.get(k), new.get(k), f"{key}.{k}" if key else k)]
    return [] if old == new else [f"{key}: {old!r} then, {new!r} now"]


def first_difference(old, new) -> str | None:
    """The first of `differences`, or None if the dicts are equal."""
    return next(iter(differences(old, new)), None)


def provenance(config: Config) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "command": sys.argv,
        "git_commit": commit,
        "seed": config.seed,
        "python": platform.python_version(),
        "packages": {name: installed(name) for name in PACKAGES},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class MetricsLog:
    """Append-only metrics.jsonl, one JSON object a line, written by the main process only."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, step: int, metrics: dict) -> None:
        if not is_main_process():
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def rows(self) -> list[dict]:
        return read_jsonl(self.path)

    def __len__(self) -> int:
        return len(self.rows())

    def keep_first(self, rows: int) -> None:
        """Forget every line after the first `rows` (rewritten atomically): a run resumed from a checkpoint logs
        again what followed it; a checkpoint records how many lines there were when it was written."""
        if not is_main_process() or not self.path.is_file():
            return
        checkpoints.write_atomic(self.path, "".join(json.dumps(row) + "\n" for row in self.rows()[:rows]))


def read_jsonl(path: Path) -> list[dict]:
    """The objects of a JSON-lines file, [] if there is no file. Its last line may be cut short, by a run killed while
    appending it (MetricsLog): that line is left out, with a warning. Any other line that is not JSON is an error."""
    if not path.is_file():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
    rows = [json_line(path, n, line) for n, line in lines[:-1]]
    if lines:
        n, last = lines[-1]
        try:
            rows.append(json.loads(last))
        except json.JSONDecodeError:
            print0(f"warning: left out line {n} of {path}, the last, which is cut short (the run writing it was "
                   "killed)", file=sys.stderr)
    return rows


def json_line(path: Path, n: int, line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"line {n} of {path} is not JSON ({error.msg}): the file is damaged (a kill can cut short "
                        "only the last line); delete that line, or train the stage again") from None


def update_rows(metrics_rows: list[dict]) -> list[dict]:
    """The per-update rows of a PPO-slot run's metrics.jsonl, PPO's or a TRL trainer's in its place (the last line
    holds the final numbers, not an update)."""
    return [row for row in metrics_rows if "time/update_s" in row]


def finish_run(run_dir: Path, metrics_log: MetricsLog, step: int, stage: str, metrics: dict) -> None:
    """The final numbers: to metrics.json, as one last metrics.jsonl line, and to stdout (main process only)."""
    if not is_main_process():
        return
    numbers = {f"{stage}/final/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
    metrics_log.write(step, numbers)
    checkpoints.write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
