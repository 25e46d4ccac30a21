"""The answer of a sweep: one table of every variant and seed, their mean and spread, and two plots.

    python -m align.report outputs/tiny/sweeps/pipeline     # the jobs of one sweep (a Hydra multirun directory)
    python -m align.report outputs/tiny-seed*                # every evaluated variant under these run directories

A variant's row comes from its evaluation (`eval-<variant>/eval.json`: the PPO model against the SFT model on
held-out prompts) and its PPO run (`ppo-<variant>/metrics.jsonl`: the training time and the scores along training;
for the RLOO, GRPO and DPO variants, the run of that algorithm in PPO's place).

Writes  <dir>/report/: report.md (per variant and seed; per variant mean ± std over seeds), frontier.png (gold and RM
        score against KL to SFT, one point per run), overoptimization.png (the gold judge's and the reward model's
        score along PPO against KL, Gao et al. 2022; the gold curve needs ppo.gold_eval_every > 0)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean, stdev

from omegaconf import OmegaConf

from align.core.errors import UserError
from align.evaluation.tables import COLUMNS as EVAL_COLUMNS
from align.evaluation.tables import markdown_table
from align.runtime.runs import read_jsonl, update_rows

POLICY = "ppo"  # the label of the trained policy in eval.json
# (key in a run's row, column title, format): the evaluation's columns against the SFT model, and PPO's time
ORDER = ("gold_score", "greedy_gold_score", "rm_score", "kl", "response_tokens", "eos_rate", "gold_win_rate",
         "rm_win_rate", "audit_rm_win_rate")
COLUMNS = (*sorted(((key, title.format(reference="SFT"), fmt) for key, title, fmt in EVAL_COLUMNS),
                   key=lambda column: ORDER.index(column[0])),
           ("ppo_seconds", "PPO time (s)", "{:.1f}"))
TIME_KEYS = ("time/rollout_s", "time/score_s", "time/update_s", "time/gold_eval_s")


def run_row(results: dict, run_name: str, variant: str, ppo_updates: list[dict]) -> dict:
    """One run's row: the trained policy's numbers from eval.json and the seconds its PPO updates took."""
    policy, reference = results["models"][POLICY], results["models"][results["reference"]]
    row = {"run": run_name, "variant": variant, "seed": results["seed"],
           **{key: policy[key] for key, _, _ in COLUMNS if key in policy},
           **{f"reference_{key}": reference[key] for key in ("gold_score", "rm_score") if key in reference}}
    if ppo_updates:
        row["ppo_seconds"] = sum(u.get(k, 0.0) for u in ppo_updates for k in TIME_KEYS)
    return row


def aggregate(rows: list[dict]) -> dict[str, dict[str, tuple[float, float | None, int]]]:
    """variant -> key -> (mean, sample std (None for one seed), number of seeds), in the order variants first appear."""
    by_variant: dict[str, list[dict]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    summary = {}
    for variant, runs in by_variant.items():
        summary[variant] = {}
        for key, _, _ in COLUMNS:
            values = [r[key] for r in runs if key in r]
            if values:
                summary[variant][key] = (mean(values), stdev(values) if len(values) > 1 else None, len(values))
    return summary


def training_curve(ppo_updates: list[dict]) -> dict[str, list[float]]:
    """Along training: episodes, KL and the reward model's score, and (where logged) the gold judge's score; {} for a
    run that samples nothing while it trains (DPO).

    With a gold score every few updates, each point is one judged update: its gold score, and the mean rollout KL and
    RM score of the updates since the previous judged one (a single update's 32 samples are too noisy to plot).
    Without one, every update is a point.
    """
    rollouts = [u for u in ppo_updates if "objective/kl" in u]
    if not rollouts:
        return {}
    if not any("eval/gold_score" in u for u in rollouts):
        return {"episodes": [u["episodes"] for u in rollouts], "kl": [u["objective/kl"] for u in rollouts],
                "rm_score": [u["objective/score"] for u in rollouts]}
    curve: dict[str, list[float]] = {"episodes": [], "kl": [], "rm_score": [], "gold_score": []}
    window: list[dict] = []
    for update in rollouts:
        window.append(update)
        if "eval/gold_score" in update:
            curve["episodes"].append(update["episodes"])
            curve["kl"].append(mean(u["objective/kl"] for u in window))
            curve["rm_score"].append(mean(u["objective/score"] for u in window))
            curve["gold_score"].append(update["eval/gold_score"])
            window = []
    return curve


def variant_curves(curves: dict[str, dict]) -> dict[str, dict[str, list[float]]]:
    """variant -> its runs' curves averaged point by point over seeds (up to the shortest run)."""
    by_variant: dict[str, list[dict]] = {}
    for curve in curves.values():
        by_variant.setdefault(curve["variant"], []).append(curve)
    averaged = {}
    for variant, runs in by_variant.items():
        keys = [k for k in ("episodes", "kl", "rm_score", "gold_score") if all(k in r for r in runs)]
        length = min(len(r["episodes"]) for r in runs)
        averaged[variant] = {k: [mean(r[k][i] for r in runs) for i in range(length)] for k in keys}
        averaged[variant]["seeds"] = len(runs)
    return averaged


def eval_dirs(directory: Path) -> list[Path]:
    """The evaluation directories of a sweep (its jobs' configs name them) or under a directory (every eval.json)."""
    if (directory / "multirun.yaml").is_file():
        jobs = sorted(directory.glob("**/.hydra/config.yaml"))
        return [Path(OmegaConf.load(job).paths.eval) for job in jobs]
    return sorted(path.parent for path in directory.glob("**/eval.json") if not path.parent.name.endswith(".replaced"))


def redo(eval_dir: Path) -> str:
    """What to do about an evaluation directory the report cannot read."""
    return (f"evaluate that run again (python -m align.pipeline with its overrides and pipeline.force=eval), or move "
            f"{eval_dir} out of the directories given to leave it out of the report")


def read_results(eval_dir: Path) -> dict:
    path = eval_dir / "eval.json"
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is empty or cut short ({error.msg}): {redo(eval_dir)}") from None


def read_config(eval_dir: Path):
    """The evaluation's resolved config: it names the run, the variant and the PPO directory."""
    path = eval_dir / "config.resolved.yaml"
    if not path.is_file():
        raise UserError(f"{eval_dir} has eval.json but no config.resolved.yaml, which names its run, variant and PPO "
                        f"directory: {redo(eval_dir)}")
    return OmegaConf.load(path)


def collect(directories: list[Path]) -> tuple[list[dict], dict[str, dict]]:
    """Rows of every finished, evaluated run, and the PPO training curve of each (keyed by run/variant/seed)."""
    rows, curves = [], {}
    for eval_dir in dict.fromkeys(d for directory in directories for d in eval_dirs(directory)):
        if not (eval_dir / "eval.json").is_file():
            print(f"skipped {eval_dir}: no eval.json (not evaluated yet)", file=sys.stderr)
            continue
        results = read_results(eval_dir)
        if POLICY not in results.get("models", {}):  # e.g. the reward model's own eval.json
            continue
        config = read_config(eval_dir)
        ppo_dir = eval_dir.parent / Path(config.paths.ppo).name  # the stage directories of one run are siblings
        updates = update_rows(read_jsonl(ppo_dir / "metrics.jsonl"))
        row = run_row(results, config.run_name, config.variant, updates)
        rows.append(row)
        curve = training_curve(updates)
        if curve:
            curves[f"{row['run']}/{row['variant']}/seed{row['seed']}"] = {**curve, "variant": row["variant"]}
    rows.sort(key=lambda r: (r["variant"], r["seed"], r["run"]))
    return rows, curves


def markdown(rows: list[dict], summary: dict) -> str:
    shown = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    per_run = [[r["variant"], str(r["seed"]), r["run"], *(fmt.format(r[k]) if k in r else "-" for k, _, fmt in shown)]
               for r in rows]

    def mean_std(stats: tuple[float, float | None, int] | None, fmt: str) -> str:
        if stats is None:
            return "-"
        m, s, _ = stats
        return fmt.format(m) + ("" if s is None else " ± " + fmt.format(s).lstrip("+"))

    per_variant = [[variant, str(max(n for _, _, n in stats.values())),
                    *(mean_std(stats.get(k), fmt) for k, _, fmt in shown)] for variant, stats in summary.items()]
    titles = [title for _, title, _ in shown]
    return "\n".join([
        "# Sweep report\n",
        f"{len(rows)} runs. Every number is the PPO model's on the held-out prompts of its evaluation (eval.json); "
        "KL and win rates are against the SFT model, a tie counts half. PPO time: the PPO updates' wall time.\n",
        "## Per variant and seed\n", markdown_table(["variant", "seed", "run", *titles], per_run),
        "## Per variant: mean ± std over seeds\n", markdown_table(["variant", "seeds", *titles], per_variant),
    ])


def plot_frontier(path: Path, rows: list[dict]) -> None:
    """Gold and RM score against KL to SFT, one point per run, one colour per variant."""
    import matplotlib.pyplot as plt

    panels = [(k, t) for k, t in (("gold_score", "gold score"), ("rm_score", "RM score")) if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
            runs = [r for r in rows if r["variant"] == variant and key in r and "kl" in r]
            ax.scatter([r["kl"] for r in runs], [r[key] for r in runs], label=variant, color=f"C{i % 10}",
                       marker="osD^v<>"[i // 10 % 7])  # ten colours, then another marker
        references = [r[f"reference_{key}"] for r in rows if f"reference_{key}" in r]
        ax.scatter([0.0] * len(references), references, marker="x", color="black", label="SFT")
        ax.set_xscale("symlog", linthresh=1.0)  # as the over-optimisation plot: unpenalised runs sit far out
        ax.set_xlabel("KL to SFT (nats per response)")
        ax.set_ylabel(f"{title} of the PPO model")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("Reward against KL across variants")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_overoptimization(path: Path, curves: dict[str, dict]) -> None:
    """Along training, against the rollout's KL to SFT (Gao et al. 2022): the gold judge's score (left) and the proxy,
    the reward model's score (right), one line per variant (the mean of its seeds). A gold line that turns down while
    its RM line still climbs is over-optimisation."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, (key, title) in zip(axes, (("gold_score", "gold score (the judge)"), ("rm_score", "RM score (the proxy)"))):
        for i, (variant, curve) in enumerate(variant_curves(curves).items()):
            if key in curve:
                ax.plot(curve["kl"], curve[key], marker=".", markersize=4, color=f"C{i % 10}",
                        linestyle="-" if i < 10 else "--", label=f"{variant} ({curve['seeds']} seeds)")
        # the early updates sit below 1 nat, the unpenalised runs reach far higher KLs (docs/ablations.md)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("KL to SFT of the rollouts (nats per response)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle("Gold and proxy score along training against KL (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot write the report into {out}: {'it' if out.is_file() else 'a path above it'} is a "
                        "file; name a directory with --out") from None


def make_report(dirs: list[Path], out: Path) -> None:
    rows, curves = collect(dirs)
    if not rows:
        raise UserError(f"no evaluated PPO run (eval-*/eval.json with a '{POLICY}' model) under "
                        f"{', '.join(map(str, dirs))}")
    import matplotlib

    matplotlib.use("Agg")
    make_output_dir(out)
    (out / "report.md").write_text(markdown(rows, aggregate(rows)), encoding="utf-8")
    plot_frontier(out / "frontier.png", rows)
    if curves:
        plot_overoptimization(out / "overoptimization.png", curves)
    print(f"{len(rows)} runs: {out / 'report.md'}, {out / 'frontier.png'}"
          + (f", {out / 'overoptimization.png'}" if curves else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m align.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="a sweep directory or run directories (outputs/<run>)")
    parser.add_argument("--out", type=Path, help="where report.md and the plots go (default: <first dir>/report)")
    args = parser.parse_args(argv)
    try:
        make_report(args.dirs, args.out or args.dirs[0] / "report")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
