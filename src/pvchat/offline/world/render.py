"""Rendering a clip from a :class:`ClipSpec`, with ground truth taken from what was drawn.

Every person is drawn with its own label into an id map, so the ground truth is measured, not
assumed: per frame the box of the pixels a person covers, the face box (from the placed 68
landmarks), how much of them is visible, and the position word from the box centre (image left
/ centre / right in thirds of the frame width). Per clip: who is there, doing what, wearing
what, where (majority word, start → end when they move, in front of / behind, left / right of
each other). A clip is a pure function of its spec: the same spec gives the same pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import cv2
import numpy as np

from pvchat.errors import ConfigError
from pvchat.offline.world.actions import ACTIONS, get_action
from pvchat.offline.world.figure import FACE_HIDING, FACE_OCCLUSIONS, FaceLook, draw_person
from pvchat.offline.world.people import Outfit, Person, random_outfit
from pvchat.offline.world.scenes import (
    BACKGROUNDS,
    CAMERAS,
    DEPTH_HEAD_Y,
    DEPTH_SCALE,
    MARGIN,
    OCCLUDERS,
    SLOTS,
    camera_path,
    draw_occluder,
    paint_background,
    slot_x,
)

SIZE = (480, 360)  # default frame (w, h)
UNIT = 0.2  # face width as a fraction of the frame height (front row: 72 px at 360 px)
BLINK_RATE = 1 / 12  # share of frames in which a person's eyes are closed
HARDLY_VISIBLE = 0.3  # a face showing fewer of its landmarks than this on average counts as hardly visible


@dataclass(frozen=True)
class Cast:
    """One person in a clip."""

    person: str  # Person.id
    action: str  # key of ACTIONS
    slot: str = "centre"  # key of SLOTS
    depth: str = "front"  # key of DEPTH_SCALE
    outfit: Outfit | None = None  # None: the person's default outfit
    scale: float = 1.0  # size jitter on top of the depth scale
    light: float = 0.0  # light from the side on the face, -0.2 .. 0.2
    face: FaceLook = field(default_factory=FaceLook)  # how the face differs from the reference video


@dataclass(frozen=True)
class Look:
    """Whole-frame photometric variation of a clip."""

    gain: float = 1.0
    warmth: float = 0.0  # + warmer (red up, blue down)
    blur: float = 0.0  # Gaussian sigma, px
    noise: float = 0.0  # Gaussian sigma, grey levels


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines a clip."""

    clip_id: str
    seed: int
    cast: tuple[Cast, ...]
    background: str = "living_room"
    camera: str = "static"
    occluder: str | None = None
    occluder_x: float = 0.5  # fraction of the frame width
    look: Look = field(default_factory=Look)
    num_frames: int = 24
    fps: float = 8.0
    size: tuple[int, int] = SIZE

    def validate(self, people: dict[str, Person]) -> None:
        """ConfigError for unknown people, actions, slots, depths, backgrounds, cameras or sizes."""
        if not 1 <= len(self.cast) <= 3:
            raise ConfigError(f"a clip holds 1 to 3 people, got {len(self.cast)}")
        if self.num_frames < 1 or self.fps <= 0:
            raise ConfigError(f"num_frames must be >= 1 and fps > 0, got {self.num_frames}, {self.fps}")
        if min(self.size) < 64:
            raise ConfigError(f"frame size must be at least 64 px, got {self.size}")
        for c in self.cast:
            if c.person not in people:
                raise ConfigError(f"unknown person {c.person!r} in clip {self.clip_id}")
            get_action(c.action)
            if c.slot not in SLOTS or c.depth not in DEPTH_SCALE:
                raise ConfigError(f"slot must be one of {', '.join(SLOTS)} and depth one of "
                                  f"{', '.join(DEPTH_SCALE)}, got {c.slot!r}, {c.depth!r}")
        if len({c.person for c in self.cast}) != len(self.cast):
            raise ConfigError(f"a person appears twice in clip {self.clip_id}")
        if self.background not in BACKGROUNDS:
            raise ConfigError(f"unknown background {self.background!r}; choose one of: {', '.join(sorted(BACKGROUNDS))}")
        if self.camera not in CAMERAS:
            raise ConfigError(f"unknown camera {self.camera!r}; choose one of: {', '.join(sorted(CAMERAS))}")
        if self.occluder is not None and self.occluder not in OCCLUDERS:
            raise ConfigError(f"unknown occluder {self.occluder!r}; choose one of: {', '.join(OCCLUDERS)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cast"] = [{**asdict(c), "outfit": c.outfit.to_dict() if c.outfit else None, "face": c.face.to_dict()}
                     for c in self.cast]
        d["size"] = list(self.size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClipSpec":
        cast = tuple(Cast(person=c["person"], action=c["action"], slot=c["slot"], depth=c["depth"],
                          outfit=Outfit.from_dict(c["outfit"]) if c.get("outfit") else None,
                          scale=c["scale"], light=c["light"], face=FaceLook.from_dict(c.get("face")))
                     for c in d["cast"])
        return cls(clip_id=d["clip_id"], seed=d["seed"], cast=cast, background=d["background"], camera=d["camera"],
                   occluder=d["occluder"], occluder_x=d["occluder_x"], look=Look(**d["look"]),
                   num_frames=d["num_frames"], fps=d["fps"], size=tuple(d["size"]))


def face_look(rng: np.random.Generator, person: Person, variation: float) -> FaceLook:
    """How ``person``'s face differs in one query clip from their reference, at strength
    ``variation`` (0: the reference look; 1: the benchmark's). Another photo of the person when
    there is one; head pose and expression; lighting and colour cast; low resolution, blur and
    JPEG; now and then sunglasses, a mask, a hand or a hat pulled low; rarely a face hardly visible
    (turned away, or both hands over it)."""
    if variation <= 0:
        return FaceLook()
    v = float(min(variation, 1.0))
    photo = str(rng.choice(list(person.photos))) if person.photos else None
    yaw = float(np.clip(rng.normal(0.0, 24.0 * v), -55, 55))
    pitch = float(np.clip(rng.normal(0.0, 9.0 * v), -20, 20))
    roll = float(np.clip(rng.normal(0.0, 7.0 * v), -18, 18))
    smile, brows, mouth = (float(rng.uniform(0.0, 0.9 * v)) if rng.random() < 0.4 else 0.0 for _ in range(3))
    brightness = float(np.exp(rng.normal(0.0, 0.22 * v)))
    gains = tuple(round(brightness * float(np.exp(g)), 4) for g in rng.normal(0.0, 0.1 * v, size=3))
    resolution = int(rng.choice([40, 28, 20])) if rng.random() < 0.35 * v else 0
    blur = float(rng.uniform(1.0, 3.5)) if rng.random() < 0.3 * v else 0.0
    jpeg = int(rng.choice([30, 18, 10])) if rng.random() < 0.35 * v else 0
    roll_occ = rng.random()
    occlusion = (str(rng.choice(FACE_HIDING)) if roll_occ < 0.08 * v
                 else str(rng.choice(FACE_OCCLUSIONS)) if roll_occ < 0.38 * v else None)
    colour = str(rng.choice(["white", "blue", "black", "grey", "teal"]))
    hand_at = (float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.35, 0.85)))
    return FaceLook(photo=photo, yaw=round(yaw, 2), pitch=round(pitch, 2), roll=round(roll, 2), smile=round(smile, 3),
                    brows=round(brows, 3), mouth=round(mouth, 3), gains=gains, resolution=resolution,
                    blur=round(blur, 2), jpeg=jpeg, occlusion=occlusion, occlusion_colour=colour,
                    hand_at=(round(hand_at[0], 3), round(hand_at[1], 3)))


