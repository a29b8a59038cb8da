"""Drawing one person into a frame: head, hair, the real face, body, clothing and accessories.

Geometry is in *face units* ``u`` (the jaw-to-jaw width of the face in pixels), measured from the
centre of the face landmarks, y downwards. The face itself is the real photo: its canonical
texture (:mod:`pvchat.offline.world.faces`) is tinted, given an expression by a smooth landmark-driven
warp, turned (yaw/pitch as a plane homography, roll as rotation) and blended in with its soft
mask. Everything else is drawn with OpenCV. Every primitive is also written to an id map, so
the renderer knows exactly which pixels belong to whom.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from pvchat.offline.world.actions import Pose
from pvchat.offline.world.faces import CANON, load_face, template
from pvchat.offline.world.people import COLOURS, HAIR_COLOURS, Outfit, Person

AA = cv2.LINE_AA

# What may cover part of a face in a clip, and which of them hide it almost entirely.
FACE_OCCLUSIONS = ("sunglasses", "mask", "hand", "hat_low")
FACE_HIDING = ("turned_away", "hands_over_face")


@dataclass(frozen=True)
class FaceLook:
    """How a person's face differs in one clip from their reference video (identity variation).

    The default is the reference look: the reference photo, no extra pose, no degradation.
    """

    photo: str | None = None  # another photo of the same person (a face key); None: the reference photo
    yaw: float = 0.0  # degrees added to the action's head pose (the face is also narrowed on the far side)
    pitch: float = 0.0
    roll: float = 0.0
    smile: float = 0.0  # expression offsets added to the pose, 0..1
    brows: float = 0.0
    mouth: float = 0.0
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # R, G, B gains on the face: lighting and colour cast
    resolution: int = 0  # the face texture is resampled through this many px (0: full resolution)
    blur: float = 0.0  # Gaussian sigma on the face texture, canonical px
    jpeg: int = 0  # JPEG quality the face texture is compressed with (0: none)
    occlusion: str | None = None  # one of FACE_OCCLUSIONS or FACE_HIDING
    occlusion_colour: str = "black"  # mask / hat colour (a key of COLOURS)
    hand_at: tuple[float, float] = (0.5, 0.7)  # centre of a covering hand, fraction of the face box

    @property
    def hidden(self) -> bool:
        """The face is hardly visible (turned away or covered by both hands)."""
        return self.occlusion in FACE_HIDING

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gains"], d["hand_at"] = list(self.gains), list(self.hand_at)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "FaceLook":
        if not d:
            return cls()
        return cls(**{**d, "gains": tuple(d.get("gains", (1.0, 1.0, 1.0))),
                      "hand_at": tuple(d.get("hand_at", (0.5, 0.7)))})


@functools.lru_cache(maxsize=1)
def _canon_frame() -> tuple[np.ndarray, float]:
    """(centre (2,), unit) of the canonical template: landmark centroid and jaw width in pixels."""
    t = template()
    return t.mean(axis=0), float(t[16, 0] - t[0, 0])


@dataclass(frozen=True)
class FaceKit:
    """A face ready to render: tinted texture (glasses baked in), mask, landmarks, expression bases."""

    texture: np.ndarray  # (C, C, 3) float32 RGB
    mask: np.ndarray  # (C, C) float32
    landmarks: np.ndarray  # (68, 2) canonical px
    skin: tuple[int, int, int]  # colour for the drawn head, ears and hands
    bases: dict  # expression name -> (C, C, 2) float32 forward displacement (px at strength 1)


def _luminance(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _displacement(landmarks: np.ndarray, moves: dict[int, tuple[float, float]], sigma: float) -> np.ndarray:
    """Smooth (C, C, 2) field: moved landmarks carry their move, all others (and the border) stay."""
    pts = [landmarks]
    border = np.linspace(0, CANON - 1, 9)
    pts.append(np.array([(x, y) for x in border for y in (0, CANON - 1)] + [(x, y) for y in border for x in (0, CANON - 1)],
                        np.float32))
    pts = np.concatenate(pts)
    vals = np.zeros_like(pts)
    for i, (mx, my) in moves.items():
        vals[i] = (mx, my)
    yy, xx = np.mgrid[0:CANON, 0:CANON].astype(np.float32)
    grid = np.stack([xx, yy], axis=-1).reshape(-1, 1, 2)
    d2 = ((grid - pts[None]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * sigma * sigma)) + 1e-12
    field = (w @ vals) / w.sum(1, keepdims=True)
    return field.reshape(CANON, CANON, 2).astype(np.float32)


def _draw_glasses(tex: np.ndarray, lm: np.ndarray, unit: float) -> np.ndarray:
    """Thin metal frames around both eyes, a bridge and arms towards the ears, blended into ``tex``.

    Thin and half-transparent on purpose: thick dark frames hide the eyes from dlib's detector and
    dominate the identity embedding.
    """
    frames = tex.copy()
    ink = (45, 45, 50)
    for eye in (lm[36:42], lm[42:48]):
        c = eye.mean(axis=0)
        axes = (0.62 * (eye[:, 0].max() - eye[:, 0].min()) + 0.03 * unit, 0.1 * unit)
        cv2.ellipse(frames, (int(round(c[0] * 16)), int(round(c[1] * 16))),
                    (int(round(axes[0] * 16)), int(round(axes[1] * 16))), 0, 0, 360, ink, 1, AA, shift=4)
    left, right = lm[36:42].mean(0), lm[42:48].mean(0)
    cv2.line(frames, (int(left[0] + 0.14 * unit), int(left[1] - 0.02 * unit)),
             (int(right[0] - 0.14 * unit), int(right[1] - 0.02 * unit)), ink, 1, AA)
    for eye_x, ear in ((lm[36, 0] - 0.12 * unit, lm[0]), (lm[45, 0] + 0.12 * unit, lm[16])):
        cv2.line(frames, (int(eye_x), int(left[1])), (int(ear[0]), int(ear[1] - 0.05 * unit)), ink, 1, AA)
    return cv2.addWeighted(frames, 0.75, tex, 0.25, 0)


EYE_OPEN = 0.31  # eye aspect ratio (of the canonical landmarks) the face is opened to; the gate is 0.25


def _ear(eye: np.ndarray) -> float:
    return float((np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / (2 * np.linalg.norm(eye[0] - eye[3])))


def _open_eyes(tex: np.ndarray, lm: np.ndarray, unit: float) -> np.ndarray:
    """Open eyes whose aspect ratio is below :data:`EYE_OPEN` (many LFW photos squint).

    Each such eye is magnified vertically about its centre (up to 1.8×) under a smooth window
    a little larger than the eye, so the lids part while brows, nose and the rest of the face
    stay put: the same person, with eyes the quality gate and dlib's landmarks see as open.
    """
    yy, xx = np.mgrid[0:CANON, 0:CANON].astype(np.float32)
    map_y = yy.copy()
    changed = False
    for start in (36, 42):
        eye = lm[start:start + 6]
        ear = _ear(eye)
        if ear >= EYE_OPEN:
            continue
        k = min(1.8, EYE_OPEN / max(ear, 1e-3))
        cx, cy = eye.mean(axis=0)
        width = float(np.linalg.norm(eye[0] - eye[3]))
        window = np.exp(-(((xx - cx) / (0.75 * width)) ** 2) - (((yy - cy) / (0.55 * width)) ** 2))
        map_y -= window * (yy - cy) * (1.0 - 1.0 / k)
        changed = True
    if not changed:
        return tex
    return cv2.remap(tex, xx, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def _close_eyes(tex: np.ndarray, lm: np.ndarray, skin: tuple[int, int, int], amount: float) -> np.ndarray:
    """Eyelids drawn shut over both eyes (a blink), blended in by ``amount`` (0..1).

    Each eye is covered by a lid a shade darker than the skin, with a dark lash line where the
    lids meet and a faint crease above, the cues dlib's landmarks need to read the eye as shut.
    """
    lids = tex.copy()
    lid = tuple(float(c) * 0.86 for c in skin)
    crease = tuple(float(c) * 0.7 for c in skin)
    for start in (36, 42):
        eye = lm[start:start + 6]
        c = eye.mean(axis=0)
        width = float(np.linalg.norm(eye[0] - eye[3]))
        centre = (int(round(c[0] * 16)), int(round(c[1] * 16)))
        axes = (int(round(0.62 * width * 16)), int(round(0.34 * width * 16)))
        cv2.ellipse(lids, centre, axes, 0, 0, 360, lid, -1, AA, shift=4)
        mid = np.array([eye[0], (eye[1] + eye[5]) / 2, (eye[2] + eye[4]) / 2, eye[3]])
        mid[1:3, 1] += 0.06 * width  # a closed lid line sags slightly
        cv2.polylines(lids, [np.round(mid * 16).astype(np.int32)], False, (30, 22, 22), 2, AA, shift=4)
        upper = np.array([eye[0], eye[1], eye[2], eye[3]]) - (0.0, 0.22 * width)
        cv2.polylines(lids, [np.round(upper * 16).astype(np.int32)], False, crease, 1, AA, shift=4)
    lids = cv2.GaussianBlur(lids, (0, 0), 0.5)
    return cv2.addWeighted(lids, amount, tex, 1.0 - amount, 0)


def _turn(lm: np.ndarray, unit: float, side: int, sigma: float) -> np.ndarray:
    """A landmark-driven warp of a face turning towards image ``side`` (+1 right, -1 left) at 45°:
    nose and mouth shift that way, the far half of the face narrows, the near half widens a little."""
    cx = float(lm[27:36, 0].mean())
    moves = {}
    for i in range(68):
        off = (lm[i, 0] - cx) / unit  # -0.5 .. 0.5 across the face
        far = off * side > 0
        dx = -off * (0.35 if far else -0.08) * unit
        if 27 <= i < 36 or 48 <= i < 68:
            dx += side * 0.1 * unit
        moves[i] = (dx, 0.0)
    return _displacement(lm, moves, sigma)


def _occlude(tex: np.ndarray, lm: np.ndarray, unit: float, look: FaceLook, skin, hair) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``look.occlusion`` onto a canonical face texture; returns (texture, (68,) bool covered)."""
    kind = look.occlusion
    covered = np.zeros(68, bool)
    if kind is None:
        return tex, covered
    tex = tex.copy()
    paint = np.zeros(tex.shape[:2], np.uint8)
    colour = COLOURS.get(look.occlusion_colour, COLOURS["black"])
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    if kind == "sunglasses":
        for eye in (lm[36:42], lm[42:48]):
            c = eye.mean(0)
            w = float(eye[:, 0].max() - eye[:, 0].min())
            cv2.ellipse(paint, (int(c[0]), int(c[1])), (int(0.75 * w + 2), int(0.55 * w + 2)), 0, 0, 360, 1, -1, AA)
        l_, r_ = lm[39], lm[42]
        cv2.line(paint, (int(l_[0]), int(l_[1])), (int(r_[0]), int(r_[1])), 1, max(1, int(0.04 * unit)), AA)
        colour = (20, 20, 24)
    elif kind == "mask":
        pts = np.concatenate([[lm[1]], [lm[28]], [lm[15]], lm[14:1:-1]])  # bridge of the nose down to the chin
        cv2.fillPoly(paint, [np.round(pts).astype(np.int32)], 1, AA)
    elif kind == "hat_low":
        brow = float(lm[17:27, 1].max())
        cv2.rectangle(paint, (0, 0), (tex.shape[1] - 1, int(brow + 0.04 * unit)), 1, -1)
    elif kind == "hand":
        c = (x0 + look.hand_at[0] * (x1 - x0), y0 + look.hand_at[1] * (y1 - y0))
        cv2.ellipse(paint, (int(c[0]), int(c[1])), (int(0.3 * unit), int(0.36 * unit)), 20, 0, 360, 1, -1, AA)
        colour = tuple(int(0.93 * v) for v in skin)
    elif kind == "turned_away":
        cv2.rectangle(paint, (0, 0), (tex.shape[1] - 1, tex.shape[0] - 1), 1, -1)
        colour = hair
    elif kind == "hands_over_face":
        for side in (-1, 1):
            c = ((x0 + x1) / 2 + side * 0.2 * unit, (y0 + y1) / 2)
            cv2.ellipse(paint, (int(c[0]), int(c[1])), (int(0.32 * unit), int(0.62 * unit)), 0, 0, 360, 1, -1, AA)
        colour = tuple(int(0.93 * v) for v in skin)
    else:
        raise ValueError(f"unknown face occlusion {kind!r}; choose one of {FACE_OCCLUSIONS + FACE_HIDING}")
    on = paint > 0
    tex[on] = np.asarray(colour, np.float32)
    ix = np.clip(np.round(lm).astype(int), 0, CANON - 1)
    covered = on[ix[:, 1], ix[:, 0]]
    return tex, covered


