"""Run an answerer over a benchmark and score it with the paper's §4.1 metrics.

``answer_fn(video_path, question, subject_name) -> str`` is anything that answers: the trained
model (through :mod:`pvchat.api`), the face baseline (:mod:`pvchat.eval.face_baseline`), a stub.
:func:`evaluate` asks every question of the benchmark, then reports

- existence: accuracy overall, on positives, on negatives, on hard negatives and on strangers
  (plus per subject and per number of people in the clip);
- appearance / action / location (and all three together): BLEU, BERTScore F1 (local model, named
  in the report), ES and DC from an LLM judge or ``null`` with "not measured (no judge)";
- a summary row in the shape of the paper's tables: Acc, BLEU, BS, ES, DC.

It writes ``answers.jsonl`` (every question with its answer, as soon as all are answered),
``report.json``, ``report.md`` and PNG plots under ``out``, each atomically.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tqdm import tqdm

from pvchat.errors import ConfigError, InputError
from pvchat.eval import plots
from pvchat.eval.benchmark import load_benchmark
from pvchat.eval.bertscore import bertscore
from pvchat.eval.judge import METRICS as JUDGE_METRICS, NOT_MEASURED, Judge
from pvchat.eval.metrics import bleu, existence_accuracy, parse_yes_no
from pvchat.eval.official import official_metrics, to_official
from pvchat.eval.recipe import GROUPS
from pvchat.eval.report_md import markdown
from pvchat.eval.truth import truth_scores
from pvchat.io import atomic_dir, recover_dir, write_json, write_text

OPEN_TYPES = ("appearance", "action", "location")
AnswerFn = Callable[[str, str, str], str]


@dataclass
class EvalReport:
    """What :func:`evaluate` measured (``to_dict`` is report.json).

    ``truth``: every question type scored against the ground truth (ours, :mod:`pvchat.eval.truth`);
    ``official``: the official evaluator's numbers (:mod:`pvchat.eval.official`); ``baselines``:
    the same scores of the baseline answerers on the same questions.
    """

    answerer: str
    benchmark: str
    summary: dict[str, Any]
    existence: dict[str, Any]
    open: dict[str, Any]
    bertscore_model: dict[str, Any] | None
    judge: dict[str, Any] | None
    timings_s: dict[str, float]
    answerer_info: dict[str, Any] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)
    official: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rows")
        d["n_questions"] = len(self.rows)
        return d


def _rename(text: str, rename: Mapping[str, str]) -> str:
    for old, new in rename.items():
        text = text.replace(f"<{old}>", f"<{new}>")
    return text


def _select(bench, subjects: Sequence[str] | None, rename: Mapping[str, str], limit: int | None) -> list[dict]:
    wanted = None if not subjects else {bench.subject(s)["name"] for s in subjects}
    rows = []
    for q in bench.questions:
        if wanted is not None and q["subject"] not in wanted:
            continue
        row = dict(q)
        if rename:
            row["subject"] = rename.get(q["subject"], q["subject"])
            row["question"], row["reference"] = _rename(q["question"], rename), _rename(q["reference"], rename)
        rows.append(row)
    if limit is not None:
        rows = rows[: max(0, int(limit))]
    if not rows:
        raise InputError(f"benchmark {bench.root}: no questions selected")
    return rows


def _ask(answer_fn: AnswerFn, root: Path, rows: list[dict], progress: bool) -> None:
    for row in tqdm(rows, desc="answer", unit="q", disable=not progress):
        start = time.perf_counter()
        answer = answer_fn(str(root / row["clip"]), row["question"], row["subject"])
        if not isinstance(answer, str):
            raise ConfigError(f"the answerer returned {type(answer).__name__}, not str, for question {row['id']}")
        row["answer"] = answer
        row["seconds"] = round(time.perf_counter() - start, 4)
        if row["type"] == "existence":
            row["parsed"] = parse_yes_no(answer)
        row["is_special"] = row["type"] == "existence"
        row["is_positive"] = row["label"] if row["type"] == "existence" else None


def _existence(rows: list[dict]) -> dict[str, Any]:
    ex = [r for r in rows if r["type"] == "existence"]
    if not ex:
        return {"n": 0}

    def acc(sel: list[dict]) -> float | None:
        return existence_accuracy([r["answer"] for r in sel], [r["label"] for r in sel])["accuracy"] if sel else None

    out = existence_accuracy([r["answer"] for r in ex], [r["label"] for r in ex])
    out["n_positive"], out["n_negative"] = sum(bool(r["label"]) for r in ex), sum(not r["label"] for r in ex)
    out["hard_negative_accuracy"] = acc([r for r in ex if r["group"] == "hard_negative" and not r["label"]])
    out["stranger_accuracy"] = acc([r for r in ex if r["group"] == "stranger" and not r["label"]])
    out["by_group"] = {g: {"n": sum(r["group"] == g for r in ex), "accuracy": acc([r for r in ex if r["group"] == g])}
                       for g in GROUPS}
    out["by_subject"] = {s: acc([r for r in ex if r["subject"] == s]) for s in dict.fromkeys(r["subject"] for r in ex)}
    out["by_people_in_clip"] = {str(n): acc([r for r in ex if r.get("num_people") == n])
                                for n in sorted({r.get("num_people") for r in ex if r.get("num_people")})}
    return out


def _judge_rows(judge: Judge, rows: list[dict], progress: bool) -> None:
    for row in tqdm(rows, desc="judge", unit="q", disable=not progress):
        row["judge"] = {}
        for metric in JUDGE_METRICS:
            s = judge.score(metric, row["question"], row["reference"], row["answer"], f"<{row['subject']}>")
            row[metric] = s.score
            row["judge"][metric] = s.reply


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _open(rows: list[dict], judged: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, sel in [*((t, [r for r in rows if r["type"] == t]) for t in OPEN_TYPES), ("all", rows)]:
        if not sel:
            continue
        entry: dict[str, Any] = {"n": len(sel), "bleu": bleu([r["answer"] for r in sel], [r["reference"] for r in sel]),
                                 "bertscore": _mean([r["bertscore"] for r in sel])}
        for metric in JUDGE_METRICS:
            scores = [r[metric] for r in sel if r.get(metric) is not None]
            entry[metric] = _mean(scores) if judged else None
            if judged:
                entry[f"{metric}_unparsed"] = len(sel) - len(scores)
        if not judged:
            entry["es_dc"] = NOT_MEASURED
        out[name] = entry
    return out


def evaluate(
    answer_fn: AnswerFn,
    benchmark_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    answerer: str | None = None,
    subjects: Sequence[str] | None = None,
    rename: Mapping[str, str] | None = None,
    judge: Judge | None = None,
    bertscore_model: str | os.PathLike | None = None,
    bertscore_layers: int | None = None,
    limit: int | None = None,
    answerer_info: Mapping[str, Any] | None = None,
    baselines: Sequence[AnswerFn] | None = None,
    progress: bool = False,
) -> EvalReport:
    """Ask ``answer_fn`` every question of a benchmark and score the answers.

    Args:
        answer_fn: ``(video_path, question, subject_name) -> str``.
        benchmark_dir: a directory written by :func:`pvchat.eval.benchmark.build_benchmark`.
        out: where answers.jsonl, report.json, report.md and the plots go; None writes nothing.
        answerer: its name in the report (default: ``answer_fn.name`` or its class name).
        subjects: only these subjects' questions (names or world ids); default all.
        rename: ``{benchmark name: name the answerer knows}``; ``<Old>`` becomes ``<New>`` in the
            questions and reference answers (e.g. a concept pack learned under another name).
        judge: an LLM judge for ES and DC (:func:`pvchat.eval.judge.make_judge`); None: not measured.
        bertscore_model, bertscore_layers: a local encoder directory and layer (default: packaged MiniLM).
        limit: ask only the first ``limit`` selected questions (smoke runs).
        answerer_info: facts about the answerer recorded in the report (settings, calibration);
            default: ``answer_fn.describe()`` after answering, when it has one.
        baselines: answerers asked the same questions and reported beside it (always-yes, always-no,
            the face baseline, a base model: :mod:`pvchat.eval.baselines`).
        progress: progress bars on stderr.
    """
    bench = load_benchmark(benchmark_dir)
    rename = dict(rename or {})
    rows = _select(bench, subjects, rename, limit)
    name = answerer or getattr(answer_fn, "name", None) or type(answer_fn).__name__
    timings: dict[str, float] = {}
    start = time.perf_counter()
    _ask(answer_fn, bench.root, rows, progress)
    timings["answer"] = round(time.perf_counter() - start, 2)
    timings["answer_per_question"] = round(timings["answer"] / len(rows), 4)
    if answerer_info is None and callable(getattr(answer_fn, "describe", None)):
        answerer_info = answer_fn.describe()
    if out is not None:  # the answers are kept even if scoring fails; the report directory is swapped in whole
        _write_rows(Path(out).with_name(f".{Path(out).name}.answers.jsonl"), rows)
    compared = {}
    for fn in (baselines or ()):
        label = getattr(fn, "name", None) or type(fn).__name__
        start = time.perf_counter()
        compared[label] = baseline_scores(fn, bench, _select(bench, subjects, {}, limit), progress)  # benchmark names
        timings[f"baseline {label}"] = round(time.perf_counter() - start, 2)
    return score_answers(rows, name, str(bench.root), out=out, judge=judge, bertscore_model=bertscore_model,
                         bertscore_layers=bertscore_layers, answerer_info=answerer_info, timings=timings,
                         baselines=compared, progress=progress)


def baseline_scores(answer_fn: AnswerFn, bench, rows: list[dict], progress: bool = False) -> dict[str, Any]:
    """A baseline's scores on ``rows`` (the evaluated questions, under the benchmark's names): ground truth and the official
    accuracy and BLEU-1 (no BERTScore or judge: a baseline is a reference row, not an entry)."""
    for r in rows:
        r.pop("answer", None)
    _ask(answer_fn, bench.root, rows, progress)
    return {"truth": truth_scores(rows), "official": official_metrics(rows, judged=False),
            "info": answer_fn.describe() if callable(getattr(answer_fn, "describe", None)) else {}}


def score_answers(rows: list[dict], answerer: str, benchmark: str, out: str | os.PathLike | None = None,
                  judge: Judge | None = None, bertscore_model: str | os.PathLike | None = None,
                  bertscore_layers: int | None = None, answerer_info: Mapping[str, Any] | None = None,
                  timings: dict[str, float] | None = None, baselines: dict[str, dict] | None = None,
                  progress: bool = False) -> EvalReport:
    """Score answered rows (each with ``answer``): ground truth, the official metrics, the paper's
    table; write the report under ``out`` (atomically, as one directory) when given."""
    timings = dict(timings or {})
    open_rows = [r for r in rows if r.get("type") in OPEN_TYPES]
    bs_model = None
    start = time.perf_counter()
    if rows:  # over every record, as the official evaluator does (the open questions' mean is kept apart)
        result = bertscore([r["answer"] for r in rows], [r["reference"] for r in rows], model=bertscore_model,
                           num_layers=bertscore_layers)
        for r, f1 in zip(rows, result.per_item):
            r["bertscore"] = f1
        bs_model = result.model.to_dict()
    timings["bertscore"] = round(time.perf_counter() - start, 2)
    if judge is not None and open_rows:
        start = time.perf_counter()
        _judge_rows(judge, open_rows, progress)
        timings["judge"] = round(time.perf_counter() - start, 2)

    truth = truth_scores(rows) if any("type" in r for r in rows) else {}
    official = official_metrics(rows, judged=judge is not None)
    existence = _existence(rows) if any(r.get("type") == "existence" for r in rows) else {"n": 0}
    open_ = _open(open_rows, judged=judge is not None)
    all_open = open_.get("all", {})
    summary = {"Acc": existence.get("accuracy"), "BLEU": all_open.get("bleu"), "BS": all_open.get("bertscore"),
               "ES": all_open.get("es"), "DC": all_open.get("dc"), "BLEU-1 (official)": official["bleu1"],
               "BLEU-4": official["bleu4"]}
    report = EvalReport(answerer=answerer, benchmark=benchmark, summary=summary, existence=existence, open=open_,
                        bertscore_model=bs_model, judge=judge.describe() if judge is not None else None,
                        timings_s=timings, answerer_info=dict(answerer_info or {}), truth=truth, official=official,
                        baselines=dict(baselines or {}), rows=rows, out=str(out) if out is not None else None)
    if judge is None:
        report.summary["ES/DC"] = NOT_MEASURED
    if out is not None:
        write_report(report, out)
        Path(out).with_name(f".{Path(out).name}.answers.jsonl").unlink(missing_ok=True)
    return report


def _write_rows(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_report(report: EvalReport, out: str | os.PathLike) -> list[Path]:
    """report.json, report.md, answers.jsonl, official.json (the official evaluator's layout) and the
    plots under ``out``; returns the paths. The directory is written whole and swapped in: a run
    killed while writing leaves the last good report in place (:func:`pvchat.io.atomic_dir`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: a file, not a report directory")
    recover_dir(out)
    with atomic_dir(out, overwrite=True) as tmp:
        write_json(tmp / "report.json", report.to_dict())
        write_text(tmp / "report.md", markdown(report))
        _write_rows(tmp / "answers.jsonl", report.rows)
        write_json(tmp / "official.json", to_official(report.rows, report.benchmark))
        names = [p.name for p in plots.plot_report(report, tmp)]
    return [out / n for n in ("report.json", "report.md", "answers.jsonl", "official.json", *names)]
