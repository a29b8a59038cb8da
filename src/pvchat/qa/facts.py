"""What is true about one clip: who is in it, where, doing what, wearing what.

Existence answers come from the presence labels here (paper §3.2: positives and hard negatives);
appearance, action and location answers come from a captioner (:mod:`pvchat.qa.captioners`),
which may read these facts (the ``facts`` backend, e.g. the offline world's ground truth) or
derive them from measurements (the ``rules`` backend) or from pixels (``vlm``, ``openai``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

from pvchat.errors import InputError
from pvchat.model.prompt import NAME_PATTERN

HORIZONTAL = ("left", "centre", "right")
DEPTH = ("front", "behind")
GENDERS = ("male", "female")
AGES = ("young", "middle-aged", "elderly")
RELATIONS = ("left of", "right of", "in front of", "behind", "next to")
_ALIASES = {"center": "centre", "middle": "centre", "foreground": "front", "back": "behind",
            "background": "behind", "middle_aged": "middle-aged", "middle aged": "middle-aged",
            "man": "male", "woman": "female", "old": "elderly"}


def subject_token(name: str) -> str:
    """``"Anna"`` → ``"<Anna>"`` after checking the name (1–32 letters, digits, ``_``/``-``)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InputError(f"invalid subject name {name!r}: use 1-32 letters, digits, '_' or '-', starting with a letter")
    return f"<{name}>"


def _norm(value: str | None, allowed: Sequence[str], what: str) -> str | None:
    if value is None or value == "":
        return None
    v = _ALIASES.get(str(value).strip().lower(), str(value).strip().lower())
    if v not in allowed:
        raise InputError(f"invalid {what} {value!r}; choose one of: {', '.join(allowed)}")
    return v


@dataclass(frozen=True)
class Relation:
    """``relation`` (one of :data:`RELATIONS`) of this person to ``other`` (an index in the clip)."""

    relation: str
    other: int


@dataclass(frozen=True)
class PersonFacts:
    """One person in a clip.

    Attributes:
        name: the subject's name (``"Anna"`` → token ``<Anna>``), or None for a stranger.
        present: False records a labelled absence (a subject known not to be in the clip).
        gender: ``male``/``female`` or None; age: ``young``/``middle-aged``/``elderly`` or None.
        position: ``left``/``centre``/``right`` in the frame; depth: ``front``/``behind`` or None.
        x: horizontal centre in [0, 1] (used to derive relations when ``relations`` is empty).
        relations: explicit relative positions to the other people of the clip.
        action: gerund phrase, e.g. ``"waving a hand"``.
        clothing: noun phrase, e.g. ``"a red coat and blue jeans"``.
        appearance: other visible features, e.g. ``"short grey hair"``.
        movement: how the position changes, e.g. ``"walks from the left to the centre"`` (Table 6 row 15).
    """

    name: str | None = None
    present: bool = True
    gender: str | None = None
    age: str | None = None
    position: str | None = None
    depth: str | None = None
    x: float | None = None
    relations: tuple[Relation, ...] = ()
    action: str | None = None
    clothing: str | None = None
    appearance: str | None = None
    movement: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            subject_token(self.name)
        object.__setattr__(self, "gender", _norm(self.gender, GENDERS, "gender"))
        object.__setattr__(self, "age", _norm(self.age, AGES, "age group"))
        object.__setattr__(self, "position", _norm(self.position, HORIZONTAL, "position"))
        object.__setattr__(self, "depth", _norm(self.depth, DEPTH, "depth"))
        if self.x is None and self.position is not None:
            object.__setattr__(self, "x", {"left": 1 / 6, "centre": 0.5, "right": 5 / 6}[self.position])
        if self.position is None and self.x is not None:
            object.__setattr__(self, "position", position_word(self.x))
        for r in self.relations:
            if r.relation not in RELATIONS:
                raise InputError(f"invalid relation {r.relation!r}; choose one of: {', '.join(RELATIONS)}")