OUTFIT_CHANGE = 0.35  # the chance a person wears other clothes than their default in a clip


def plan_clip(people: list[Person], clip_id: str, seed: int, max_people: int = 3, num_frames: int = 24,
              fps: float = 8.0, size: tuple[int, int] = SIZE, outfit_change: float = OUTFIT_CHANGE,
              must_include: str | list[str] | None = None, variation: float = 0.0) -> ClipSpec:
    """A random clip of 1..``max_people`` of ``people`` (deterministic in ``seed``).

    One person at most travels (walks across), and only when nobody else stands in the front
    row. ``outfit_change`` is the chance that a person wears other clothes than their default.
    ``must_include`` puts that person id (or those ids) in the clip. ``variation`` (0..1) varies each face from
    its reference (:func:`face_look`) and now and then makes a person small (far away); it draws
    from its own random stream, so the rest of the clip is the same at any variation.
    """
    if not 1 <= max_people <= 3:
        raise ConfigError(f"max_people must be 1, 2 or 3, got {max_people}")
    rng = np.random.default_rng([seed, 7])
    n = int(rng.integers(1, min(max_people, len(people)) + 1))
    order = [p for p in rng.permutation(len(people))]
    must = [] if must_include is None else [must_include] if isinstance(must_include, str) else list(must_include)
    if len(must) > max_people:
        raise ConfigError(f"must_include names {len(must)} people, more than max_people={max_people}")
    n = max(n, len(must))
    chosen = [people[i] for i in order[:n]]
    for m in must:  # put the people who must be in the clip where others were drawn
        if m not in {p.id for p in chosen}:
            k = next(j for j, p in enumerate(chosen) if p.id not in must)
            chosen[k] = next(p for p in people if p.id == m)
    slots = [str(s) for s in rng.permutation(list(SLOTS))][:n] if n > 1 else [str(rng.choice(list(SLOTS), p=[0.25, 0.5, 0.25]))]
    depths = ["front"] * n
    if n > 1:
        depths = [str(rng.choice(["front", "behind"], p=[0.65, 0.35])) for _ in range(n)]
        if "front" not in depths:
            depths[int(rng.integers(n))] = "front"
    still = [a for a, act in ACTIONS.items() if not act.travels]
    travelling = [a for a, act in ACTIONS.items() if act.travels]
    actions = [str(rng.choice(still)) for _ in range(n)]
    fronts = [k for k in range(n) if depths[k] == "front"]
    if len(fronts) == 1 and rng.random() < (0.25 if n == 1 else 0.2):
        k = fronts[0]
        actions[k] = str(rng.choice(travelling))
        slots[k] = "centre"
        if n > 1:  # the others step to the sides behind the walker
            free = [s for s in ("left", "right")]
            for j in range(n):
                if j != k:
                    slots[j] = free.pop(0) if free else "centre"
    cast = []
    face_rng = np.random.default_rng([seed, 19])
    for p, slot, depth, action in zip(chosen, slots, depths, actions):
        outfit = random_outfit(rng) if rng.random() < outfit_change else None
        scale = float(rng.uniform(0.93, 1.07))
        look = face_look(face_rng, p, variation)
        if variation > 0 and face_rng.random() < 0.25 * min(variation, 1.0):  # far away: a small face
            scale *= float(face_rng.uniform(0.5, 0.72))
        cast.append(Cast(person=p.id, action=action, slot=slot, depth=depth, outfit=outfit,
                         scale=scale, light=float(rng.uniform(-0.18, 0.18)), face=look))
    look = Look(gain=float(rng.uniform(0.82, 1.12)), warmth=float(rng.uniform(-0.08, 0.08)),
                blur=float(rng.choice([0.0, 0.0, 0.6, 0.9])), noise=float(rng.uniform(0.0, 4.0)))
    occluder = str(rng.choice(OCCLUDERS)) if rng.random() < 0.25 else None
    return ClipSpec(clip_id=clip_id, seed=seed, cast=tuple(cast), background=str(rng.choice(list(BACKGROUNDS))),
                    camera=str(rng.choice(list(CAMERAS), p=_camera_weights())),
                    occluder=occluder, occluder_x=float(rng.choice([1 / 3, 2 / 3]) + rng.uniform(-0.04, 0.04)),
                    look=look, num_frames=num_frames, fps=fps, size=size)


