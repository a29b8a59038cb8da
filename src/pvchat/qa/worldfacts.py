"""Adapter from the offline world's ground truth (``clips.jsonl``, :mod:`pvchat.offline.world`) to
:class:`~pvchat.qa.facts.ClipFacts`, so the ``facts`` captioner can answer about world clips.

A ``clips.jsonl`` line has ``clip_id``, ``path``, ``size`` [w, h], ``scene`` ("a street") and
``people``: per visible person ``id``, ``name``, ``action_phrase``, ``position`` (majority of the
frames), ``position_start``/``position_end``/``moves``, ``depth``, ``relations`` (``other`` id,
``horizontal`` "to the left of"/"to the right of", ``depth`` "in front of"/"behind"/None),
``wearing``, ``hair``, ``gender``, ``age`` and per-frame ``box``/``face_box``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from pvchat.errors import InputError
from pvchat.qa.facts import ClipFacts, PersonFacts, PersonMeasurements, Relation

_HORIZONTAL = {"to the left of": "left of", "to the right of": "right of", "next to": "next to"}
_DEPTH = {"in front of": "in front of", "behind": "behind"}


def _subject_names(names: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(names, Mapping):
        return {str(k): str(v) for k, v in names.items()}
    return {str(n): str(n) for n in names}


def _centre_x(entry: Mapping[str, Any], width: int) -> float | None:
    boxes = [f["box"] for f in entry.get("frames", []) if f.get("box")]
    if not boxes:
        return None
    b = boxes[len(boxes) // 2]
    return min(max((b[0] + b[2]) / 2 / width, 0.0), 1.0)


def _measurements(entry: Mapping[str, Any], size: tuple[int, int]) -> PersonMeasurements | None:
    faces = [f["face_box"] for f in entry.get("frames", []) if f.get("box") and f.get("face_box")]
    if not faces:
        return None
    track = tuple(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in faces)
    return PersonMeasurements(face_box=tuple(faces[0]), frame_size=size, track=track)


def facts_from_world_record(
    record: Mapping[str, Any],
    names: Mapping[str, str] | Sequence[str] = (),
    video_root: str | Path | None = None,
    measure: bool = False,
) -> ClipFacts:
    """The facts of one world clip.

    Args:
        record: one parsed line of ``clips.jsonl`` (or ``references.jsonl``).
        names: which world people are subjects: a mapping from world id or world name to subject
            name (``{"p03": "Anna"}``), or a sequence of world ids/names kept as subject names
            (``["Brook"]``). Everyone else in the clip is a stranger. Subjects whose person is not
            in the clip are listed with ``present=False``.
        video_root: directory that ``record["path"]`` is relative to (the world directory).
        measure: also attach :class:`PersonMeasurements` (first face box, face-centre track) so
            the ``rules`` captioner can describe the clip from numbers.

    Raises:
        InputError: the record lacks the fields above.
    """
    subjects = _subject_names(names)
    try:
        width, height = (int(v) for v in record["size"])
        entries = list(record["people"])
        index = {e["id"]: k for k, e in enumerate(entries)}
        people, measurements, seen = [], [], set()
        for e in entries:
            name = subjects.get(e["id"], subjects.get(e["name"]))
            if name is not None:
                seen.add(name)
            relations = []
            for r in e.get("relations", []):
                j = index.get(r["other"])
                if j is None:
                    continue
                if r.get("depth") in _DEPTH:
                    relations.append(Relation(_DEPTH[r["depth"]], j))
                if r.get("horizontal") in _HORIZONTAL:
                    relations.append(Relation(_HORIZONTAL[r["horizontal"]], j))
            hair = e.get("hair")
            movement = (f"moves from the {e['position_start']} to the {e['position_end']} of the frame"
                        if e.get("moves") else None)
            people.append(PersonFacts(
                name=name, present=True, gender=e.get("gender"), age=e.get("age"), position=e.get("position"),
                depth=e.get("depth"), x=_centre_x(e, width), relations=tuple(relations),
                action=e.get("action_phrase"), clothing=e.get("wearing"),
                appearance=("a bald head" if hair == "bald" else hair) or None, movement=movement,
            ))
            measurements.append(_measurements(e, (width, height)) if measure else None)
        clip_id = str(record.get("clip_id", "")) or None
        path = record.get("path")
        scene = record.get("scene")
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"not a world clip record ({type(e).__name__}: {e})") from None
    for name in dict.fromkeys(subjects.values()):
        if name not in seen:
            people.append(PersonFacts(name=name, present=False))
            measurements.append(None)
    video = str(Path(video_root) / path) if (video_root is not None and path) else path
    return ClipFacts(people=tuple(people), scene=f"in {scene}" if scene else None, clip_id=clip_id, video=video,
                     measurements=tuple(measurements) if measure else ())
