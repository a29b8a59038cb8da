"""Question–answer pairs of all four types from a world clip's ground truth, and their scoring.

Used to align a base on the offline world (``pvchat pretrain``: every person there has a token)
and to score answers about held-out clips against the same truth. Answers are short and
regular, the way a base model should say them::

    existence   Is <A> in this video?             Yes, <A> is in this video. / No, <A> is not in this video.
    appearance  What is <A> wearing?              <A> is wearing a red striped sweater and black trousers.
    action      What is <A> doing?                <A> is waving a hand.
    location    Where is <A> relative to <B>?     <A> is to the left of <B>.
                (two people, one named)           <A> is to the right of the other person.

With ``generic`` a one-person clip also gets the descriptive questions about "the person", so
the base can be asked before anyone is personalised (the baseline of the benchmark).
"""

from __future__ import annotations

import random
import re
from typing import Mapping

from pvchat.data import QARecord

QUESTIONS: dict[str, tuple[str, ...]] = {
    "existence": ("Is {a} in this video?", "Does {a} appear in this video?", "Can you see {a} in this video?"),
    "appearance": ("What is {a} wearing?", "Describe what {a} is wearing.", "What clothes does {a} have on?"),
    "action": ("What is {a} doing?", "What is {a} doing in this video?", "Describe the action of {a}."),
    "location": ("Where is {a} relative to {b}?", "Is {a} to the left or to the right of {b}?"),
}
OTHER = "the other person"  # {b} of a location question about a clip of two, asked without naming the other


def existence_answer(a: str, present: bool) -> str:
    return f"Yes, {a} is in this video." if present else f"No, {a} is not in this video."


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def world_clip_qa(truth: dict, names: Mapping[str, str], rng: random.Random, absent: list[str] = (),
                  generic: bool = False, types: tuple[str, ...] = tuple(QUESTIONS)) -> list[QARecord]:
    """QA about one world clip.

    Args:
        truth: the clip's ground truth (``Rendered.truth``).
        names: world person id → subject name (people without one are strangers).
        rng: draws the question wording.
        absent: subject names not in the clip, each asked about once ("No, …").
        generic: add "the person" descriptive questions when exactly one person is in the clip.
        types: which question types to make.
    """
    out: list[QARecord] = []
    people = [p for p in truth["people"]]
    token = {p["id"]: f"<{names[p['id']]}>" for p in people if p["id"] in names}

    def ask(kind: str, **who) -> str:
        return rng.choice(QUESTIONS[kind]).format(**who)

    for p in people:
        a = token.get(p["id"])
        if a is None:
            continue
        if "existence" in types:
            out.append(QARecord("existence", ask("existence", a=a), existence_answer(a, True), True))
        if "appearance" in types:
            out.append(QARecord("appearance", ask("appearance", a=a), f"{a} is wearing {p['wearing']}."))
        if "action" in types:
            out.append(QARecord("action", ask("action", a=a), f"{a} is {p['action_phrase']}."))
        if "location" in types:
            for r in p.get("relations", []):
                b = token.get(r["other"])
                if b is not None and r.get("horizontal"):
                    out.append(QARecord("location", ask("location", a=a, b=b), f"{a} is {r['horizontal']} {b}."))
                if len(people) == 2 and r.get("horizontal"):  # a person learned alone, beside someone
                    out.append(QARecord("location", ask("location", a=a, b=OTHER), f"{a} is {r['horizontal']} {OTHER}."))
    if "existence" in types:
        for name in absent:
            a = f"<{name}>"
            out.append(QARecord("existence", ask("existence", a=a), existence_answer(a, False), False))
    if generic and len(people) == 1:
        p, a = people[0], "the person"
        if "appearance" in types:
            out.append(QARecord("appearance", ask("appearance", a=a), f"{_cap(a)} is wearing {p['wearing']}."))
        if "action" in types:
            out.append(QARecord("action", ask("action", a=a), f"{_cap(a)} is {p['action_phrase']}."))
    return out


# ------------------------------------------------------------------------------- scoring
def _has(text: str, phrase: str) -> bool:
    """Whole-word, case-insensitive containment (so "shirt" is not found in "t-shirt")."""
    return re.search(rf"(?<![\w-]){re.escape(phrase.lower())}(?![\w-])", text.lower()) is not None


def clothing_correct(answer: str, outfit: Mapping) -> bool:
    """The answer names the top garment's colour and kind (ours; the benchmark's clothing score)."""
    return _has(answer, outfit["top_colour"]) and _has(answer, outfit["top"])


ACTION_WORDS = {"standing": "standing", "walking_left": "walking to the left", "walking_right": "walking to the right",
                "waving": "waving", "nodding": "nodding", "shaking_head": "shaking", "jumping": "jumping",
                "sitting_down": "sitting down", "talking": "talking"}


def action_correct(answer: str, action: str) -> bool:
    """The answer names the clip's action (its key words), and no other action."""
    said = {k for k, words in ACTION_WORDS.items() if _has(answer, words)}
    if "walking_left" in said or "walking_right" in said:
        said.discard("standing")
    return said == {action}


def location_correct(answer: str, horizontal: str) -> bool:
    """Left/right as the truth says (``"to the left of"`` / ``"to the right of"``), not both."""
    left, right = _has(answer, "left"), _has(answer, "right")
    return (left and not right) if "left" in horizontal else (right and not left) if "right" in horizontal else False
