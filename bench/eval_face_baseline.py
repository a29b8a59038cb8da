"""The face baseline on the benchmark of the offline world: existence accuracy per group and the
face-distance margin that explains it.

    python bench/eval_face_baseline.py [--bench workspace/bench] [--frames 8] [--recipe RECIPE.yaml]

Builds the benchmark from the recipe (default: pvchat/recipes/benchmark/default.yaml) when --bench does not
exist, runs :class:`pvchat.eval.FaceBaseline` on every question (report under
BENCH/results/face-baseline-bench/) and prints, besides the paper's metrics, for each group the
closest face any sampled frame shows to the subject's reference face (dlib euclidean distance):
positives should sit far below the threshold, strangers and hard negatives far above. The ratio
printed last is (closest negative face) / (farthest positive clip): above 1, a single threshold
separates every clip.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from pvchat.eval import FaceBaseline, evaluate, load_benchmark
from pvchat.eval.benchmark import ensure_benchmark
from pvchat.eval.recipe import GROUPS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=Path, default=Path("workspace/bench"))
    ap.add_argument("--recipe", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=8)
    args = ap.parse_args()

    bench = load_benchmark(ensure_benchmark(args.bench, args.recipe, progress=sys.stderr.isatty(),
                                             announce=lambda m: print(m, flush=True)))
    print(f"benchmark {bench.root}: {bench.meta['counts']} (built in {bench.meta['seconds']} s)")
    t = time.perf_counter()
    baseline = FaceBaseline.from_benchmark(bench, num_frames=args.frames)
    prep = time.perf_counter() - t
    report = evaluate(baseline, bench.root, out=bench.root / "results" / "face-baseline-bench")
    ex = report.existence
    print(f"\nreference analysis {prep:.1f} s for {len(baseline.subjects)} subjects; "
          f"answering {report.timings_s['answer']} s ({report.timings_s['answer_per_question']} s/question)")
    print("thresholds: " + ", ".join(f"{n} {s.threshold:.3f}" for n, s in baseline.subjects.items()))
    print(f"\nexistence accuracy {ex['accuracy']:.3f} on {ex['n']} clips: positives {ex['positive_accuracy']:.3f}, "
          f"negatives {ex['negative_accuracy']:.3f}, hard negatives {ex['hard_negative_accuracy']:.3f}, "
          f"strangers {ex['stranger_accuracy']:.3f}")
    for g in GROUPS:
        print(f"  {g:14s} n={ex['by_group'][g]['n']:3d}  accuracy {ex['by_group'][g]['accuracy']:.3f}")
    print("by people in clip: " + ", ".join(f"{k}: {v:.3f}" for k, v in ex["by_people_in_clip"].items()))
    for t_, e in report.open.items():
        print(f"  {t_:10s} n={e['n']:3d}  BLEU {e['bleu']:.3f}  BERTScore {e['bertscore']:.3f}")

    closest: dict[str, list[float]] = {g: [] for g in GROUPS}
    missed: dict[str, int] = {g: 0 for g in GROUPS}
    for q in bench.questions:
        if q["type"] != "existence" or "+" in q["subject"]:  # distances are per person: one-person subjects
            continue
        d = baseline.decisions.get(f"{q['subject']}:{Path(q['clip']).name}", {}).get("closest")
        if d is None:
            missed[q["group"]] += 1
        else:
            closest[q["group"]].append(d)
    print("\nclosest face to the subject per clip (dlib distance):")
    for g in GROUPS:
        v = closest[g]
        if v:
            print(f"  {g:14s} min {min(v):.3f}  median {statistics.median(v):.3f}  max {max(v):.3f}"
                  f"  (clips without any face: {missed[g]})")
    pos, neg = closest["positive"], closest["stranger"] + closest["hard_negative"]
    if pos and neg:
        print(f"\nmargin ratio: closest negative {min(neg):.3f} / farthest positive {max(pos):.3f} = {min(neg) / max(pos):.2f}")
    print(f"BERTScore model: {report.bertscore_model['name']} layer {report.bertscore_model['num_layers']}")
    print(f"report: {Path(report.out) / 'report.md'}")


if __name__ == "__main__":
    main()
