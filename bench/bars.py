"""Bar panels with error bars (mean ± std per bar), one panel per attribute: the bench scripts' PNGs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure


def bar_panels(panels: dict[str, dict[str, dict[str, float]]], path: Path, ylabel: str,
               grey: Callable[[str], bool] = lambda name: False, target: float | None = None,
               tick: Callable[[str], str] = str, rotation: int = 45) -> None:
    """``panels``: title → bar name → {"mean", "std"}; bars for which ``grey`` holds are reference rows
    (grey), ``target`` a dashed line, ``tick`` the bar's label."""
    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (title, bars) in zip(axes, panels.items()):
        names = list(bars)
        ax.bar(range(len(names)), [bars[n]["mean"] for n in names], yerr=[bars[n]["std"] for n in names], capsize=3,
               color=["#bbb" if grey(n) else "#4a7" for n in names])
        ax.set_xticks(range(len(names)), [tick(n) for n in names], rotation=rotation,
                      ha="right" if rotation else "center", fontsize=7)
        if target is not None:
            ax.axhline(target, color="#c44", lw=0.8, ls="--")
        ax.set_title(title)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_results(results: Path, name: str, report: dict, plot: Callable[[dict, Path], None]) -> None:
    """``results/NAME.json`` (the report) and ``results/NAME.png`` (``plot`` of its summary), then the
    summary printed: a line per row, mean ± std per column."""
    results.mkdir(exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(report, indent=1))
    plot(report["summary"], results / f"{name}.png")
    for row, cols in report["summary"].items():
        print(f"{row:55s} " + "  ".join(f"{c} {v['mean']:.3f}±{v['std']:.3f}" for c, v in cols.items()))
