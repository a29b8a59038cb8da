"""The face baseline's distance distributions, without and with identity variation.

Builds the default benchmark shrunk to SUBJECTS one-person subjects (``--subjects``) twice: as the
old world was (``variation`` 0: every clip pastes the reference photo; no made look-alikes) and as
the default recipe is (variation 1, one made look-alike per subject person), runs the
training-free face baseline on both, and per clip records the closest dlib distance between the
subject's reference face and any face found: the subject's own clips (same person) vs clips of a
look-alike (hard negative) vs strangers. Prints the numbers, writes
bench/results/face_distances.json and bench/results/face_distances.png, and the wall time of each
benchmark build.

    .venv/bin/python bench/face_distances.py [SUBJECTS]     # or --replot: the PNG from the saved JSON
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pvchat.eval.benchmark import build_benchmark, load_benchmark
from pvchat.eval.face_baseline import FaceBaseline
from pvchat.eval.recipe import load_recipe

OUT = Path(__file__).parent / "results"


def measure(recipe, root: Path) -> dict:
    start = time.perf_counter()
    bench = load_benchmark(build_benchmark(root, recipe))
    built = time.perf_counter() - start
    singles = [s["name"] for s in bench.subjects if s.get("unit", "single") == "single"]
    fb = FaceBaseline.from_benchmark(bench, subjects=singles)
    dist: dict[str, list[float | None]] = {"positive": [], "hard_negative": [], "stranger": []}
    decided = {"positive": [], "hard_negative": [], "stranger": []}
    for q in bench.questions:
        if q["type"] != "existence" or q["subject"] not in singles:
            continue
        video = bench.root / q["clip"]
        present = fb.present(video, q["subject"])
        d = fb.decisions[f"{q['subject']}:{video.name}"]["closest"]
        dist[q["group"]].append(d)
        decided[q["group"]].append(present == (q["group"] == "positive"))
    return {"build_seconds": round(built, 1), "clips": bench.meta["counts"]["clips"],
            "thresholds": {n: round(s.threshold, 4) for n, s in fb.subjects.items()},
            "distances": dist, "accuracy": {g: (sum(v) / len(v) if v else None) for g, v in decided.items()}}


def auc(same: list[float | None], other: list[float | None]) -> float:
    """Threshold-free separability: the chance that a clip of the person has a closer face than a clip
    of the other group (no face found counts as farthest; ties count half). 1.0: face matching
    alone tells them apart at some threshold."""
    far = float("inf")
    a = [far if v is None else v for v in same]
    b = [far if v is None else v for v in other]
    return sum((x < y) + 0.5 * (x == y) for x in a for y in b) / (len(a) * len(b))


def _stats(values: list[float | None]) -> dict:
    found = [v for v in values if v is not None]
    return {"n": len(values), "no_face_found": len(values) - len(found),
            "median": round(float(np.median(found)), 4) if found else None,
            "min": round(min(found), 4) if found else None, "max": round(max(found), 4) if found else None}


def plot(results: dict) -> None:
    """face_distances.png: the distance histograms of each run side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    bins = np.linspace(0.0, 1.0, 41)
    colours = {"positive": "tab:green", "hard_negative": "tab:red", "stranger": "tab:blue"}
    for ax, (name, r) in zip(axes, results.items()):
        for g, d in r["distances"].items():
            ax.hist([v for v in d if v is not None], bins=bins, alpha=0.55, color=colours[g],
                    label=f"{g} ({sum(v is None for v in d)} no face)")
        for t in r["thresholds"].values():
            ax.axvline(t, c="grey", lw=0.6, ls=":")
        ax.set_title(f"{name}\nface baseline: accuracy " + " / ".join(
            f"{a:.2f}" for a in r["accuracy"].values() if a is not None)
            + f", AUC vs look-alike {r['auc']['hard_negative']:.2f}", fontsize=8)
        ax.set_xlabel("closest dlib distance to the subject's reference face")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("clips")
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / "face_distances.png", dpi=100)


def main() -> int:
    if sys.argv[1:] == ["--replot"]:  # the PNG again from face_distances.json
        saved = json.loads((OUT / "face_distances.json").read_text())
        plot({k: {**v, "distances": v["raw"]} for k, v in saved.items() if k != "subjects"})
        return 0
    subjects = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    base = load_recipe().shrink(subjects)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, rcp in (("before (variation 0, no made look-alikes)", replace(base, variation=0.0, lookalikes=0)),
                          (f"after (variation {base.variation}, {base.lookalikes} made look-alike)", base)):
            r = measure(rcp, Path(tmp) / f"b{len(results)}")
            results[name] = r
            print(f"{name}: build {r['build_seconds']} s for {r['clips']} clips; face-baseline accuracy "
                  + ", ".join(f"{g} {a:.2f}" for g, a in r["accuracy"].items() if a is not None))
            for g, d in r["distances"].items():
                print(f"  {g:14s} {_stats(d)}")
            r["auc"] = {g: round(auc(r["distances"]["positive"], r["distances"][g]), 3)
                        for g in ("hard_negative", "stranger")}
            print(f"  AUC same person vs look-alike {r['auc']['hard_negative']}, vs stranger {r['auc']['stranger']}")
    plot(results)
    summary = {k: {**{x: r[x] for x in ("build_seconds", "clips", "accuracy", "auc", "thresholds")},
                   "distances": {g: _stats(d) for g, d in r["distances"].items()}, "raw": r["distances"]}
               for k, r in results.items()}
    (OUT / "face_distances.json").write_text(json.dumps({"subjects": subjects, **summary}, indent=2) + "\n")
    print(f"-> {OUT / 'face_distances.png'}, {OUT / 'face_distances.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
