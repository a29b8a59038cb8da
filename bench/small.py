"""The small base, measured: every question type over several seeds, beside the baselines.

    python bench/small.py [--seeds 0 1 2] [--quick] [--out workspace/bench-small]

Each seed is a whole ``pvchat demo`` run (:func:`pvchat.offline.demo.run_demo`, preset ``small``) on its
own world of people from the held-out face split (never seen by the shipped base): one person
learned from one reference video, then held-out query clips with the person, with strangers
and with look-alikes. Reported per seed and as mean ± std over seeds:

* existence accuracy overall and per group (the person, strangers, look-alikes);
* clothing: the answer names the colour and kind of the person's top (ours);
* action: the answer names the person's action (ours);
* location: in query clips of the person beside someone else, left/right of "the other person";
* for clothing and action, of the pairs of clips whose truth differs, the share answered differently;
* the same for two baselines: the aligned base asked about "the person" (no personalisation)
  and the training-free face baseline (existence only);
* wall time per stage.

Writes bench/results/small.json and small.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
KEYS = ("existence", "subject", "stranger", "hard negative", "clothing", "action", "location")


def flat(scores: dict) -> dict[str, float | None]:
    """existence / per-group / clothing / action / location numbers of one score dict."""
    out = {"existence": scores["existence"]["accuracy"] if scores.get("existence") else None}
    for g in ("subject", "stranger", "hard negative"):
        out[g] = scores.get("by_group", {}).get(g)
    for k in ("clothing", "action", "location"):
        out[k] = scores[k]["accuracy"] if scores.get(k) else None
    for k in ("clothing", "action"):  # of clip pairs whose truth differs, the share answered differently
        out[f"{k} differs"] = scores[k].get("differs") if scores.get(k) else None
    return out


def summarise(runs: list[dict[str, float | None]]) -> dict[str, dict]:
    out = {}
    for k in dict.fromkeys(k for r in runs for k in r):
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            out[k] = {"mean": round(statistics.fmean(vals), 3),
                      "std": round(statistics.stdev(vals), 3) if len(vals) > 1 else 0.0, "n_seeds": len(vals)}
    return out


def main() -> None:
    from pvchat.offline.demo import run_demo

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="the demo's --quick worlds (12 queries)")
    ap.add_argument("--out", type=Path, default=Path("workspace/bench-small"))
    args = ap.parse_args()
    per_seed, rows = [], {"personalised": [], "base, asked about the person": [], "face": []}
    for seed in args.seeds:
        report = run_demo(args.out / f"seed{seed}", quick=args.quick, seed=seed, progress=False, preset="small")
        rows["personalised"].append(flat(report))
        for label, scores in report["baselines"].items():
            rows[label].append(flat(scores))
        per_seed.append({"seed": seed, "subject": report["subject"], "seconds": report["seconds"],
                         "timings_s": report["timings_s"], "personalised": flat(report),
                         "baselines": {k: flat(v) for k, v in report["baselines"].items()}})
        print(json.dumps(per_seed[-1]), flush=True)
    summary = {label: summarise(r) for label, r in rows.items()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "small.json").write_text(json.dumps({"seeds": args.seeds, "quick": args.quick, "summary": summary,
                                                   "per_seed": per_seed}, indent=2))
    plot(summary, RESULTS / "small.png")
    for label, s in summary.items():
        print(label + ": " + ", ".join(f"{k} {v['mean']:.2f}±{v['std']:.2f}" for k, v in s.items()))


def plot(summary: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(summary)
    x = np.arange(len(KEYS))
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for i, label in enumerate(labels):
        means = [summary[label].get(k, {}).get("mean", np.nan) for k in KEYS]
        stds = [summary[label].get(k, {}).get("std", 0.0) for k in KEYS]
        ax.bar(x + (i - 1) * 0.27, means, 0.27, yerr=stds, capsize=3, label=label)
    ax.set_xticks(x, ["existence", "the person", "strangers", "look-alikes", "clothing", "action", "location"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (mean ± std over seeds)")
    ax.set_title("small base: held-out people, one reference video each")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
