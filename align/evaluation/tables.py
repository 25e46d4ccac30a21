"""What `align.eval` shows a reader: a table on stdout, a Markdown report, and a plot of scores against KL."""

from __future__ import annotations

from pathlib import Path

# (key in a summary row, column title, format); a column is shown only when some row has the key.
COLUMNS = (
    ("gold_score", "gold score", "{:.3f}"),
    ("greedy_gold_score", "gold score (greedy)", "{:.3f}"),
    ("rm_score", "RM score", "{:+.3f}"),
    ("kl", "KL to {reference}", "{:.2f}"),
    ("gold_win_rate", "win rate vs {reference} (gold)", "{:.3f}"),
    ("rm_win_rate", "win rate vs {reference} (RM)", "{:.3f}"),
    ("audit_rm_win_rate", "win rate vs {reference} (audit RM)", "{:.3f}"),
    ("response_tokens", "response tokens", "{:.1f}"),
    ("eos_rate", "EOS rate", "{:.2f}"),
)


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the summary: one row per model, in the order evaluated."""
    models = results["models"]
    shown = [c for c in COLUMNS if any(c[0] in row for row in models.values())]
    header = ["model", *(title.format(reference=results["reference"]) for _, title, _ in shown)]
    rows = [[label, *(fmt.format(row[key]) if key in row else "-" for key, _, fmt in shown)]
            for label, row in models.items()]
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_table(results: dict) -> None:
    header, rows = table_rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(text.ljust(w) for text, w in zip(row, widths)))
    for warning in results.get("warnings", []):
        print(f"warning: {warning}")


def write_report(path: Path, results: dict, prompts: list[str], responses: dict[str, list[str]]) -> None:
    """Markdown: how the responses were sampled, the summary table, and sample responses side by side, next to each
    prompt as `prompts` writes it."""
    header, rows = table_rows(results)
    n = results["models"][results["reference"]]["prompts"]
    text = [
        "# Evaluation\n",
        f"{n} held-out prompts from `{results['prompts_file']}`, one response each per model, sampled at temperature "
        f"{results['temperature']} with at most {results['max_new_tokens']} new tokens (seed {results['seed']}). "
        f"KL and win rates are against `{results['reference']}`; a tie counts half.\n",
        markdown_table(header, rows),
        *([f"The audit RM sees {results['audit_sensitivity']:.0%} of a real gain as the training RM does (their "
           "accuracies on the same held-out pairs, above chance); a warning means it confirms less than half of that."
           "\n"] if "audit_sensitivity" in results else []),
        *(f"**Warning:** {warning}\n" for warning in results.get("warnings", [])),
        *check_table(results),
        "## Sample responses\n",
        markdown_table(["prompt", *responses],
                       [[p, *(r[i] for r in responses.values())] for i, p in enumerate(prompts)]),
    ]
    path.write_text("\n".join(text), encoding="utf-8")


def check_table(results: dict) -> list[str]:
    """The report's section on the judge's checks: for each model, the fraction of prompts asking for a check whose
    response passes it; nothing when the judge does not report its checks."""
    models = {label: row["gold_checks"] for label, row in results["models"].items() if "gold_checks" in row}
    if not models:
        return []
    checks = sorted({check for rates in models.values() for check in rates})
    rows = [[label, *(f"{rates[c]:.3f}" if c in rates else "-" for c in checks)] for label, rates in models.items()]
    return ["## The judge's checks\n", "The fraction of the prompts asking for each check whose response passes it.\n",
            markdown_table(["model", *checks], rows)]


def write_plot(path: Path, results: dict) -> None:
    """Gold score and RM score against KL to the reference, one labelled point per model."""
    # matplotlib only when a plot is drawn: choosing its (file-only) backend is a process-wide setting
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = results["models"]
    panels = [(key, title) for key, title in (("gold_score", "gold score"), ("rm_score", "RM score"))
              if all(key in row for row in models.values())]
    if not panels or not all("kl" in row for row in models.values()):
        return  # nothing to plot against (greedy decoding has no KL, a task without judge or RM has no score)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for label, row in models.items():
            ax.scatter(row["kl"], row[key])
            ax.annotate(label, (row["kl"], row[key]), textcoords="offset points", xytext=(5, 5))
        ax.set_xscale("symlog")  # the base model sits orders of magnitude further away than PPO
        ax.set_xlabel(f"KL to {results['reference']} (nats per response)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
