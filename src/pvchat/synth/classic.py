"""``classic``: positive clips on the CPU from the subject's own reference frames (DESIGN "synthesize").

Identity is preserved by construction: every pixel of the person comes from the reference video.
Each clip combines, with parameters drawn from the request's seed:

1. source frames: a run of reference frames, time-resampled (speed ×0.5–2, sometimes reversed),
   or one frame held still;
2. a landmark-driven motion (nod, shake, tilt, question, smile, frown; :mod:`pvchat.synth.motion`)
   — the CPU counterpart of the paper's LivePortrait motions;
3. either a reframing of the original scene or the person cut out (GrabCut from the face box)
   and placed left / centre / right in a new background (:mod:`pvchat.synth.backgrounds`);
4. a smooth camera pan/zoom (Ken Burns) and VideoAlchemy's Table 4 augmentation per clip.

``GeneratedClip.info`` records what was done, including the person's position word, so the QA
stage can caption location questions for generated clips.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pvchat.errors import ConfigError
from pvchat.faces import FaceEngine
from pvchat.synth.augment import AugmentParams, apply
from pvchat.synth.backgrounds import BACKGROUNDS, paint_background
from pvchat.synth.base import ClipRequest, GeneratedClip, Identity
from pvchat.synth.motion import MOTIONS, animate

POSITIONS = {"left": 0.25, "centre": 0.5, "right": 0.75}


def _body_rect(box, h: int, w: int) -> tuple[int, int, int, int]:
    """A generous person rectangle from the face box: head above, shoulders and torso below."""
    x0, y0, x1, y1 = box
    fw, fh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    rx0, rx1 = int(max(0, cx - 1.7 * fw)), int(min(w, cx + 1.7 * fw))
    ry0, ry1 = int(max(0, y0 - 0.7 * fh)), int(min(h, y1 + 3.5 * fh))
    return rx0, ry0, rx1, ry1


def person_mask(rgb: np.ndarray, box) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Soft alpha (H, W) float of the person around ``box`` (GrabCut, face forced foreground)."""
    h, w = rgb.shape[:2]
    rect = _body_rect(box, h, w)
    scale = min(1.0, 200 / max(h, w))
    small = cv2.resize(rgb, (max(1, int(w * scale)), max(1, int(h * scale))))
    sh, sw = small.shape[:2]
    mask = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    rx0, ry0, rx1, ry1 = (int(v * scale) for v in rect)
    mask[ry0:ry1, rx0:rx1] = cv2.GC_PR_FGD
    fx0, fy0, fx1, fy1 = (int(v * scale) for v in box)
    mask[fy0:fy1, fx0:fx1] = cv2.GC_FGD
    if rx1 - rx0 > 2 and ry1 - ry0 > 2:
        try:
            cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), mask, None, np.zeros((1, 65)), np.zeros((1, 65)), 4,
                        cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            pass  # keep the rectangle prior
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    alpha = cv2.GaussianBlur(cv2.resize(fg, (w, h)), (0, 0), max(1.0, 2 / scale))
    return np.clip(alpha, 0, 1), rect


def nearest_face(faces, centre: tuple[float, float]):
    """The face whose box centre is nearest ``centre`` (x, y) in city-block distance."""
    cx, cy = centre
    return min(faces, key=lambda f: abs((f.box[0] + f.box[2]) / 2 - cx) + abs((f.box[1] + f.box[3]) / 2 - cy))


