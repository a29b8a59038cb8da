"""Evaluation: metrics of paper §4.1, the offline-world benchmark, baselines and the runner.

- :mod:`metrics`: existence accuracy (free-text yes/no parsing) and BLEU.
- :mod:`bertscore`: BERTScore F1 with a local encoder only (default: the packaged MiniLM).
- :mod:`judge`: Entity Specificity and Descriptive Completeness (0–5) from an LLM judge over an
  OpenAI-compatible endpoint; rubrics in ``rubrics.json``; without a judge: not measured.
- :mod:`recipe`, :mod:`benchmark`: the benchmark query set built from the offline world
  (``pvchat/recipes/benchmark/default.yaml``): per subject a reference video and clips with it, with strangers and
  with its hard negatives, with questions and ground truth for the four question types.
- :mod:`face_baseline`: a training-free answerer from dlib face matching; :mod:`baselines`:
  always-yes, always-no and the subject-free base asked about "the person".
- :mod:`truth`: every question type scored against the ground truth (ours); :mod:`official`:
  the official evaluator's numbers its way (categories, BLEU-1, ES/DC 0–5 or its heuristics)
  and its result-JSON layout, written and read.
- :mod:`runner`: :func:`evaluate` any ``answer_fn(video, question, subject) -> str``;
  :mod:`report_md` and :mod:`plots` write report.md and the PNGs.
- :mod:`pack_answerer`: a learned concept pack as an answerer (``pvchat eval --pack``).
- :mod:`ablate`: the paper's ablation studies (``pvchat ablate``).

The commands ``pvchat eval`` and ``pvchat ablate`` are in :mod:`pvchat.commands`.

Python API::

    from pvchat.eval import build_benchmark, evaluate, FaceBaseline
    bench = build_benchmark("workspace/bench")            # default recipe
    report = evaluate(FaceBaseline.from_benchmark(bench), bench, out="workspace/bench/results/face")
"""

from pvchat.eval.benchmark import Benchmark, build_benchmark, load_benchmark
from pvchat.eval.bertscore import bertscore
from pvchat.eval.face_baseline import FaceBaseline
from pvchat.eval.judge import Judge, make_judge, parse_score
from pvchat.eval.metrics import bleu, existence_accuracy, parse_yes_no
from pvchat.eval.recipe import BenchmarkRecipe, load_recipe
from pvchat.eval.runner import EvalReport, evaluate

__all__ = [
    "Benchmark", "BenchmarkRecipe", "EvalReport", "FaceBaseline", "Judge", "bertscore", "bleu", "build_benchmark",
    "evaluate", "existence_accuracy", "load_benchmark", "load_recipe", "make_judge", "parse_score", "parse_yes_no",
]
