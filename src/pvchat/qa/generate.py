"""Question–answer pairs for one clip: existence from labels, the rest from a captioner + rewrite.

Paper §3.2 ("Question-Answer Pairs Generation") and §3.4: four types, existence, appearance,
action and location. Stage 1 trains on the first frame with existence + appearance questions;
stage 2 on all four. Negatives (a subject absent) get "No …" existence answers and no questions
about the absent subject's looks, actions or place.

Counts (:class:`QARecipe`): the official generator gives every clip 15 existence pairs (15 of the
25 templates) and every positive clip 15 descriptive pairs (5 per type), which reproduces the
paper's ~1,455 pairs over ~81 clips per subject (16 positive, 65 negative; pvchat-official.md §5.4).
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Sequence

from pvchat import recipes
from pvchat.errors import ConfigError, InputError, unknown_choice
from pvchat.qa.captioners import Captioner, CaptionRequest, make_captioner
from pvchat.qa.describe import MissingFactError
from pvchat.qa.facts import ClipFacts, subject_token
from pvchat.qa.rewrite import Rewriter, make_rewriter
from pvchat.qa.templates import QA_TYPES, existence_table, fill, generic_subject, questions_of

STAGE_TYPES = {1: ("existence", "appearance"), 2: QA_TYPES}


@dataclass(frozen=True)
class QAPair:
    """One training/evaluation pair.

    Attributes:
        type: ``existence``, ``appearance``, ``action`` or ``location``.
        question, answer: with subject tokens (``<Anna>``) in place of the placeholders.
        label: existence only: is any subject asked about in the clip; None for the other types.
        subjects: the subject names the question is about, in the question's order.
        presence: existence only: the label of each subject in ``subjects``.
        source: provenance, e.g. ``existence_2:q4/first_only:a7`` or ``table6:row6``.
    """

    type: str
    question: str
    answer: str
    label: bool | None
    subjects: tuple[str, ...]
    presence: tuple[bool, ...] = ()
    source: str = ""

    @property
    def is_special(self) -> bool:
        """The official data's flag for existence (yes/no) pairs."""
        return self.type == "existence"

    def to_manifest(self) -> dict[str, Any]:
        """The fields of a manifest QA record (:class:`pvchat.data.QARecord`)."""
        return {"type": self.type, "question": self.question, "answer": self.answer, "label": self.label}

    def to_dict(self) -> dict[str, Any]:
        """Everything, provenance included (for inspection and :func:`qa_from_record`)."""
        d = asdict(self)
        d["subjects"], d["presence"] = list(self.subjects), list(self.presence)
        d["is_special"] = self.is_special
        return d


