"""Run directories: the resolved config, provenance, metrics JSONL, and one error path for user mistakes."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from align.core.config import Config, load, to_yaml
from align.core.console import is_main_process, print0
from align.core.errors import UserError
from align.runtime.allocator import keep_freed_memory
from align.runtime.checkpoints import write_atomic
from align.runtime.distributed import join_processes, leave_processes
from align.runtime.preemption import PREEMPTED, Preempted, stop_request

PACKAGES = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "deepspeed", "hydra-core")


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


def start_run(run_dir: Path, config: Config) -> None:
    """Write what produced this run next to its outputs: resolved config, git commit, package versions, seed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not is_main_process():
        return
    write_atomic(run_dir / "config.resolved.yaml", to_yaml(config))
    (run_dir / "provenance.json").write_text(json.dumps(provenance(config), indent=2) + "\n")


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
        write_atomic(self.path, "".join(json.dumps(row) + "\n" for row in self.rows()[:rows]))


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
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