def _degrade(tex: np.ndarray, look: FaceLook) -> np.ndarray:
    """Colour cast, low resolution, blur and JPEG compression of a canonical face texture."""
    if look.gains != (1.0, 1.0, 1.0):
        tex = np.clip(tex * np.asarray(look.gains, np.float32), 0, 255)
    if look.resolution:
        small = cv2.resize(tex, (look.resolution, look.resolution), interpolation=cv2.INTER_AREA)
        tex = cv2.resize(small, (CANON, CANON), interpolation=cv2.INTER_LINEAR)
    if look.blur > 0:
        tex = cv2.GaussianBlur(tex, (0, 0), look.blur)
    if look.jpeg:
        ok, buf = cv2.imencode(".jpg", np.clip(tex, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(look.jpeg)])
        tex = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32)
    return tex


@functools.lru_cache(maxsize=256)
def face_kit(face_key: str, tone: tuple[int, int, int], glasses: bool) -> FaceKit:
    """The renderable face of ``face_key``, grey faces tinted with ``tone`` (luminance kept)."""
    src = load_face(face_key)
    _, unit = _canon_frame()
    tex = src.texture.astype(np.float32)
    if not src.colour:
        tint = np.asarray(tone, np.float32) / _luminance(tone)
        tex = np.clip(tex[:, :, :1] * tint, 0, 255)
    tex = np.ascontiguousarray(tex)
    lm = src.landmarks
    core = src.mask > 0.9
    cheeks = np.zeros_like(core)
    x0, x1 = int(lm[2, 0]), int(lm[14, 0])
    y0, y1 = int(lm[29, 1]), int(lm[33, 1])
    cheeks[y0:y1, x0:x1] = True
    sel = core & cheeks if (core & cheeks).sum() > 20 else core
    skin = tuple(int(v) for v in np.median(tex[sel], axis=0))
    tex = _open_eyes(tex, lm, unit)
    if glasses:
        tex = _draw_glasses(tex, lm, unit)
    sigma = 0.09 * unit
    bases = {
        "mouth": _displacement(lm, {**{i: (0.0, 0.16 * unit) for i in (56, 57, 58, 65, 66, 67)},
                                    **{i: (0.0, 0.12 * unit) for i in (55, 59, 64, 60)},
                                    **{i: (0.0, 0.1 * unit) for i in (7, 8, 9)},
                                    **{i: (0.0, 0.05 * unit) for i in (6, 10)},
                                    **{i: (0.0, -0.015 * unit) for i in (50, 51, 52, 61, 62, 63)}}, sigma),
        "smile": _displacement(lm, {48: (-0.05 * unit, -0.04 * unit), 54: (0.05 * unit, -0.04 * unit),
                                    49: (-0.02 * unit, -0.02 * unit), 53: (0.02 * unit, -0.02 * unit),
                                    59: (-0.02 * unit, -0.015 * unit), 55: (0.02 * unit, -0.015 * unit)}, sigma),
        "brows": _displacement(lm, {i: (0.0, -0.07 * unit) for i in range(17, 27)}, sigma),
        "turn_right": _turn(lm, unit, +1, sigma),
        "turn_left": _turn(lm, unit, -1, sigma),
    }
    return FaceKit(texture=tex, mask=src.mask, landmarks=lm, skin=skin, bases=bases)