def _camera_weights(static: float = 0.35) -> list[float]:
    """A static camera in ``static`` of the clips, the moving cameras sharing the rest equally."""
    moving = (1.0 - static) / (len(CAMERAS) - 1)
    return [static if name == "static" else moving for name in CAMERAS]


def position_word(x_centre: float, width: int) -> str:
    """'left', 'centre' or 'right': which third of the frame (as the viewer sees it) holds x."""
    if x_centre < width / 3:
        return "left"
    if x_centre > 2 * width / 3:
        return "right"
    return "centre"


class _Grain:
    """Sensor noise: one seeded noise field per clip, a different random window of it per frame."""

    PAD = 32

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], sigma: float):
        w, h = size
        self.rng, self.w, self.h = rng, w, h
        self.field = (rng.standard_normal((h + self.PAD, w + self.PAD, 3), dtype=np.float32) * sigma) if sigma > 0 else None

    def sample(self) -> np.ndarray | None:
        if self.field is None:
            return None
        y, x = self.rng.integers(0, self.PAD, size=2)
        return self.field[y:y + self.h, x:x + self.w]


def _post(frame: np.ndarray, look: Look, grain: _Grain) -> np.ndarray:
    gains = np.array([look.gain * (1 + look.warmth), look.gain, look.gain * (1 - look.warmth)], np.float32)
    img = frame.astype(np.float32)
    img *= gains
    if look.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), look.blur)
    noise = grain.sample()
    if noise is not None:
        img += noise
    np.clip(img, 0, 255, out=img)
    return (img + 0.5).astype(np.uint8)


