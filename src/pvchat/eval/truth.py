"""Every question type scored against the world's ground truth (our metric, not the paper's).

The paper's open-question metrics (BLEU, BERTScore, ES, DC) compare wording; a model that answers
"Yes, <Robin> is in this video." to "What is <Robin> wearing?" still scores on them. Here each
answer is right or wrong by what was rendered:

- existence: the yes/no read from the answer equals the label (present and absent counted apart);
- appearance: names the colour and the kind of the top garment (:func:`pvchat.qa.world_qa.clothing_correct`);
- action: names the clip's action and no other (:func:`pvchat.qa.world_qa.action_correct`);
- location: with other people in the clip, every "left/right of <Name>" the answer states is
  true (:func:`pvchat.qa.world_qa.location_correct`), and it states at least one; alone, it
  names the frame third (left / centre / right) the person is in, and no other.

Accuracies come per group (the person present, strangers, look-alikes), per number of people in
the clip (1, 2, 3), per kind of subject (one person, pair, triple) and, for present people, with
the face visible vs hardly visible.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from pvchat.eval.metrics import parse_yes_no
from pvchat.qa.world_qa import action_correct, clothing_correct, location_correct

TYPES = ("existence", "appearance", "action", "location")
_RELATION = re.compile(r"\b(left|right) of (<[^<>\s]+>|[A-Z][\w-]*)")
_THIRDS = {"left": re.compile(r"\bleft\b", re.I), "right": re.compile(r"\bright\b", re.I),
           "centre": re.compile(r"\b(centre|center|middle)\b", re.I)}


def _location_correct(answer: str, truth: dict[str, Any]) -> bool:
    relations = truth.get("relations") or []
    if relations:
        stated = [(side, who.strip("<>")) for side, who in _RELATION.findall(answer)]
        known = {r["other_name"]: r["horizontal"] for r in relations}
        checked = [(side, who) for side, who in stated if who in known]
        if not checked:
            return False
        return all(location_correct(f"{side}", known[who]) for side, who in checked)
    said = {k for k, pat in _THIRDS.items() if pat.search(answer)}
    allowed = {truth["position"]} | ({truth.get("position_start"), truth.get("position_end")} if truth.get("moves") else set())
    return bool(said) and said <= allowed


def correct(row: dict[str, Any], answer: str) -> bool | None:
    """Is ``answer`` right about the question ``row`` (a benchmark question with ``truth``)?

    None when the row carries no ground truth for its type (an old benchmark, or a person the
    question names who is not in the clip).
    """
    kind, truth = row["type"], row.get("truth") or {}
    if kind == "existence":
        if row.get("label") is None:
            return None
        return parse_yes_no(answer) == bool(row["label"])
    if not truth:
        return None
    if kind == "appearance":
        return clothing_correct(answer, truth["outfit"])
    if kind == "action":
        return action_correct(answer, truth["action"])
    if kind == "location":
        return _location_correct(answer, truth)
    return None


def _acc(rows: Iterable[dict]) -> dict[str, Any]:
    vals = [r["correct"] for r in rows if r.get("correct") is not None]
    return {"n": len(vals), "accuracy": (sum(vals) / len(vals)) if vals else None}


def truth_scores(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Score every row (sets ``row["correct"]``) and aggregate; rows need ``answer``."""
    for r in rows:
        r["correct"] = correct(r, r["answer"])
    ex = [r for r in rows if r["type"] == "existence"]
    present = [r for r in ex if r.get("label")]
    absent = [r for r in ex if r.get("label") is False]
    out: dict[str, Any] = {
        "existence": {
            "all": _acc(ex), "present": _acc(present), "absent": _acc(absent),
            "absent_strangers": _acc(r for r in absent if r["group"] == "stranger"),
            "absent_lookalikes": _acc(r for r in absent if r["group"] == "hard_negative"),
            "present_face_visible": _acc(r for r in present if not (r.get("truth") or {}).get("face_hardly_visible")),
            "present_face_hardly_visible": _acc(r for r in present if (r.get("truth") or {}).get("face_hardly_visible")),
        },
        **{t: _acc(r for r in rows if r["type"] == t) for t in TYPES[1:]},
    }
    out["by_group"] = {g: {t: _acc(r for r in rows if r["group"] == g and r["type"] == t) for t in TYPES}
                       for g in dict.fromkeys(r["group"] for r in rows)}
    out["by_people_in_clip"] = {str(n): {t: _acc(r for r in rows if r.get("num_people") == n and r["type"] == t)
                                         for t in TYPES}
                                for n in sorted({r.get("num_people") for r in rows if r.get("num_people")})}
    out["by_unit"] = {u: {t: _acc(r for r in rows if r.get("unit", "single") == u and r["type"] == t) for t in TYPES}
                      for u in dict.fromkeys(r.get("unit", "single") for r in rows)}
    out["by_subject"] = {s: _acc(r for r in rows if r["subject"] == s) for s in dict.fromkeys(r["subject"] for r in rows)}
    return out
