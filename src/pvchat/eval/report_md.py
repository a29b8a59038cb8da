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
    parts += _truth_section(report) + _official_section(report) + _baselines_section(report)
    notes = []
    if report.bertscore_model:
        m = report.bertscore_model
        notes.append(f"BERTScore: F1 of {m['name']}, layer {m['num_layers']}, no baseline rescaling "
                     "(comparable only to runs with the same model and layer).")
    notes.append(f"ES/DC: judged by {report.judge['model']} at {report.judge['base_url']} (0–5, as the official evaluator)." if judged
                 else f"ES/DC: {NOT_MEASURED} (n/m).")
    t = report.timings_s
    notes.append("Timings: " + ", ".join(f"{k} {v} s" for k, v in t.items()) + ".")
    parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(parts)


def _acc(entry: dict | None) -> Any:
    return None if not entry else entry.get("accuracy")


def _truth_row(name: str, truth: dict) -> list[Any]:
    ex = truth.get("existence", {})
    return [name, _acc(ex.get("present")), _acc(ex.get("absent")), _acc(ex.get("absent_lookalikes")),
            _acc(ex.get("present_face_hardly_visible")), _acc(truth.get("appearance")), _acc(truth.get("action")),
            _acc(truth.get("location"))]


TRUTH_HEADER = ["Answerer", "present ↑", "absent ↑", "look-alikes ↑", "face hardly visible ↑", "clothing ↑",
                "action ↑", "location ↑"]


def _truth_section(report) -> list[str]:
    t = report.truth
    if not t:
        return []
    out = ["## Scored against the ground truth (ours)", "",
           "Existence: the yes/no read from the answer against the label; clothing: names the top's colour and "
           "kind; action: names the action and no other; location: left/right of the other people as rendered "
           "(alone: the frame third).", "",
           _table(TRUTH_HEADER, [_truth_row(report.answerer, t)]), ""]
    rows = [[g, *(_acc(v.get(k)) for k in ("existence", "appearance", "action", "location"))]
            for g, v in t.get("by_group", {}).items()]
    rows += [[f"{n} in clip", *(_acc(v.get(k)) for k in ("existence", "appearance", "action", "location"))]
             for n, v in t.get("by_people_in_clip", {}).items()]
    rows += [[u, *(_acc(v.get(k)) for k in ("existence", "appearance", "action", "location"))]
             for u, v in t.get("by_unit", {}).items()]
    out += [_table(["Split", "existence", "clothing", "action", "location"], rows), ""]
    return out


def _official_section(report) -> list[str]:
    o = report.official
    if not o:
        return []
    judged = "es" in o
    es, dc = ("es", "dc") if judged else ("es_heuristic", "dc_heuristic")
    head = ["Category", "n", "BLEU-1", "BLEU-4", "BERTScore", "ES" if judged else "ES heuristic",
            "DC" if judged else "DC heuristic"]
    rows = [["all", o["n"], o["bleu1"], o["bleu4"], o["bertscore"], o.get(es), o.get(dc)]]
    rows += [[c, v["n"], v["bleu1"], v["bleu4"], v["bertscore"], v.get(es), v.get(dc)] for c, v in o["by_category"].items()]
    a = o["accuracy"]
    return ["## The official evaluator's metrics", "",
            f"As `evaluate_pvchat_metrics.py` computes them: identity accuracy {_fmt(a['accuracy'])} "
            f"(present {_fmt(a['present_accuracy'])}, absent {_fmt(a['absent_accuracy'])}, n {a['n']}); "
            "BLEU-1 = sacrebleu, max n-gram order 1, effective order, over every record.", "",
            _table(head, rows), "",
            *([] if judged else ["ES/DC here are the official evaluator's local lexical fallback (heuristics), "
                                 "not judged ES/DC.", ""])]


def _baselines_section(report) -> list[str]:
    if not report.baselines:
        return []
    rows = [_truth_row(report.answerer, report.truth) + [report.official.get("accuracy", {}).get("accuracy"),
                                                        report.official.get("bleu1")]]
    for name, b in report.baselines.items():
        rows.append(_truth_row(name, b["truth"]) + [b["official"]["accuracy"]["accuracy"], b["official"]["bleu1"]])
    return ["## Baselines on the same questions", "",
            _table(TRUTH_HEADER + ["Acc (official) ↑", "BLEU-1 ↑"], rows), ""]