class Painter:
    """Draws on a frame and, with the same shapes, the owner label into an id map."""

    def __init__(self, frame: np.ndarray, idmap: np.ndarray, label: int):
        self.frame, self.idmap, self.label = frame, idmap, label

    def poly(self, pts, colour) -> None:
        p = np.round(np.asarray(pts, np.float32) * 16).astype(np.int32)
        cv2.fillPoly(self.frame, [p], colour, AA, shift=4)
        cv2.fillPoly(self.idmap, [p], self.label, cv2.LINE_8, shift=4)

    def ellipse(self, centre, axes, colour, angle: float = 0.0, start: float = 0.0, end: float = 360.0) -> None:
        c = (int(round(centre[0] * 16)), int(round(centre[1] * 16)))
        a = (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16))))
        cv2.ellipse(self.frame, c, a, angle, start, end, colour, -1, AA, shift=4)
        cv2.ellipse(self.idmap, c, a, angle, start, end, self.label, -1, cv2.LINE_8, shift=4)

    def line(self, p0, p1, width: float, colour) -> None:
        a = (int(round(p0[0] * 16)), int(round(p0[1] * 16)))
        b = (int(round(p1[0] * 16)), int(round(p1[1] * 16)))
        w = max(1, int(round(width)))
        cv2.line(self.frame, a, b, colour, w, AA, shift=4)
        cv2.line(self.idmap, a, b, self.label, w, cv2.LINE_8, shift=4)

    def patterned_poly(self, pts, base, pattern: str, second, origin, unit: float) -> None:
        """Fill a polygon with a plain/striped/checked/dotted cloth that moves with ``origin``."""
        pts = np.asarray(pts, np.float32)
        h, w = self.idmap.shape
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return
        local = np.zeros((y1 - y0, x1 - x0), np.uint8)
        p = np.round((pts - (x0, y0)) * 16).astype(np.int32)
        cv2.fillPoly(local, [p], 255, AA, shift=4)
        alpha = local.astype(np.float32)[:, :, None] * (1.0 / 255.0)
        gx = (np.arange(x0, x1, dtype=np.float32) - origin[0]) / unit
        gy = (np.arange(y0, y1, dtype=np.float32) - origin[1]) / unit
        period = 0.32
        if pattern == "striped":
            sel = np.broadcast_to((np.mod(gy, period) < period * 0.45)[:, None], local.shape)
        elif pattern == "checked":
            sel = (np.mod(gy, period) < period * 0.35)[:, None] | (np.mod(gx, period) < period * 0.35)[None, :]
        elif pattern == "dotted":
            dx, dy = np.mod(gx, period) - period / 2, np.mod(gy, period) - period / 2
            sel = dx[None, :] ** 2 + dy[:, None] ** 2 < 0.075 ** 2
        else:
            sel = np.zeros(local.shape, bool)
        cloth = np.where(sel[:, :, None], np.asarray(second, np.float32), np.asarray(base, np.float32))
        roi = self.frame[y0:y1, x0:x1].astype(np.float32)
        self.frame[y0:y1, x0:x1] = np.round(alpha * cloth + (1 - alpha) * roi).astype(np.uint8)
        self.idmap[y0:y1, x0:x1][local >= 128] = self.label


