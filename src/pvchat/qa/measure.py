"""The ``rules`` scene describer: simple measurements → words (ours; no model needed).

- face box → position word (left / centre / right by the box centre; front / behind by face size
  relative to the largest face in the clip),
- torso colour → clothing colour word (HSV thresholds),
- landmark track → movement word (walking left/right, sitting down, jumping, nodding, shaking the
  head, standing still), after removing a camera pan shared by everyone in the clip.

The inputs are numbers (:class:`~pvchat.qa.facts.PersonMeasurements`), so all of it is testable
without a video; :mod:`pvchat.faces` can supply boxes, landmarks and pixels from a real one.
"""

from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np

from pvchat.errors import InputError
from pvchat.qa.facts import ClipFacts, PersonFacts, PersonMeasurements, position_word

BEHIND_RATIO = 0.9  # a face (geometric mean of box width and height) smaller than this fraction of the largest is "behind"
WALK_FRACTION = 0.15  # net horizontal travel (fraction of frame width) that counts as walking
SIT_FRACTION = 0.6  # steady vertical travel (fraction of face height) that counts as sitting down / standing up
NOD_FRACTION = 0.08  # up-down / side-to-side range (fraction of face height) that counts as a head gesture
JUMP_FRACTION = 0.3  # up-down range (fraction of face height) above which the gesture is a jump


