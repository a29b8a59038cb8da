"""The paper's §4.1 metrics computed the way the official evaluator computes them, and its JSON layout.

The official repository (DavidYan2001/PVChat, ``evaluate_pvchat_metrics.py``, read, not copied)
scores a result JSON: a list of video entries (or ``{"results": [...]}`` / ``{"data": [...]}``),
each with ``video_path`` and ``qa_pairs`` of ``question``, ``answer`` (the reference),
``generated_answer``, ``is_special`` (an existence question) and ``is_positive``. It

- sorts questions into categories by keywords: identity (``is_special``, or find / identify /
  recognize / present / appear / visible together with video / clip / recording / frame, when no
  other category fits first), clothing, location, emotion, action, other;
- takes existence accuracy on identity questions only, present and absent apart;
- computes corpus BLEU over every record with sacrebleu (``max_ngram_order`` 1, effective order;
  BLEU-1) — BLEU-4 is reported beside it here —, BERTScore F1, and ES / DC 0–5 from an LLM judge,
  with a local lexical heuristic standing in when there is no judge.

Here the heuristics are reported as ``es_heuristic`` / ``dc_heuristic``, never as ES / DC.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from pvchat.errors import InputError
from pvchat.eval.metrics import parse_yes_no

CATEGORIES = ("identity", "clothing", "location", "emotion", "action", "other")
_CLOTHING = ("wear", "wearing", "clothing", "clothes", "outfit", "attire", "dressed")
_LOCATION = ("where", "location", "position", "place", "setting", "scene", "environment", "room")
_EMOTION = ("emotion", "mood", "expression", "feel", "feeling", "display")
_ACTION = ("doing", "action", "activity", "behavior", "engaged", "performing", "happening")
_ID_VERB = re.compile(r"\b(find|identify|recognize|present|appear|visible)\b")
_ID_NOUN = re.compile(r"\b(video|clip|recording|frame)\b")
_GENERIC = ("the person", "this person", "the man", "the woman", "someone", "somebody", "the individual",
            "a person", "a man", "a woman")
_STOP = {"a", "an", "the", "is", "are", "was", "were", "in", "on", "at", "of", "to", "and", "or", "this", "that",
         "video", "clip", "recording"}


def _lower(text: str) -> str:
    return " ".join(str(text or "").split()).lower()


def category(question: str, is_special: bool = False) -> str:
    """The official evaluator's category of a question (keyword containment, in its order)."""
    q = _lower(question)
    if is_special:
        return "identity"
    for name, words in (("clothing", _CLOTHING), ("location", _LOCATION), ("emotion", _EMOTION), ("action", _ACTION)):
        if any(w in q for w in words):
            return name
    if _ID_VERB.search(q) and _ID_NOUN.search(q):
        return "identity"
    return "other"


def presence(answer: str) -> str:
    """``present``, ``absent`` or ``unknown``: what an answer says about the person being there."""
    said = parse_yes_no(answer or "")
    return "unknown" if said is None else "present" if said else "absent"


def bleu(hypotheses: Sequence[str], references: Sequence[str], order: int = 1) -> float | None:
    """Corpus BLEU-``order`` as the official evaluator computes it (sacrebleu, effective order), 0–1."""
    from sacrebleu.metrics import BLEU  # optional (pvchat[eval])

    if not hypotheses:
        return None
    hyps = [" ".join(str(h or "").split()) for h in hypotheses]
    refs = [" ".join(str(r or "").split()) for r in references]
    return BLEU(max_ngram_order=order, effective_order=True).corpus_score(hyps, [refs]).score / 100.0


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+|<[^>\s]+>", _lower(text))


def _lexical_f1(gold: str, pred: str, token: str) -> float:
    person = set(_tokens(token))
    g = [t for t in _tokens(gold) if t not in _STOP and t not in person]
    p = [t for t in _tokens(pred) if t not in _STOP and t not in person]
    if not g or not p:
        return 0.0
    overlap = sum((Counter(g) & Counter(p)).values())
    if not overlap:
        return 0.0
    prec, rec = overlap / len(p), overlap / len(g)
    return 2 * prec * rec / (prec + rec)


def es_heuristic(answer: str, token: str) -> float:
    """The official local stand-in for ES (0–5): names the target 5 (4 with generic wording too),
    another <entity> 0, only generic wording 2, neither 3. A heuristic, not ES."""
    text = _lower(answer)
    if not text:
        return 0.0
    other = re.search(r"<([^>\s]+)>", text)
    token = token.lower()
    if other and token and other.group(0) != token:
        return 0.0
    generic = any(g in text for g in _GENERIC)
    if token and token in text:
        return 4.0 if generic else 5.0
    return 2.0 if generic else 3.0


def dc_heuristic(answer: str, reference: str, token: str) -> float:
    """The official local stand-in for DC (0–5): 0.75 lexical F1 + 0.25 length ratio, −0.4 when
    the answer contradicts the reference on presence, times 5. A heuristic, not DC."""
    if not _lower(answer):
        return 0.0
    score = 0.75 * _lexical_f1(reference, answer, token)
    score += 0.25 * min(1.0, len(_tokens(answer)) / max(len(_tokens(reference)), 1))
    gold, pred = presence(reference), presence(answer)
    if "unknown" not in (gold, pred) and gold != pred:
        score -= 0.4
    return max(0.0, min(1.0, score)) * 5.0