def _rot(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])


def _arc(centre, axes, start: float, end: float) -> np.ndarray:
    """Points of an elliptic arc (degrees, clockwise from +x as OpenCV draws); closed by its chord."""
    t = np.radians(np.linspace(start, end, 24))
    return np.stack([centre[0] + axes[0] * np.cos(t), centre[1] + axes[1] * np.sin(t)], axis=1)


def _shade(colour, k: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * k, 0, 255)) for c in colour)


@dataclass(frozen=True)
class FacePlacement:
    """Where the face ended up in the frame."""

    landmarks: np.ndarray  # (68, 2) frame px
    box: tuple[int, int, int, int]  # landmark bounding box x0, y0, x1, y1 (exclusive)
    covered: np.ndarray | None = None  # (68,) bool: landmarks an occlusion (sunglasses, mask, hand...) hides


def _pose_homography(yaw: float, pitch: float, centre: np.ndarray, unit: float) -> np.ndarray:
    """Canonical → canonical homography of the face plane turned by yaw/pitch about its own centre.

    The plane sits at distance ``f`` from a pinhole camera of focal length ``f`` (= 3 face units);
    a canonical pixel is a point of the plane, the plane is rotated, then projected again.
    """
    f = 3.0 * unit
    k = np.array([[f, 0, centre[0]], [0, f, centre[1]], [0, 0, 1.0]])
    ry, rp = math.radians(yaw), math.radians(pitch)
    r_yaw = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    r_pitch = np.array([[1, 0, 0], [0, math.cos(rp), -math.sin(rp)], [0, math.sin(rp), math.cos(rp)]])
    r = r_yaw @ r_pitch
    to_plane = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1.0]])
    return k @ np.column_stack([r[:, 0], r[:, 1], [0.0, 0.0, f]]) @ to_plane


