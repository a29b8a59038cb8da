"""PNG plots of an evaluation: existence accuracy per group, open-question metrics per type."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from pvchat.io import atomic_path

GROUP_COLOURS = {"all": "black", "positive": "tab:green", "stranger": "tab:blue", "hard_negative": "tab:red"}


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


TRUTH_BARS = (("present", ("existence", "present")), ("absent", ("existence", "absent")),
              ("look-alikes", ("existence", "absent_lookalikes")), ("clothing", ("appearance",)),
              ("action", ("action",)), ("location", ("location",)))


def _get(truth: dict, keys: tuple[str, ...]) -> float | None:
    for k in keys:
        truth = (truth or {}).get(k)
    return (truth or {}).get("accuracy")


def plot_truth(report, out: Path) -> Path:
    """truth.png: accuracy against the ground truth per question kind, the answerer beside its baselines."""
    who = [(report.answerer, report.truth), *((n, b["truth"]) for n, b in report.baselines.items())]
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.subplots()
    width = 0.8 / len(who)
    for k, (name, truth) in enumerate(who):
        xs = [i + (k - (len(who) - 1) / 2) * width for i in range(len(TRUTH_BARS))]
        ax.bar(xs, [_get(truth, keys) or 0.0 for _, keys in TRUTH_BARS], width, label=name)
    ax.set_xticks(range(len(TRUTH_BARS)), [label for label, _ in TRUTH_BARS])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (ground truth)")
    ax.set_title(f"{report.answerer}: every question type against the ground truth")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "truth.png")


def plot_report(report, out: Path) -> list[Path]:
    """existence.png, truth.png and open.png (when there are such questions) under ``out``; returns the paths."""
    paths = []
    ex = report.existence
    if ex.get("n"):
        groups = ["all", *ex["by_group"]]
        values = [ex["accuracy"], *(ex["by_group"][g]["accuracy"] for g in ex["by_group"])]
        labels = [f"{g}\n(n={ex['n'] if g == 'all' else ex['by_group'][g]['n']})" for g in groups]
        fig = Figure(figsize=(5.5, 3.4))
        ax = fig.subplots()
        bars = ax.bar(labels, [v or 0.0 for v in values], color=[GROUP_COLOURS.get(g, "grey") for g in groups])
        for b, v in zip(bars, values):
            ax.text(b.get_x() + b.get_width() / 2, (v or 0) + 0.02, "—" if v is None else f"{v:.2f}", ha="center")
        ax.axhline(0.5, ls=":", c="grey", lw=1)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("existence accuracy")
        ax.set_title(f"{report.answerer}: is <subject> in this video?")
        fig.tight_layout()
        paths.append(_save(fig, out / "existence.png"))
    if report.truth:
        paths.append(plot_truth(report, out))
    types = [t for t in report.open if t != "all"]
    if types:
        metrics = [("bleu", "BLEU", 1.0), ("bertscore", "BERTScore", 1.0), ("es", "ES / 5", 5.0), ("dc", "DC / 5", 5.0)]
        metrics = [m for m in metrics if any(report.open[t].get(m[0]) is not None for t in types)]
        fig = Figure(figsize=(6.5, 3.4))
        ax = fig.subplots()
        width = 0.8 / len(metrics)
        for k, (key, label, scale) in enumerate(metrics):
            xs = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(types))]
            ax.bar(xs, [(report.open[t].get(key) or 0.0) / scale for t in types], width, label=label)
        ax.set_xticks(range(len(types)), [f"{t}\n(n={report.open[t]['n']})" for t in types])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("score")
        title = f"{report.answerer}: open questions"
        if report.judge is None:
            title += " (ES/DC not measured)"
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, out / "open.png"))
    return paths