@dataclass(frozen=True)
class QARecipe:
    """How many pairs per clip (the shipped ones: ``pvchat/recipes/qa/NAME.yaml``).

    Attributes:
        existence: joint existence pairs per clip (about all subjects at once, supp. Tables 2–5).
        existence_each: extra one-subject existence pairs per subject when there are several.
        appearance, action, location: pairs per present subject (Table 6 has 5 of each type).
        pairing: ``random`` draws question and answer rows independently (the official script);
            ``index`` keeps the tables' rows together.
        decision_first: open every existence answer that is a plain yes or no (all asked people
            present, or none) with "Yes, " / "No, " when its table row does not already. The
            tables phrase the decision anywhere ("<sks> is not shown."); a small LM trained from
            scratch learns a decision it must make at the first answer token far more reliably.
    """

    existence: int = 15
    existence_each: int = 0
    appearance: int = 5
    action: int = 5
    location: int = 5
    pairing: str = "random"
    decision_first: bool = False

    def __post_init__(self) -> None:
        for k in ("existence", "existence_each", "appearance", "action", "location"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 0:
                raise ConfigError(f"QA recipe: {k} must be an integer >= 0, got {getattr(self, k)!r}")
        if self.pairing not in ("random", "index"):
            raise unknown_choice("QA answer pairing", self.pairing, ("random", "index"))
        if not isinstance(self.decision_first, bool):
            raise ConfigError(f"QA recipe: decision_first must be true or false, got {self.decision_first!r}")

    def count(self, qa_type: str) -> int:
        return getattr(self, qa_type)

    def per_clip(self, stage: int, num_subjects: int = 1, num_present: int = 1) -> int:
        """Pairs :func:`make_qa` makes for one clip."""
        types = stage_types(stage)
        n = self.existence + (self.existence_each * num_subjects if num_subjects > 1 else 0)
        return n + num_present * sum(self.count(t) for t in types if t != "existence")

    def total(self, positives: int, negatives: int, stage: int = 2) -> int:
        """Pairs for one subject over ``positives`` + ``negatives`` single-subject clips."""
        return positives * self.per_clip(stage, 1, 1) + negatives * self.per_clip(stage, 1, 0)


# the shipped recipes (pvchat/recipes/qa/*.yaml), by name; paper scale: 16 positive + 65 negative
# clips → 81 × 15 + 16 × 15 = 1,455 pairs (≈18 per clip)
RECIPES: dict[str, QARecipe] = recipes.load_all("qa", QARecipe)


def get_recipe(recipe: str | os.PathLike | QARecipe) -> QARecipe:
    """A recipe by name (``paper``, ``demo``, ``tiny``), by YAML path, or as given."""
    if isinstance(recipe, str) and recipe in RECIPES:
        return RECIPES[recipe]
    return recipes.load("qa", recipe, QARecipe)


def stage_types(stage: int) -> tuple[str, ...]:
    """QA types of a training stage (paper §3.4)."""
    if stage not in STAGE_TYPES:
        raise ConfigError(f"stage must be 1 or 2, got {stage!r}")
    return STAGE_TYPES[stage]


def as_rng(rng: random.Random | int | None) -> random.Random:
    """A ``random.Random`` from a generator, a seed, or None (seed 0: reproducible by default)."""
    if isinstance(rng, random.Random):
        return rng
    if rng is None or isinstance(rng, int):
        return random.Random(rng or 0)
    raise ConfigError(f"rng must be a random.Random or an int seed, got {type(rng).__name__}")


def _draw(n: int, pool: int, rng: random.Random) -> list[int]:
    """``n`` indices of ``range(pool)``: without replacement, starting over when ``n > pool``."""
    out: list[int] = []
    while len(out) < n:
        out += rng.sample(range(pool), min(pool, n - len(out)))
    return out


def decision_first(answer: str, present: bool) -> str:
    """``answer`` opened with "Yes, " or "No, " unless it already starts with yes / no."""
    first = answer.split(maxsplit=1)[0].strip(",.!").lower() if answer.strip() else ""
    if first in ("yes", "no"):
        return answer
    keep_case = first == "i" or first.startswith(("i'", "<"))
    return ("Yes, " if present else "No, ") + (answer if keep_case else answer[:1].lower() + answer[1:])


def existence_pairs(
    names: Sequence[str], present: Sequence[bool], n: int, rng: random.Random, pairing: str = "random",
    decided: bool = False,
) -> list[QAPair]:
    """``n`` existence pairs about ``names`` (1–3 subjects) with labels ``present``.

    Questions name the subjects in the given order; in a mixed answer the present subjects fill
    the first placeholders ("<sks1> is present, but <sks2> is absent").
    """
    table = existence_table(len(names))
    tokens = [subject_token(s) for s in names]
    key = table.key_for(sum(present))
    answers = table.answers[key]
    order = [t for t, p in zip(tokens, present) if p] + [t for t, p in zip(tokens, present) if not p]
    q_idx = _draw(n, len(table.questions), rng)
    a_idx = q_idx if pairing == "index" else _draw(n, len(answers), rng)
    if decided and (all(present) or not any(present)):  # a plain yes / no (recipe.decision_first)
        answers = [decision_first(a, all(present)) for a in answers]
    return [
        QAPair("existence", fill(table.questions[q], tokens), fill(answers[a], order), any(present), tuple(names),
               tuple(bool(p) for p in present), f"existence_{table.n}:q{q + 1}/{key}:a{a + 1}")
        for q, a in zip(q_idx, a_idx)
    ]


def referent_for(clip: ClipFacts, i: int) -> str:
    """The generic words a captioner is asked about: "the person", or "the person on the left" …
    when others are visible and the position (or, failing that, the clothing) tells them apart."""
    base = generic_subject()
    visible = clip.visible()
    if len(visible) == 1:
        return base
    p = clip.people[i]
    if p.position and sum(clip.people[j].position == p.position for j in visible) == 1:
        return f"{base} {'in the centre' if p.position == 'centre' else 'on the ' + p.position}"
    def main_garments(j: int) -> str | None:
        c = clip.people[j].clothing
        return c.split(",")[0].strip() if c else None

    mine = main_garments(i)
    if mine and sum(main_garments(j) == mine for j in visible) == 1:
        return f"{base} in {mine}"
    return base


def make_qa(
    facts: ClipFacts,
    subjects: Sequence[str],
    stage: int = 2,
    rng: random.Random | int | None = None,
    recipe: str | QARecipe = "paper",
    captioner: str | Captioner = "facts",
    rewriter: str | Rewriter = "rules",
    on_missing: str = "raise",
    **counts: int,
) -> list[QAPair]:
    """All QA pairs of one clip for 1–3 subjects.

    Args:
        facts: who is in the clip (labels) and what they look like / do / where (for the captioner).
        subjects: the subject names in play (1 to 3), e.g. ``["Anna"]`` or ``["Anna", "Ben"]``.
        stage: 1 (existence + appearance, first frame) or 2 (all four types), paper §3.4.
        rng: a ``random.Random`` or a seed; the same seed gives the same pairs.
        recipe: a :class:`QARecipe`, its name in :data:`RECIPES` or a YAML path; ``counts`` override its fields
            (``existence=4, location=0`` …).
        captioner: a backend name (built with no arguments) or an instance.
        rewriter: a backend name or an instance; puts ``<Name>`` where the caption says "she".
        on_missing: ``raise`` (default) or ``skip`` a question whose facts are unknown (e.g. no
            clothing for a person), which then yields fewer pairs.

    Returns:
        Existence pairs first (joint, then per subject), then per present subject its appearance,
        action and location pairs (only the stage's types).
    """
    if not 1 <= len(subjects) <= 3:
        raise InputError(f"QA pairs cover 1 to 3 subjects, got {len(subjects)}")
    if len(set(subjects)) != len(subjects):
        raise InputError(f"subjects repeat: {list(subjects)}")
    tokens = {s: subject_token(s) for s in subjects}
    rcp = get_recipe(recipe)
    if counts:
        unknown = set(counts) - {"existence", "existence_each", "appearance", "action", "location", "pairing"}
        if unknown:
            raise ConfigError(f"unknown QA count(s) {sorted(unknown)}")
        rcp = replace(rcp, **counts)
    types = stage_types(stage)
    if on_missing not in ("raise", "skip"):
        raise unknown_choice("on_missing policy", on_missing, ("raise", "skip"))
    gen = as_rng(rng)
    cap = make_captioner(captioner) if isinstance(captioner, str) else captioner
    rew = make_rewriter(rewriter) if isinstance(rewriter, str) else rewriter

    present = [facts.is_present(s) for s in subjects]
    pairs = existence_pairs(subjects, present, rcp.existence, gen, rcp.pairing, rcp.decision_first)
    if len(subjects) > 1:
        for s, p in zip(subjects, present):
            pairs += existence_pairs([s], [p], rcp.existence_each, gen, rcp.pairing, rcp.decision_first)

    for s in subjects:
        i = facts.index_of(s)
        if i is None:  # absent: nothing to describe
            continue
        referent = referent_for(facts, i)
        for qa_type in types[1:]:
            rows = questions_of(qa_type)
            for k in _draw(rcp.count(qa_type), len(rows), gen):
                row = rows[k]
                request = CaptionRequest(
                    qa_type=qa_type, question=fill(row.question, [referent]), row=row.index, clip=facts,
                    person=i, referent=referent, tokens=tokens, first_frame=stage == 1,
                )
                try:
                    caption = cap.caption(request, gen)
                except MissingFactError:
                    if on_missing == "skip":
                        continue
                    raise
                answer = rew.rewrite(caption, tokens[s], position=facts.people[i].position)
                pairs.append(QAPair(qa_type, fill(row.question, [tokens[s]]), answer,
                                    None, (s,), (), f"table6:row{row.index}"))
    return pairs


def qa_for_clips(
    clips: Sequence[ClipFacts],
    subjects: Sequence[str],
    stage: int = 2,
    seed: int = 0,
    recipe: str | QARecipe = "paper",
    captioner: str | Captioner = "facts",
    rewriter: str | Rewriter = "rules",
    on_missing: str = "raise",
    **counts: int,
) -> list[list[QAPair]]:
    """:func:`make_qa` for each clip, each with its own generator seeded from ``seed`` and the
    clip's id (or index), so a clip's pairs do not depend on which other clips are in the set."""
    cap = make_captioner(captioner) if isinstance(captioner, str) else captioner
    rew = make_rewriter(rewriter) if isinstance(rewriter, str) else rewriter
    return [
        make_qa(c, subjects, stage, random.Random(f"{seed}:{c.clip_id if c.clip_id is not None else k}"), recipe,
                cap, rew, on_missing, **counts)
        for k, c in enumerate(clips)
    ]


def qa_to_records(pairs: Sequence[QAPair]) -> list[dict[str, Any]]:
    """Plain dicts (JSONL-ready)."""
    return [p.to_dict() for p in pairs]


def qa_from_record(d: Mapping[str, Any]) -> QAPair:
    """The inverse of :meth:`QAPair.to_dict`."""
    try:
        return QAPair(d["type"], d["question"], d["answer"], d.get("label"), tuple(d["subjects"]),
                      tuple(d.get("presence", ())), d.get("source", ""))
    except KeyError as e:
        raise InputError(f"QA record lacks field {e.args[0]!r}") from None