def _paste_face(frame: np.ndarray, idmap: np.ndarray, label: int, kit: FaceKit, pose: Pose, centre: np.ndarray,
                unit_px: float, light: float, look: FaceLook | None = None, hair=(60, 45, 35)) -> FacePlacement:
    c0, unit0 = _canon_frame()
    look = look or FaceLook()
    tex, mask, lm = kit.texture, kit.mask, kit.landmarks
    coefs = {"mouth": pose.mouth, "smile": pose.smile, "brows": pose.brows}
    if look != FaceLook():  # a varied face also turns by landmarks (the reference look renders as it always has)
        coefs["turn_right"] = min(1.0, max(0.0, pose.head_yaw) / 45.0)
        coefs["turn_left"] = min(1.0, max(0.0, -pose.head_yaw) / 45.0)
    if any(v > 1e-3 for v in coefs.values()):
        field = sum(kit.bases[k] * v for k, v in coefs.items() if v > 1e-3)
        yy, xx = np.mgrid[0:CANON, 0:CANON].astype(np.float32)
        map_x, map_y = xx - field[:, :, 0], yy - field[:, :, 1]
        tex = cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mask = cv2.remap(mask, map_x, map_y, cv2.INTER_LINEAR, borderValue=0.0)
        ix = np.clip(np.round(lm).astype(int), 0, CANON - 1)
        lm = lm + field[ix[:, 1], ix[:, 0]]
        if pose.mouth > 0.15:  # dark mouth opening between the inner lips
            inner = np.round(lm[60:68] * 16).astype(np.int32)
            tex = tex.copy()
            overlay = tex.copy()
            cv2.fillPoly(overlay, [inner], (70, 25, 30), AA, shift=4)
            a = min(1.0, pose.mouth) * 0.8
            tex = cv2.addWeighted(overlay, a, tex, 1 - a, 0)
    if pose.blink > 0:
        tex = _close_eyes(tex, lm, kit.skin, pose.blink)
    if abs(light) > 1e-3:  # light from one side
        ramp = 1.0 + light * (np.arange(CANON, dtype=np.float32) - c0[0]) / unit0
        tex = np.clip(tex * ramp[None, :, None], 0, 255)
    tex, covered = _occlude(tex, lm, unit0, look, kit.skin, hair)
    tex = _degrade(tex, look)
    s = unit_px / unit0
    rot = _rot(pose.head_roll) * s
    place = np.eye(3)
    place[:2, :2] = rot
    place[:2, 2] = centre - rot @ c0
    h_pose = _pose_homography(pose.head_yaw, pose.head_pitch, c0, unit0)
    m = place @ h_pose
    corners = np.array([[0, 0, 1], [CANON, 0, 1], [0, CANON, 1], [CANON, CANON, 1]], np.float64) @ m.T
    corners = corners[:, :2] / corners[:, 2:]
    h, w = idmap.shape
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    lm_h = np.c_[lm, np.ones(68)] @ m.T
    lm_f = (lm_h[:, :2] / lm_h[:, 2:]).astype(np.float32)
    if x1 > x0 and y1 > y0:
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
        ml = shift @ m
        size = (x1 - x0, y1 - y0)
        t = cv2.warpPerspective(tex, ml, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        a = cv2.warpPerspective(mask, ml, size, flags=cv2.INTER_LINEAR, borderValue=0.0)[:, :, None]
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.round(a * t + (1 - a) * roi).astype(np.uint8)
        idmap[y0:y1, x0:x1][a[:, :, 0] > 0.5] = label
    bx0, by0 = np.floor(lm_f.min(0)).astype(int)
    bx1, by1 = np.ceil(lm_f.max(0)).astype(int)
    return FacePlacement(landmarks=lm_f, box=(int(bx0), int(by0), int(bx1), int(by1)), covered=covered)


def _arm(p: Painter, shoulder: np.ndarray, side: float, angles: tuple[float, float], u: float, sleeve, skin,
         short_sleeve: bool) -> None:
    """One arm; ``side`` is -1 for the image-left arm, +1 for the image-right one."""
    a_sh, a_el = angles
    down = np.array([0.0, 1.0])
    upper_dir = _rot(-side * a_sh) @ down  # positive angles swing the arm outwards
    fore_dir = _rot(-side * (a_sh + a_el)) @ down
    elbow = shoulder + 1.2 * u * upper_dir
    hand = elbow + 1.1 * u * fore_dir
    width = 0.34 * u
    p.line(shoulder, elbow, width, sleeve)
    if short_sleeve:
        mid = shoulder + 0.55 * u * upper_dir
        p.line(mid, elbow, width * 0.8, skin)
        p.line(elbow, hand, width * 0.78, skin)
    else:
        p.line(elbow, hand, width * 0.9, sleeve)
    p.ellipse(hand, (0.16 * u, 0.18 * u), skin)


def draw_person(frame: np.ndarray, idmap: np.ndarray, label: int, person: Person, outfit: Outfit, pose: Pose,
                anchor: tuple[float, float], unit_px: float, light: float = 0.0, chair: bool = False,
                look: FaceLook | None = None) -> FacePlacement:
    """Draw ``person`` wearing ``outfit`` in ``pose``; ``anchor`` is the resting face centre (frame px).

    ``look`` varies the face from the reference (another photo, pose, expression, lighting,
    degradation, occlusion). Writes ``label`` into ``idmap`` wherever the person covers a pixel.
    Returns the face placement.
    """
    u = unit_px
    look = look or FaceLook()
    if look.yaw or look.pitch or look.roll or look.smile or look.brows or look.mouth:
        pose = replace(pose, head_yaw=pose.head_yaw + look.yaw, head_pitch=pose.head_pitch + look.pitch,
                       head_roll=pose.head_roll + look.roll, smile=min(1.0, pose.smile + look.smile),
                       brows=min(1.0, pose.brows + look.brows), mouth=min(1.0, pose.mouth + look.mouth))
    kit = face_kit(look.photo or person.face, tuple(person.skin_tone), "glasses" in outfit.accessories)
    skin = kit.skin
    cx = anchor[0] + pose.dx * u
    cy = anchor[1] + pose.dy * u + 1.15 * pose.sit * u
    p = Painter(frame, idmap, label)
    top = COLOURS[outfit.top_colour]
    second = COLOURS[outfit.pattern_colour]
    bottom = COLOURS[outfit.bottom_colour]
    hair = HAIR_COLOURS[person.hair_colour]
    acc = dict(zip(outfit.accessories, outfit.accessory_colours))

    if chair:  # the chair stands where the person will sit
        wood = (120, 80, 45)
        base_y = anchor[1] + 1.15 * u
        p.poly([(cx - 1.15 * u, base_y + 0.5 * u), (cx + 1.15 * u, base_y + 0.5 * u),
                (cx + 1.1 * u, base_y + 2.9 * u), (cx - 1.1 * u, base_y + 2.9 * u)], wood)
        p.poly([(cx - 1.4 * u, base_y + 2.6 * u), (cx + 1.4 * u, base_y + 2.6 * u),
                (cx + 1.5 * u, base_y + 3.3 * u), (cx - 1.5 * u, base_y + 3.3 * u)], _shade(wood, 0.8))
    # hair behind the head
    if person.hair_style == "long":
        p.poly([(cx - 0.72 * u, cy - 0.45 * u), (cx + 0.72 * u, cy - 0.45 * u), (cx + 0.78 * u, cy + 1.35 * u),
                (cx - 0.78 * u, cy + 1.35 * u)], hair)
    if person.hair_style != "bald":
        p.ellipse((cx, cy - 0.36 * u), (0.66 * u, 0.68 * u), hair)
    if person.hair_style == "curly":
        for k in range(9):
            ang = math.pi * (0.05 + 0.9 * k / 8)
            p.ellipse((cx - 0.62 * u * math.cos(ang), cy - 0.36 * u - 0.66 * u * math.sin(ang)), (0.17 * u, 0.17 * u), hair)
    # lower body
    hip = cy + 3.0 * u
    knee_y = hip + (0.35 if pose.sit > 0.5 else 2.0) * u
    if outfit.bottom == "skirt":
        p.poly([(cx - 0.86 * u, hip), (cx + 0.86 * u, hip), (cx + 1.15 * u, hip + 1.4 * u), (cx - 1.15 * u, hip + 1.4 * u)],
               bottom)
        for side in (-1, 1):
            p.line((cx + side * 0.45 * u, hip + 1.3 * u), (cx + side * (0.45 + 0.3 * pose.stride * side) * u,
                                                           hip + 3.5 * u), 0.3 * u, skin)
    else:
        for side in (-1, 1):
            swing = 0.35 * pose.stride * side
            p.line((cx + side * 0.42 * u, hip), (cx + side * (0.42 + swing) * u, knee_y + 1.5 * u), 0.62 * u, bottom)
        if pose.sit > 0.5:
            p.ellipse((cx, hip + 0.35 * u), (1.0 * u, 0.45 * u), bottom)
    # neck and torso
    p.poly([(cx - 0.2 * u, cy + 0.3 * u), (cx + 0.2 * u, cy + 0.3 * u), (cx + 0.22 * u, cy + 1.1 * u),
            (cx - 0.22 * u, cy + 1.1 * u)], _shade(skin, 0.9))
    torso = [(cx - 0.95 * u, cy + 1.05 * u), (cx - 0.6 * u, cy + 0.92 * u), (cx + 0.6 * u, cy + 0.92 * u),
             (cx + 0.95 * u, cy + 1.05 * u), (cx + 1.05 * u, cy + 1.35 * u), (cx + 0.88 * u, hip + 0.1 * u),
             (cx - 0.88 * u, hip + 0.1 * u), (cx - 1.05 * u, cy + 1.35 * u)]
    p.patterned_poly(torso, top, outfit.pattern, second, (cx, cy), u)
    if outfit.top == "jacket":  # open jacket over a white shirt
        p.poly([(cx - 0.26 * u, cy + 0.95 * u), (cx + 0.26 * u, cy + 0.95 * u), (cx + 0.12 * u, hip + 0.1 * u),
                (cx - 0.12 * u, hip + 0.1 * u)], COLOURS["white"])
        p.line((cx - 0.2 * u, cy + 1.0 * u), (cx - 0.05 * u, hip), max(1, 0.04 * u), _shade(top, 0.6))
        p.line((cx + 0.2 * u, cy + 1.0 * u), (cx + 0.05 * u, hip), max(1, 0.04 * u), _shade(top, 0.6))
    if outfit.top in ("shirt", "jacket"):  # collar
        collar = _shade(top, 1.15) if outfit.top == "shirt" else COLOURS["white"]
        for side in (-1, 1):
            p.poly([(cx, cy + 1.08 * u), (cx + side * 0.28 * u, cy + 0.88 * u), (cx + side * 0.34 * u, cy + 1.12 * u)], collar)
    else:  # round neckline
        p.ellipse((cx, cy + 0.93 * u), (0.25 * u, 0.14 * u), _shade(skin, 0.9), start=0, end=180)
    if "tie" in acc:
        tc = COLOURS[acc["tie"]]
        p.poly([(cx - 0.07 * u, cy + 1.08 * u), (cx + 0.07 * u, cy + 1.08 * u), (cx + 0.13 * u, cy + 2.2 * u),
                (cx, cy + 2.38 * u), (cx - 0.13 * u, cy + 2.2 * u)], tc)
    if "scarf" in acc:
        sc = COLOURS[acc["scarf"]]
        p.ellipse((cx, cy + 0.98 * u), (0.5 * u, 0.2 * u), sc)
        p.poly([(cx + 0.12 * u, cy + 1.0 * u), (cx + 0.36 * u, cy + 1.0 * u), (cx + 0.32 * u, cy + 2.0 * u),
                (cx + 0.1 * u, cy + 2.0 * u)], _shade(sc, 0.85))
    # arms
    short = outfit.top == "t-shirt"
    for side, angles in ((-1.0, pose.left_arm), (1.0, pose.right_arm)):
        shoulder = np.array([cx + side * 0.88 * u, cy + 1.22 * u])
        _arm(p, shoulder, side, angles, u, _shade(top, 0.92), skin, short)
    # head: ears, skull, face
    for side in (-1, 1):
        p.ellipse((cx + side * 0.52 * u, cy - 0.12 * u), (0.09 * u, 0.17 * u), _shade(skin, 0.92))
    yaw_shift = math.sin(math.radians(pose.head_yaw)) * 0.28 * u
    pitch_shift = math.sin(math.radians(pose.head_pitch)) * 0.2 * u
    p.ellipse((cx + 0.3 * yaw_shift, cy - 0.2 * u + 0.3 * pitch_shift), (0.56 * u, 0.76 * u), skin, angle=-pose.head_roll)
    face_centre = np.array([cx + yaw_shift, cy + pitch_shift])
    hair_rgb = hair if person.hair_style != "bald" else _shade(skin, 0.92)
    placed = _paste_face(frame, idmap, label, kit, pose, face_centre, u, light, look, hair_rgb)
    # hair on top of the head, then the hat
    if person.hair_style != "bald":
        p.poly(_arc((cx, cy - 0.36 * u), (0.66 * u, 0.68 * u), 200, 340), hair)
    if "hat" in acc:
        hc = COLOURS[acc["hat"]]
        p.ellipse((cx, cy - 0.66 * u), (0.66 * u, 0.5 * u), hc, start=180, end=360)
        p.ellipse((cx, cy - 0.66 * u), (0.8 * u, 0.1 * u), _shade(hc, 0.8))
    return placed