@dataclass(frozen=True)
class ClipFacts:
    """Everyone in one clip (strangers included) plus labelled absences.

    A subject counts as present when a person with its name has ``present=True``; a subject that
    is not listed at all counts as absent.
    """

    people: tuple[PersonFacts, ...] = ()
    scene: str | None = None
    clip_id: str | None = None
    video: str | None = None
    measurements: tuple["PersonMeasurements | None", ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "people", tuple(self.people))
        object.__setattr__(self, "measurements", tuple(self.measurements))
        if self.measurements and len(self.measurements) != len(self.people):
            raise InputError(f"clip {self.clip_id or ''}: {len(self.measurements)} measurements for {len(self.people)} people")
        names = [p.name for p in self.people if p.name is not None]
        if len(names) != len(set(names)):
            raise InputError(f"clip {self.clip_id or ''}: a subject is listed twice in {names}")
        for i, p in enumerate(self.people):
            for r in p.relations:
                if not (0 <= r.other < len(self.people)) or r.other == i:
                    raise InputError(f"clip {self.clip_id or ''}: relation to person {r.other} is out of range")

    def visible(self) -> list[int]:
        """Indices of the people actually in the clip."""
        return [i for i, p in enumerate(self.people) if p.present]

    def is_present(self, name: str) -> bool:
        """The existence label of subject ``name``."""
        return any(p.name == name and p.present for p in self.people)

    def index_of(self, name: str) -> int | None:
        """Index of the present person called ``name``, or None."""
        for i, p in enumerate(self.people):
            if p.name == name and p.present:
                return i
        return None

    def relations_of(self, i: int) -> list[Relation]:
        """Relative positions of person ``i`` to the other visible people.

        Explicit ``relations`` win; otherwise they are derived from ``x`` (left/right of, or next to
        when closer than 0.12 of the frame width) and ``depth`` (in front of / behind).
        """
        me = self.people[i]
        if me.relations:
            return [r for r in me.relations if self.people[r.other].present]
        out = []
        for j in self.visible():
            if j == i:
                continue
            other = self.people[j]
            if me.depth and other.depth and me.depth != other.depth:
                out.append(Relation("in front of" if me.depth == "front" else "behind", j))
            elif me.x is not None and other.x is not None:
                dx = me.x - other.x
                out.append(Relation("next to" if abs(dx) < 0.12 else ("left of" if dx < 0 else "right of"), j))
        return out

    def with_people(self, people: Iterable[PersonFacts]) -> "ClipFacts":
        return replace(self, people=tuple(people))


@dataclass(frozen=True)
class PersonMeasurements:
    """Simple numbers about one person, the input of the ``rules`` scene describer.

    Attributes:
        face_box: (x0, y0, x1, y1) in pixels, in the first frame.
        frame_size: (width, height) in pixels.
        torso_rgb: mean RGB (0–255) of the torso region below the face, or None.
        track: a face landmark (e.g. the nose tip) per frame, as (x, y) pixels; () for a still.
        garment: the word used with the colour (``"a red top"``).
    """

    face_box: tuple[float, float, float, float]
    frame_size: tuple[int, int]
    torso_rgb: tuple[float, float, float] | None = None
    track: tuple[tuple[float, float], ...] = ()
    garment: str = "top"

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = (float(v) for v in self.face_box)
        w, h = (int(v) for v in self.frame_size)
        if w <= 0 or h <= 0 or not (x1 > x0 and y1 > y0):
            raise InputError(f"invalid measurements: face box {self.face_box} in a {w}x{h} frame")
        object.__setattr__(self, "face_box", (x0, y0, x1, y1))
        object.__setattr__(self, "frame_size", (w, h))
        object.__setattr__(self, "track", tuple((float(a), float(b)) for a, b in self.track))
        if self.torso_rgb is not None:
            rgb = tuple(float(v) for v in self.torso_rgb)
            if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise InputError(f"invalid torso colour {self.torso_rgb}: expected 3 values in 0..255")
            object.__setattr__(self, "torso_rgb", rgb)


def position_word(x: float) -> str:
    """Normalised horizontal centre → ``left`` (< 1/3), ``centre`` or ``right`` (> 2/3)."""
    return "left" if x < 1 / 3 else ("right" if x > 2 / 3 else "centre")


def clip_from_dict(d: Mapping[str, Any]) -> ClipFacts:
    """A :class:`ClipFacts` from plain JSON (``{"people": [{"name": ..., ...}], "scene": ...}``)."""
    people = []
    for p in d.get("people", []):
        p = dict(p)
        rel = tuple(Relation(str(r["relation"]), int(r["other"])) for r in p.pop("relations", []) or [])
        unknown = set(p) - set(PersonFacts.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown person field(s) {sorted(unknown)} in clip facts")
        people.append(PersonFacts(relations=rel, **p))
    return ClipFacts(people=tuple(people), scene=d.get("scene"), clip_id=d.get("clip_id"), video=d.get("video"))


def clip_to_dict(c: ClipFacts) -> dict[str, Any]:
    """Plain JSON for :func:`clip_from_dict`."""
    people = []
    for p in c.people:
        d = {k: getattr(p, k) for k in PersonFacts.__dataclass_fields__ if k != "relations"}
        d["relations"] = [{"relation": r.relation, "other": r.other} for r in p.relations]
        people.append(d)
    return {"people": people, "scene": c.scene, "clip_id": c.clip_id, "video": c.video}