def _accuracy(records: list[dict]) -> dict[str, Any]:
    ident = [r for r in records if r["category"] == "identity"]
    stats = {"n": 0, "correct": 0, "present_n": 0, "present_correct": 0, "absent_n": 0, "absent_correct": 0,
             "pred_unknown": 0}
    for r in ident:
        gold = ("present" if r["is_positive"] else "absent") if isinstance(r.get("is_positive"), bool) \
            else presence(r["reference"])
        if gold == "unknown":
            continue
        pred = presence(r["answer"])
        ok = pred == gold
        stats["n"] += 1
        stats["correct"] += ok
        stats["pred_unknown"] += pred == "unknown"
        stats[f"{gold}_n"] += 1
        stats[f"{gold}_correct"] += ok
    return {"accuracy": stats["correct"] / stats["n"] if stats["n"] else None,
            "present_accuracy": stats["present_correct"] / stats["present_n"] if stats["present_n"] else None,
            "absent_accuracy": stats["absent_correct"] / stats["absent_n"] if stats["absent_n"] else None, **stats}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _summary(records: list[dict], judged: bool) -> dict[str, Any]:
    hyps, refs = [r["answer"] for r in records], [r["reference"] for r in records]
    out = {"n": len(records), "bleu1": bleu(hyps, refs, 1), "bleu4": bleu(hyps, refs, 4),
           "bertscore": _mean(r.get("bertscore") for r in records)}
    if judged:
        out["es"], out["dc"] = _mean(r.get("es") for r in records), _mean(r.get("dc") for r in records)
    else:
        out["es_heuristic"] = _mean(r.get("es_heuristic") for r in records)
        out["dc_heuristic"] = _mean(r.get("dc_heuristic") for r in records)
    return out


def official_metrics(rows: list[dict[str, Any]], judged: bool = False) -> dict[str, Any]:
    """The official evaluator's numbers over rows with ``question``, ``reference``, ``answer``,
    ``subject`` (the target token is ``<subject>``; the first of a pair), ``is_special``,
    ``is_positive`` and, when measured, ``bertscore`` / ``es`` / ``dc`` per row. Sets
    ``row["category"]`` and, without a judge, ``es_heuristic`` / ``dc_heuristic``."""
    for r in rows:
        r["category"] = category(r["question"], bool(r.get("is_special")))
        if not judged:
            token = f"<{str(r['subject']).split('+')[0]}>"
            r["es_heuristic"] = es_heuristic(r["answer"], token)
            r["dc_heuristic"] = dc_heuristic(r["answer"], r["reference"], token)
    out = {"accuracy": _accuracy(rows), **_summary(rows, judged),
           "by_category": {c: _summary([r for r in rows if r["category"] == c], judged)
                           for c in CATEGORIES if any(r["category"] == c for r in rows)},
           "es_dc": "judge" if judged else "heuristic (the official local fallback; not ES/DC)"}
    return out


# ------------------------------------------------------------------------------- the JSON layout
def to_official(rows: list[dict[str, Any]], root: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows as the official evaluator's result JSON: one entry per clip with its ``qa_pairs``."""
    entries: dict[str, dict] = {}
    for r in rows:
        path = str(Path(root) / r["clip"]) if root is not None else r["clip"]
        entry = entries.setdefault(path, {"video_path": path, "qa_pairs": []})
        entry["qa_pairs"].append({
            "question": r["question"], "answer": r["reference"], "generated_answer": r.get("answer", ""),
            "is_special": r["type"] == "existence" if "type" in r else bool(r.get("is_special")),
            "is_positive": r["label"] if r.get("label") is not None else r.get("is_positive"),
            "id": r.get("id"), "subject": r.get("subject"),
        })
    return list(entries.values())


def read_official(data: Any, source: str = "result JSON") -> list[dict[str, Any]]:
    """Rows (``clip``, ``question``, ``reference``, ``answer``, ``is_special``, ``is_positive``,
    ``subject``) from an official result JSON already parsed; InputError for another layout."""
    if isinstance(data, dict):
        entries = data.get("results") if isinstance(data.get("results"), list) else data.get("data")
    else:
        entries = data
    if not isinstance(entries, list):
        raise InputError(f"{source}: not the official result layout (a list of entries, or results/data)")
    rows = []
    for v, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("qa_pairs", entry.get("QA")), list):
            raise InputError(f"{source}: entry {v} has no qa_pairs list")
        for k, qa in enumerate(entry.get("qa_pairs", entry.get("QA"))):
            if not isinstance(qa, dict) or "question" not in qa:
                raise InputError(f"{source}: entry {v}, qa_pairs[{k}] has no question")
            is_positive = qa.get("is_positive", entry.get("is_positive"))
            question = " ".join(str(qa["question"]).split())
            token = re.search(r"<([^<>\s]+)>", question)
            rows.append({
                "id": qa.get("id") or f"{v}:{k}", "clip": str(entry.get("video_path", "")), "question": question,
                "reference": " ".join(str(qa.get("answer", qa.get("gold_answer", ""))).split()),
                "answer": " ".join(str(qa.get("generated_answer", qa.get("prediction", ""))).split()),
                "is_special": bool(qa.get("is_special", False)),
                "is_positive": is_positive if isinstance(is_positive, bool) else None,
                "subject": qa.get("subject") or (token.group(1) if token else ""),
            })
    return rows
