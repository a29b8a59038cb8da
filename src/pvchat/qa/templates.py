"""The QA templates of PVChat's supplementary (Tables 2–6), kept as JSON data in ``templates/``.

- ``existence_1.json``: supp. Table 2 (yes) and Table 3 (no), 25 questions with 25 answers each.
- ``existence_2.json``: supp. Table 4 (both present) and Table 5 (one present / neither); Table 5
  prints 15 rows, rows 16–25 are ours in the same style.
- ``existence_3.json``: the same pattern for three people (all / two / one / none), ours.
- ``descriptive.json``: supp. Table 6, action, appearance (clothing) and location questions.
- ``captions.json``: sentence patterns for the ``facts``/``rules`` captioners (ours).

Placeholders: ``<sks>`` for one person; ``<sks1>``, ``<sks2>``, ``<sks3>`` for several, filled with
subject tokens such as ``<Anna>`` by :func:`fill`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping, Sequence

from pvchat.errors import ConfigError

QA_TYPES = ("existence", "appearance", "action", "location")
_PLACEHOLDER = re.compile(r"<sks([123]?)>")


@lru_cache(maxsize=None)
def load_json(name: str) -> Any:
    """One JSON file of ``pvchat/qa/templates`` (cached; treat the result as read-only)."""
    try:
        text = resources.files("pvchat.qa").joinpath("templates", name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no QA template file {name!r} in pvchat/qa/templates") from None
    return json.loads(text)


@dataclass(frozen=True)
class ExistenceTable:
    """Existence questions for ``n`` subjects and their answers per presence pattern.

    ``answers`` keys: one subject ``present``/``absent``; two ``all``/``first_only``/``none``;
    three ``all``/``first_two``/``first_only``/``none``. In a mixed pattern the present subjects
    fill the first placeholders (``<sks1>`` …) and the absent ones the rest.
    """

    n: int
    source: str
    questions: tuple[str, ...]
    answers: Mapping[str, tuple[str, ...]]
    paper_rows: Mapping[str, int]

    def key_for(self, num_present: int) -> str:
        """The answer set for ``num_present`` of ``n`` subjects present."""
        if self.n == 1:
            return "present" if num_present else "absent"
        if num_present == self.n:
            return "all"
        if num_present == 0:
            return "none"
        return {1: "first_only", 2: "first_two"}[num_present]


@lru_cache(maxsize=None)
def existence_table(n: int) -> ExistenceTable:
    """The existence templates for ``n`` ∈ {1, 2, 3} subjects (supp. Tables 2–5 and ours)."""
    if n not in (1, 2, 3):
        raise ConfigError(f"existence questions cover 1 to 3 subjects, got {n}")
    d = load_json(f"existence_{n}.json")
    return ExistenceTable(
        n=n,
        source=d["source"],
        questions=tuple(d["questions"]),
        answers={k: tuple(v) for k, v in d["answers"].items()},
        paper_rows=dict(d["paper_rows"]),
    )


@dataclass(frozen=True)
class DescriptiveQuestion:
    """One row of supp. Table 6: ``type`` ∈ {action, appearance, location}."""

    index: int
    type: str
    question: str


@lru_cache(maxsize=None)
def descriptive_questions(include_duplicates: bool = False) -> tuple[DescriptiveQuestion, ...]:
    """Supp. Table 6 rows; row 12 (a repeat of row 8) only with ``include_duplicates``."""
    rows = load_json("descriptive.json")["rows"]
    return tuple(
        DescriptiveQuestion(int(r["index"]), r["type"], r["question"])
        for r in rows
        if include_duplicates or "duplicate_of" not in r
    )


def questions_of(qa_type: str) -> tuple[DescriptiveQuestion, ...]:
    """The Table 6 questions of one type."""
    if qa_type not in QA_TYPES[1:]:
        raise ConfigError(f"unknown descriptive question type {qa_type!r}; choose one of: {', '.join(QA_TYPES[1:])}")
    return tuple(q for q in descriptive_questions() if q.type == qa_type)


def generic_subject() -> str:
    """Words that stand for ``<sks>`` when a captioner is asked the question (``"the person"``)."""
    return load_json("descriptive.json")["generic_subject"]


def fill(text: str, tokens: Sequence[str]) -> str:
    """Replace ``<sks>`` (or ``<sks1>``…) with ``tokens`` in order: ``tokens[0]`` for ``<sks>``/``<sks1>``.

    Raises ConfigError when a placeholder has no token.
    """

    def sub(m: re.Match) -> str:
        k = int(m.group(1) or 1) - 1
        if k >= len(tokens):
            raise ConfigError(f"template {text!r} needs {k + 1} subject tokens, got {len(tokens)}")
        return tokens[k]

    return _PLACEHOLDER.sub(sub, text)


def placeholders(text: str) -> list[str]:
    """The placeholders in ``text`` in order of appearance."""
    return [m.group(0) for m in _PLACEHOLDER.finditer(text)]