def colour_name(rgb: Sequence[float]) -> str:
    """Mean RGB (0–255) → one of black, white, grey, beige, brown, red, orange, yellow, green, teal,
    blue, navy, purple, pink (the offline world's clothing colours, :mod:`pvchat.offline.world.people`)."""
    r, g, b = (min(max(float(v), 0.0), 255.0) / 255.0 for v in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    deg = h * 360.0
    if v < 0.2:
        return "black"
    if s < 0.15:
        return "white" if v > 0.85 else ("grey" if v > 0.3 else "black")
    if 20 <= deg < 50 and s < 0.4 and v > 0.6:
        return "beige"
    if 10 <= deg < 45 and v < 0.6:
        return "brown"
    if deg < 12 or deg >= 340:
        return "pink" if s < 0.45 and v > 0.7 else "red"
    if deg < 40:
        return "orange"
    if deg < 70:
        return "yellow"
    if deg < 160:
        return "green"
    if deg < 195:
        return "teal"
    if deg < 255:
        return "navy" if v < 0.45 else "blue"
    if deg < 290:
        return "purple"
    return "pink"


def _direction_changes(values: np.ndarray, min_step: float) -> int:
    steps = np.diff(values)
    steps = steps[np.abs(steps) > min_step]
    return int(np.sum(np.sign(steps[1:]) != np.sign(steps[:-1]))) if len(steps) > 1 else 0


def movement_words(m: PersonMeasurements, camera: np.ndarray | None = None) -> tuple[str, str | None]:
    """(action gerund, movement phrase) from the landmark track of ``m``.

    In order: net horizontal travel above :data:`WALK_FRACTION` of the frame width is walking (the
    phrase says from where to where); a steady drop (rise) of the face by more than
    :data:`SIT_FRACTION` of its height is sitting down (standing up); an up-and-back-down track with a
    range above :data:`JUMP_FRACTION` of the face height is jumping; one with ≥ 2 direction changes
    and a range above :data:`NOD_FRACTION` is nodding (side to side: shaking the head); else
    standing still.
    ``camera`` (T, 2) is subtracted from the track first (see :func:`camera_motion`). "Left" is the
    viewer's left.
    """
    if len(m.track) < 2:
        return "standing still", None
    t = np.asarray(m.track, dtype=np.float64)
    if camera is not None and len(camera) == len(t):
        t = t - camera
    w, _ = m.frame_size
    face_h = m.face_box[3] - m.face_box[1]
    dx, dy = t[-1] - t[0]
    if abs(dx) > WALK_FRACTION * w:
        start, end = position_word(t[0, 0] / w), position_word(t[-1, 0] / w)
        way = "right" if dx > 0 else "left"
        phrase = (f"walks from the {start} to the {end} of the frame" if start != end
                  else f"moves towards the {way} of the frame")
        return f"walking to the {way}", phrase
    ranges = np.ptp(t, axis=0)
    step = 0.02 * face_h
    turns_y, turns_x = _direction_changes(t[:, 1], step), _direction_changes(t[:, 0], step)
    if abs(dy) > SIT_FRACTION * face_h and turns_y == 0:
        return ("sitting down", None) if dy > 0 else ("standing up", None)
    if ranges[1] > JUMP_FRACTION * face_h and turns_y >= 1 and abs(dy) < 0.5 * ranges[1]:
        return "jumping", None  # up and back down, maybe only once in a short clip
    vert = ranges[1] > NOD_FRACTION * face_h and turns_y >= 2
    horiz = ranges[0] > NOD_FRACTION * face_h and turns_x >= 2
    if vert and (not horiz or ranges[1] >= ranges[0]):
        return "nodding", None
    if horiz:
        return "shaking the head", None
    return "standing still", None


def camera_motion(measurements: Sequence[PersonMeasurements | None]) -> np.ndarray | None:
    """(T, 2) offset shared by everyone (a camera pan), or None.

    Only with ≥ 2 tracks of the same length whose net horizontal travels all point the same way
    and agree within a factor of 2: then the per-frame median displacement is the camera's.
    One person alone cannot tell a pan from a walk.
    """
    tracks = [np.asarray(m.track, dtype=np.float64) for m in measurements if m is not None and len(m.track) >= 2]
    if len(tracks) < 2 or len({len(t) for t in tracks}) != 1:
        return None
    dxs = np.array([t[-1, 0] - t[0, 0] for t in tracks])
    w = next(m.frame_size[0] for m in measurements if m is not None)
    if np.all(np.abs(dxs) < 0.05 * w) or not (np.all(dxs > 0) or np.all(dxs < 0)):
        return None
    if np.abs(dxs).min() < 0.5 * np.abs(dxs).max():
        return None
    return np.median(np.stack([t - t[0] for t in tracks]), axis=0)


def facts_from_measurements(
    measurements: Sequence[PersonMeasurements | None],
    people: Sequence[PersonFacts] | None = None,
    scene: str | None = None,
    clip_id: str | None = None,
) -> ClipFacts:
    """Describe a clip from measurements: position, depth, clothing colour, action, movement.

    Args:
        measurements: one per person (None for a labelled-absent subject).
        people: identity and presence of each person (name, present, gender, age); the measured
            words replace their position/clothing/action fields. Default: present strangers.
        scene: optional scene words ("in a park") for action captions.
    """
    people = list(people) if people is not None else [PersonFacts() for _ in measurements]
    if len(people) != len(measurements):
        raise InputError(f"{len(measurements)} measurements for {len(people)} people")
    def size(m: PersonMeasurements) -> float:
        return float(np.sqrt((m.face_box[2] - m.face_box[0]) * (m.face_box[3] - m.face_box[1])))

    heights = [size(m) for m, p in zip(measurements, people) if m is not None and p.present]
    tallest = max(heights) if heights else 0.0
    several = len(heights) > 1
    camera = camera_motion([m for m, p in zip(measurements, people) if p.present])
    out = []
    for m, p in zip(measurements, people):
        if m is None or not p.present:
            if p.present:
                raise InputError(f"no measurements for present person {p.name or 'stranger'}")
            out.append(p)
            continue
        x0, y0, x1, y1 = m.face_box
        w, _ = m.frame_size
        x = min(max((x0 + x1) / 2 / w, 0.0), 1.0)
        depth = None
        if several:
            ratio = size(m) / tallest
            depth = "behind" if ratio < BEHIND_RATIO else ("front" if min(heights) / tallest < BEHIND_RATIO else None)
        action, movement = movement_words(m, camera)
        clothing = f"a {colour_name(m.torso_rgb)} {m.garment}" if m.torso_rgb is not None else p.clothing
        out.append(PersonFacts(
            name=p.name, present=True, gender=p.gender, age=p.age, position=position_word(x), depth=depth,
            x=x, action=action, clothing=clothing, appearance=p.appearance, movement=movement,
        ))
    return ClipFacts(people=tuple(out), scene=scene, clip_id=clip_id, measurements=tuple(measurements))