@dataclass
class Rendered:
    """Frames (T, H, W, 3) uint8 RGB and the clip's ground truth (a JSON-ready dict)."""

    frames: np.ndarray
    truth: dict


def render_clip(spec: ClipSpec, people: dict[str, Person], hide: tuple[str, ...] = ()) -> Rendered:
    """Render ``spec``. ``hide`` leaves those person ids out (same scene otherwise; for tests)."""
    spec.validate(people)
    w, h = spec.size
    rng = np.random.default_rng([spec.seed, 11])
    canvas = paint_background(spec.background, rng, spec.size)
    views = camera_path(spec.camera, rng, spec.num_frames, spec.size)
    params = [get_action(c.action).params(rng) for c in spec.cast]
    grain = _Grain(np.random.default_rng([spec.seed, 13]), spec.size, spec.look.noise)
    # Blinks: about one frame in twelve, never the first; drawn apart from the scene's randomness.
    blinks = [{t for t in range(1, spec.num_frames) if np.random.default_rng([spec.seed, 17, k, t]).random() < BLINK_RATE}
              for k in range(len(spec.cast))]
    base_unit = UNIT * h
    order = sorted(range(len(spec.cast)), key=lambda k: (spec.cast[k].depth != "behind",
                                                         get_action(spec.cast[k].action).travels, k))
    frames = np.empty((spec.num_frames, h, w, 3), np.uint8)
    per_frame: list[list[dict]] = [[] for _ in spec.cast]
    for t, view in enumerate(views):
        frame = cv2.warpAffine(canvas, view.matrix(), (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        idmap = np.zeros((h, w), np.uint8)
        placements = {}
        for k in order:
            c = spec.cast[k]
            if c.person in hide:
                continue
            person = people[c.person]
            action = get_action(c.action)
            pose = action.pose(t, spec.num_frames, params[k])
            if t in blinks[k]:
                pose = replace(pose, blink=1.0)
            ax, ay = view.to_frame(slot_x(c.slot, len(spec.cast)) * w + MARGIN * w, DEPTH_HEAD_Y[c.depth] * h + MARGIN * h)
            unit = base_unit * DEPTH_SCALE[c.depth] * c.scale * view.zoom
            placements[k] = draw_person(frame, idmap, k + 1, person, c.outfit or person.outfit, pose, (ax, ay), unit,
                                        light=c.light, chair=c.action == "sitting_down", look=c.face)
        if spec.occluder:
            draw_occluder(frame, idmap, spec.occluder, spec.occluder_x * w, 0.62 * h, base_unit * view.zoom)
        frames[t] = _post(frame, spec.look, grain)
        for k in range(len(spec.cast)):
            truth_k = _frame_truth(idmap, k + 1, placements.get(k), w, h)
            truth_k["eyes_open"] = t not in blinks[k] if truth_k["box"] else None
            per_frame[k].append(truth_k)
    truth = _clip_truth(spec, people, per_frame, hide)
    return Rendered(frames=frames, truth=truth)


def _frame_truth(idmap: np.ndarray, label: int, placement, w: int, h: int) -> dict:
    mine = idmap == label
    cols, rows = np.flatnonzero(mine.any(axis=0)), np.flatnonzero(mine.any(axis=1))
    if len(cols) == 0:
        return {"visible": 0.0, "box": None, "face_box": None, "face_visible": 0.0, "position": None}
    box = [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]
    count = int(np.count_nonzero(mine[box[1]:box[3], box[0]:box[2]]))
    fx0, fy0, fx1, fy1 = placement.box
    pts = np.round(placement.landmarks).astype(int)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
    owned = np.zeros(len(pts), bool)
    owned[inside] = idmap[pts[inside, 1], pts[inside, 0]] == label
    if placement.covered is not None:
        owned &= ~placement.covered  # sunglasses, a mask, a hand... are the person's, but hide the face
    face_vis = float(owned.mean())  # share of the 68 landmarks that show this person's face
    return {"visible": round(count / (w * h), 4), "box": box, "face_box": [int(fx0), int(fy0), int(fx1), int(fy1)],
            "face_visible": round(face_vis, 3), "position": position_word((box[0] + box[2]) / 2, w)}


def _majority(words: list[str]) -> str:
    return max(sorted(set(words)), key=words.count)


def _clip_truth(spec: ClipSpec, people: dict[str, Person], per_frame: list[list[dict]], hide: tuple[str, ...]) -> dict:
    w, _ = spec.size
    mid = spec.num_frames // 2
    entries = []
    present = [k for k, c in enumerate(spec.cast) if c.person not in hide and any(f["box"] for f in per_frame[k])]
    for k in present:
        c = spec.cast[k]
        person = people[c.person]
        outfit = c.outfit or person.outfit
        words = [f["position"] for f in per_frame[k] if f["position"]]
        seen = [f for f in per_frame[k] if f["box"]]
        start, end = seen[0]["position"], seen[-1]["position"]
        relations = []
        for j in present:
            if j == k:
                continue
            other = spec.cast[j]
            a, b = per_frame[k][mid]["box"], per_frame[j][mid]["box"]
            if a is None or b is None:
                continue
            horizontal = "to the left of" if (a[0] + a[2]) < (b[0] + b[2]) else "to the right of"
            depth = None if c.depth == other.depth else ("in front of" if c.depth == "front" else "behind")
            relations.append({"other": other.person, "other_name": people[other.person].name,
                              "horizontal": horizontal, "depth": depth})
        action = get_action(c.action)
        face_vis = [f["face_visible"] for f in seen]
        face_mean = round(float(np.mean(face_vis)), 3) if face_vis else 0.0
        entries.append({
            "id": person.id, "name": person.name, "action": c.action, "action_phrase": action.phrase,
            "position": _majority(words), "position_start": start, "position_end": end,
            "moves": start != end, "depth": c.depth if len(present) > 1 else None, "slot": c.slot,
            "relations": relations, "outfit": outfit.to_dict(), "wearing": outfit.describe(),
            "hair": f"{person.hair_colour} {person.hair_style} hair" if person.hair_style != "bald" else "bald",
            "gender": person.gender, "age": person.age,
            "face": {**c.face.to_dict(), "photo": c.face.photo or person.face, "reference_photo": c.face.photo is None,
                     "scale": round(c.scale, 3), "face_visible_mean": face_mean,
                     "hardly_visible": bool(c.face.hidden or face_mean < HARDLY_VISIBLE)},
            "frames": per_frame[k],
        })
    return {
        "clip_id": spec.clip_id, "seed": spec.seed, "num_frames": spec.num_frames, "fps": spec.fps,
        "size": list(spec.size), "background": spec.background, "scene": BACKGROUNDS[spec.background][1],
        "camera": spec.camera, "camera_phrase": CAMERAS[spec.camera][1], "occluder": spec.occluder,
        "people": entries, "person_ids": [e["id"] for e in entries], "spec": spec.to_dict(),
    }


def location_phrase(entry: dict) -> str:
    """Where a person of a clip's ground truth is, in words (without the subject's name).

    E.g. 'on the left of the frame, in front of Sam and to the left of Sam' or 'moving from the
    left to the right of the frame'.
    """
    where = {"left": "on the left", "centre": "in the centre", "right": "on the right"}
    if entry["moves"]:
        text = f"moving from the {entry['position_start']} to the {entry['position_end']} of the frame"
    else:
        text = f"{where[entry['position']]} of the frame"
    parts = []
    for rel in entry["relations"]:
        if rel["depth"]:
            parts.append(f"{rel['depth']} {rel['other_name']}")
        parts.append(f"{rel['horizontal']} {rel['other_name']}")
    if parts:
        text += ", " + (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1])
    return text