def _subject_window(rgb: np.ndarray, box, aspect: float) -> np.ndarray:
    """A crop of ``rgb`` with the aspect ``aspect`` (w/h) centred on the subject's head and shoulders."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    fh = y1 - y0
    ch = int(min(h, max(3.2 * fh, 0.4 * h)))
    cw = int(min(w, ch * aspect))
    ch = int(min(ch, cw / aspect))
    cx, cy = (x0 + x1) / 2, y0 + 0.9 * fh
    left = int(np.clip(cx - cw / 2, 0, w - cw))
    top = int(np.clip(cy - ch / 2, 0, h - ch))
    return rgb[top : top + ch, left : left + cw]


class ClassicGenerator:
    """CPU backend. Options:

    Args:
        strength: scale of the Table 4 augmentation ranges (1 = as published).
        composite_prob: chance a clip puts the person in a new background (else reframes the original).
        still_prob: chance a clip holds one frame still (then motion carries the clip).
    """

    name = "classic"

    def __init__(self, strength: float = 0.5, composite_prob: float = 0.6, still_prob: float = 0.4):
        self.strength, self.composite_prob, self.still_prob = strength, composite_prob, still_prob
        self.identity: Identity | None = None
        self.landmarks: list[np.ndarray] = []  # 68 points per reference frame
        self._masks: dict[int, tuple[np.ndarray, tuple]] = {}

    def prepare(self, identity: Identity, workdir: Path | None = None) -> None:
        """Locate the 68 landmarks in every reference frame (dlib); cut-out masks are made lazily."""
        if not identity.frames:
            raise ConfigError(f"the classic backend needs reference frames of {identity.name!r}")
        engine = FaceEngine()
        self.identity, self.landmarks, self._masks = identity, [], {}
        for rgb, box in zip(identity.frames, identity.boxes):
            faces = engine.detect(rgb, embed=False)
            if faces:  # the detection that overlaps the analysed box
                self.landmarks.append(nearest_face(faces, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)).landmarks)
            else:  # fall back to a box-shaped landmark set: motions still move the head region
                x0, y0, x1, y1 = box
                self.landmarks.append(np.stack(np.meshgrid(np.linspace(x0, x1, 17), np.linspace(y0, y1, 4)), -1)
                                       .reshape(-1, 2)[:68].astype(np.float32))

    def mask(self, i: int):
        """(alpha (H, W) float, body rectangle) of reference frame ``i``, cut out once and kept."""
        if i not in self._masks:
            self._masks[i] = person_mask(self.identity.frames[i], self.identity.boxes[i])
        return self._masks[i]

    def source_frames(self, rng: np.random.Generator, T: int) -> tuple[list[int], bool]:
        """The reference frame behind each of ``T`` output frames: a run resampled in time (speed
        ×0.5–2, sometimes reversed) or, with ``still_prob``, one frame held; and whether it is held."""
        n = len(self.identity.frames)
        if rng.random() < self.still_prob or n == 1:
            return [int(rng.integers(n))] * T, True
        speed = float(rng.choice([0.5, 1.0, 1.5, 2.0]))
        start = float(rng.uniform(0, max(0, n - 1)))
        idx = [int(min(n - 1, start + speed * t)) for t in range(T)]
        return (idx[::-1] if rng.random() < 0.3 else idx), False

    def generate(self, request: ClipRequest) -> GeneratedClip:
        if self.identity is None:
            raise ConfigError("call prepare(identity) before generate()")
        rng = np.random.default_rng(request.seed)
        ident = self.identity
        T, W, H = request.num_frames, request.width, request.height

        # 1. source frames: a time-resampled run, or one frame held
        idx, held = self.source_frames(rng, T)
        # a held frame needs a real motion, or the clip is frozen (and the Dync-D filter drops it)
        motion = request.motion or str(rng.choice([m for m in MOTIONS if not (held and m == "still")]))
        if motion not in MOTIONS:
            raise ConfigError(f"unknown motion {motion!r}; choose one of: {', '.join(MOTIONS)}")

        # 3. composite into a new background, or reframe the original scene
        background = request.scene if request.scene in BACKGROUNDS else None
        composite = background is not None or rng.random() < self.composite_prob
        if composite and background is None:
            background = str(rng.choice(sorted(BACKGROUNDS)))
        position = str(rng.choice(sorted(POSITIONS))) if composite else None
        bg = paint_background(background, H, W, rng) if composite else None
        face_height = float(rng.uniform(0.16, 0.3))  # of the frame height, in composites

        # 4. camera: zoom/pan from one window to another; augmentation per clip
        rng_pos = rng.uniform(0, 1, 2)
        z0, z1 = rng.uniform(0.8, 1.0, 2)
        p0, p1 = rng.uniform(0, 1, (2, 2))
        aug = AugmentParams.sample(rng, H, W, self.strength)

        frames = []
        for t, i in enumerate(idx):
            phase = t / max(1, T - 1)
            src = animate(ident.frames[i], self.landmarks[i], motion, phase)  # 2. motion
            if composite:
                alpha, (rx0, ry0, rx1, ry1) = self.mask(i)
                cut, a = src[ry0:ry1, rx0:rx1].astype(np.float32), alpha[ry0:ry1, rx0:rx1]
                fb = ident.boxes[i]
                s = min(face_height * H / max(1, fb[3] - fb[1]), H / max(1, cut.shape[0]))
                cw, ch = max(1, int(cut.shape[1] * s)), max(1, int(cut.shape[0] * s))
                cut, a = cv2.resize(cut, (cw, ch)), cv2.resize(a, (cw, ch))[..., None]
                canvas = bg.astype(np.float32).copy()
                x = int(POSITIONS[position] * W - cw / 2)
                y = max(0, H - ch - int(rng_pos[1] * 0.1 * H))
                xs, xe = max(0, x), min(W, x + cw)
                if xe > xs:
                    region = canvas[y : y + ch, xs:xe]
                    part, pa = cut[:, xs - x : xe - x], a[:, xs - x : xe - x]
                    canvas[y : y + ch, xs:xe] = pa * part + (1 - pa) * region
                view = canvas.astype(np.uint8)
            else:  # reframe around the subject so other people in the reference stay out of view
                view = cv2.resize(_subject_window(src, ident.boxes[i], W / H), (W, H), interpolation=cv2.INTER_AREA)
            z = z0 + (z1 - z0) * phase  # Ken Burns window
            pc = p0 + (p1 - p0) * phase
            cw, ch = z * W, z * H
            x0, y0 = pc[0] * (W - cw), pc[1] * (H - ch)
            M = np.array([[W / cw, 0, -x0 * W / cw], [0, H / ch, -y0 * H / ch]], np.float32)
            view = cv2.warpAffine(view, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
            frames.append(apply(view, aug))
        info = {"source_frames": idx, "motion": motion, "composite": composite, "background": background,
                "position": ("right" if position == "left" else "left" if position == "right" else position)
                if (position and aug.flip) else position,
                "augment": aug.to_dict()}
        return GeneratedClip(np.stack(frames), request.fps, request, self.name, info)
