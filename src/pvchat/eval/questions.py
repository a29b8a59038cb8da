"""Which of the four question types a question is (existence, appearance, action, location).

Answerers that see only the question text (the face baseline) use this. The paper's templates
(supp. Tables 2–6, :mod:`pvchat.qa.templates`) are matched exactly once subject tokens are
normalised; other wording falls back to keywords.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pvchat.qa.templates import QA_TYPES, descriptive_questions, existence_table

_TOKEN = re.compile(r"<[^<>\s]+>")
_KEYWORDS = (
    ("appearance", re.compile(r"\b(wear\w*|outfit|cloth\w*|attire|dressed|appearance|look like|hair)\b", re.I)),
    ("location", re.compile(r"\b(where|position\w*|locat\w*|part of the scene|relative to|found in)\b", re.I)),
    ("action", re.compile(r"\b(doing|activit\w*|action\w*|movement\w*|behaviou?r|perform\w*|engaged)\b", re.I)),
)


def _norm(text: str) -> str:
    return " ".join(_TOKEN.sub("<sks>", text).lower().split())


@lru_cache(maxsize=1)
def _template_types() -> dict[str, str]:
    table: dict[str, str] = {}
    for n in (1, 2, 3):
        for q in existence_table(n).questions:
            table[_norm(re.sub(r"<sks\d>", "<sks>", q))] = "existence"
    for row in descriptive_questions():
        table.setdefault(_norm(row.question), row.type)
    return table


def question_type(question: str) -> str:
    """One of :data:`pvchat.qa.templates.QA_TYPES` for a question with subject tokens (``<Anna>``)."""
    found = _template_types().get(_norm(question))
    if found is not None:
        return found
    for qa_type, pattern in _KEYWORDS:
        if pattern.search(question):
            return qa_type
    return QA_TYPES[0]
