"""report.md: the evaluation as Markdown tables (summary in the paper's Table 1 shape, then per type)."""

from __future__ import annotations

from typing import Any

from pvchat.eval.judge import NOT_MEASURED


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report) -> str:
    """The Markdown text of an :class:`~pvchat.eval.runner.EvalReport`."""
    s, ex = report.summary, report.existence
    judged = report.judge is not None
    es_dc = (lambda v: v) if judged else (lambda v: "n/m")
    parts = [f"# Evaluation: {report.answerer}", "",
             f"Benchmark: `{report.benchmark}`, {len(report.rows)} questions.", "",
             "## Summary (paper §4.1, Table 1 columns)", "",
             _table(["Answerer", "Acc ↑", "BLEU ↑", "BS ↑", "ES ↑", "DC ↑"],
                    [[report.answerer, s.get("Acc"), s.get("BLEU"), s.get("BS"), es_dc(s.get("ES")), es_dc(s.get("DC"))]]),
             ""]
    if ex.get("n"):
        rows = [["all", ex["n"], ex["accuracy"]],
                ["positives (subject present)", ex["n_positive"], ex["positive_accuracy"]],
                ["negatives (subject absent)", ex["n_negative"], ex["negative_accuracy"]],
                ["hard negatives", ex["by_group"]["hard_negative"]["n"], ex["hard_negative_accuracy"]],
                ["strangers", ex["by_group"]["stranger"]["n"], ex["stranger_accuracy"]]]
        parts += ["## Existence", "", _table(["Clips", "n", "Accuracy"], rows), "",
                  f"Unparsed answers: {_fmt(ex['unparsed'])} (counted as wrong).", ""]
        if ex.get("by_subject"):
            parts += [_table(["Subject", "Accuracy"], [[k, v] for k, v in ex["by_subject"].items()]), ""]
        if ex.get("by_people_in_clip"):
            parts += [_table(["People in clip", "Accuracy"], [[k, v] for k, v in ex["by_people_in_clip"].items()]), ""]
    if report.open:
        rows = [[t, e["n"], e["bleu"], e["bertscore"], es_dc(e.get("es")), es_dc(e.get("dc"))]
                for t, e in report.open.items()]
        parts += ["## Open questions", "", _table(["Type", "n", "BLEU", "BERTScore", "ES", "DC"], rows), ""]
    notes = []
    if report.bertscore_model:
        m = report.bertscore_model
        notes.append(f"BERTScore: F1 of {m['name']}, layer {m['num_layers']}, no baseline rescaling "
                     "(comparable only to runs with the same model and layer).")
    notes.append(f"ES/DC: judged by {report.judge['model']} at {report.judge['base_url']} (1–5)." if judged
                 else f"ES/DC: {NOT_MEASURED} (n/m).")
    t = report.timings_s
    notes.append("Timings: " + ", ".join(f"{k} {v} s" for k, v in t.items()) + ".")
    parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(parts)
