"""The ``small`` preset's vision tower: pretrained CNN grid tokens plus one token per tracked person.

No pretrained video ViT ships offline; EfficientNet-Lite0 (ImageNet) and dlib's face networks do
(``pvchat.weights``). A frame becomes G grid tokens and F person tokens, all frozen, all of
width D = 1280 + 206 = 1486::

    frame (S×S) ─┬─ EfficientNet-Lite0 at 224 px ─► 7×7 grid of 1280-d features, pooled to g×g  (g², D)
                 └─ dlib: faces, 68 landmarks, 128-d embedding; tracked across the clip
                    per person: EfficientNet over the body crop (face box widened, head to waist)
                                ⧺ [embedding 128 | box 4 | present | pose 3 | mouth | motion 4 | …
                                   | torso colour 30 | the track's motion over the clip 10
                                   | the snippet's frame difference around the person 22]            (F, D)

    token layout  [0:1280]    CNN feature: grid cell, or mean over the person's body crop
                  [1280:1408] dlib embedding (person tokens)
                  [1408:1412] face box x0 y0 x1 y1 / frame size
                  [1412]      present flag   [1413] grid flag   [1414:1416] grid cell centre x, y
                  [1416:1419] yaw, pitch, roll proxies from landmarks  [1419] mouth opening
                  [1420:1424] face-centre motion dx, dy since the previous frame; d(yaw), d(pitch)
                  [1424:1454] torso colour: 3×3×3 RGB histogram of the chest below the face + mean RGB
                  [1454:1464] the track over the whole clip (same in each of its frames): spread of the
                              face centre x, y, of mouth opening, yaw, pitch; net displacement x, y;
                              frame-difference energy left of, right of and above the body (arms)
                  [1464:1486] with ``snippet`` = 2 frames per step (Temporal Segment Networks' RGB
                              difference): mean |next frame − this frame| in a 4×5 grid of cells around
                              the face (rows from above the head to the waist, columns from beyond the
                              left arm to beyond the right), then over the mouth and over the eyes

The steps are T frames spread over the clip, seconds apart in real footage: a wave or a talking
mouth can be in the same phase at every step (in the offline world a wave's period, 3–5 frames,
is near the step, 2–3 frames). The snippet's next frame sees the motion itself: the shipped
readout names the action of 150 one-person clips of held-out people in 0.89 ± 0.03 with these
channels and 0.75 ± 0.05 without (``bench/readout.py``; waving a hand 24/25 against 7/25).

A person keeps their slot for the whole clip (greedy tracking by embedding distance, then box
overlap), so the Q-former can read one person's motion across frames; the subject queries find
the person by the embedding and read clothing (the body crop), action (pose, mouth, motion) and
position (the box) from the same token. Nothing here trains (``train_last_k`` must be 0); with
``body_reader`` the body crop's feature comes from the last blocks of a :class:`BodyReader`, which
``pvchat pretrain`` trains on what people wear before alignment (model/body_reader.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet
from safetensors.torch import load_file
from torch import nn

from pvchat.errors import ConfigError, InputError
from pvchat.faces import FaceEngine
from pvchat.model.body_reader import BodyReader, frozen_maps

CNN_DIM = 1280
EXTRA_DIM = 206
TOKEN_DIM = CNN_DIM + EXTRA_DIM
EMB, BOX, PRESENT, GRID, CELL, POSE, MOUTH, MOTION = 1280, 1408, 1412, 1413, 1414, 1416, 1419, 1420
COLOUR, TRACK, SNIPPET = 1424, 1454, 1464  # torso colour (30), the track's clip-level motion (10), snippet (22)
SNIPPET_ROWS = ((-2.5, -0.5), (-0.5, 0.5), (0.5, 2.0), (2.0, 3.5))  # face heights from the face centre
SNIPPET_COLS = ((-3.5, -1.5), (-1.5, -0.5), (-0.5, 0.5), (0.5, 1.5), (1.5, 3.5))  # face widths
SNIPPET_WIDTH = len(SNIPPET_ROWS) * len(SNIPPET_COLS) + 2  # the grid, the mouth, the eyes
# how a person moves frame by frame: box, pose, mouth, motion, the snippet's differences
FRAME_MOTION = [*range(BOX, BOX + 4), *range(POSE, MOTION + 4), *range(SNIPPET, SNIPPET + SNIPPET_WIDTH)]
CLIP_MOTION = list(range(TRACK, TRACK + 10))  # ... and over the clip
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # EfficientNet-Lite's input scaling
SAME_PERSON = 0.6  # dlib's verification threshold


def _landmark_geometry(lm: np.ndarray) -> tuple[float, float, float, float]:
    """Yaw, pitch, roll proxies and mouth opening from 68 landmarks, each roughly in [-1, 1]."""
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    eyes = (eye_l + eye_r) / 2
    span = float(np.linalg.norm(eye_r - eye_l)) + 1e-6
    nose, mouth = lm[30], lm[62:67].mean(0)
    yaw = float(nose[0] - eyes[0]) / span  # nose left/right of the eye centre
    pitch = float(np.linalg.norm(nose - eyes) / (np.linalg.norm(mouth - eyes) + 1e-6)) - 0.6  # nose drop
    roll = float(np.arctan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0]))
    opening = float(np.linalg.norm(lm[66] - lm[62])) / span  # inner lips
    return yaw, pitch, roll, opening


def body_box(face_box, width: int, height: int) -> tuple[int, int, int, int]:
    """Head-to-waist crop around a face box: 1.2 face widths either side, 3 face heights below."""
    x0, y0, x1, y1 = face_box
    w, h = x1 - x0, y1 - y0
    bx0, bx1 = int(max(0, x0 - 1.2 * w)), int(min(width, x1 + 1.2 * w))
    by0, by1 = int(max(0, y0 - 0.3 * h)), int(min(height, y1 + 3.0 * h))
    return bx0, by0, max(bx1, bx0 + 1), max(by1, by0 + 1)


def body_crop(frame01: torch.Tensor, face_box, crop_size: int) -> torch.Tensor:
    """(1, 3, S, S) frame in [0, 1] and a face box on it → (1, 3, c, c): the body crop the tower reads."""
    bx0, by0, bx1, by1 = body_box(face_box, frame01.shape[-1], frame01.shape[-2])
    crop = frame01[..., by0:by1, bx0:bx1]
    return nn.functional.interpolate(crop, size=(crop_size, crop_size), mode="bilinear", align_corners=False)


def torso_box(face_box, width: int, height: int) -> tuple[int, int, int, int]:
    """The chest below a face box: a quarter face width wider each side, from 0.5 to 1.8 face heights
    under the chin (the top garment, clear of the head and usually of the arms)."""
    x0, y0, x1, y1 = face_box
    w, h = x1 - x0, y1 - y0
    tx0, tx1 = int(max(0, x0 - 0.25 * w)), int(min(width, x1 + 0.25 * w))
    ty0, ty1 = int(min(height - 1, y1 + 0.5 * h)), int(min(height, y1 + 1.8 * h))
    return tx0, ty0, max(tx1, tx0 + 1), max(ty1, ty0 + 1)


def colour_features(region: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 → (30,): a 3×3×3 RGB histogram (fractions) and the mean RGB in [0, 1]."""
    px = region.reshape(-1, 3).astype(np.int64)
    if not len(px):
        return np.zeros(30, np.float32)
    bins = np.minimum(px * 3 // 256, 2)
    hist = np.bincount(bins[:, 0] * 9 + bins[:, 1] * 3 + bins[:, 2], minlength=27) / len(px)
    return np.concatenate([hist, px.mean(0) / 255.0]).astype(np.float32)


def arm_regions(face_box, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Where arms move: beside the torso on either side, and above the head (a raised hand)."""
    x0, y0, x1, y1 = face_box
    w, h = x1 - x0, y1 - y0
    boxes = [(x0 - 2.2 * w, y0 - 0.5 * h, x0 - 0.3 * w, y1 + 2.5 * h), (x1 + 0.3 * w, y0 - 0.5 * h, x1 + 2.2 * w, y1 + 2.5 * h),
             (x0 - 1.0 * w, y0 - 1.5 * h, x1 + 1.0 * w, y0 - 0.1 * h)]
    out = []
    for bx0, by0, bx1, by1 in boxes:
        bx0, by0 = int(np.clip(bx0, 0, width - 1)), int(np.clip(by0, 0, height - 1))
        out.append((bx0, by0, int(np.clip(bx1, bx0 + 1, width)), int(np.clip(by1, by0 + 1, height))))
    return out


def snippet_regions(face_box, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Where the snippet's differences are read around a face: the 4×5 grid (SNIPPET_ROWS × SNIPPET_COLS,
    row-major), the mouth (lower face) and the eyes."""
    x0, y0, x1, y1 = face_box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    boxes = [(cx + c0 * w, cy + r0 * h, cx + c1 * w, cy + r1 * h) for r0, r1 in SNIPPET_ROWS for c0, c1 in SNIPPET_COLS]
    boxes += [(x0 + 0.2 * w, y0 + 0.6 * h, x1 - 0.2 * w, y1), (x0 + 0.1 * w, y0 + 0.2 * h, x1 - 0.1 * w, y0 + 0.5 * h)]
    out = []
    for bx0, by0, bx1, by1 in boxes:
        bx0, by0 = int(np.clip(bx0, 0, width - 1)), int(np.clip(by0, 0, height - 1))
        out.append((bx0, by0, int(np.clip(bx1, bx0 + 1, width)), int(np.clip(by1, by0 + 1, height))))
    return out


def snippet_motion(frame: np.ndarray, following: np.ndarray, face_box) -> np.ndarray:
    """(S, S, 3) uint8 frames a snippet apart and a face box on the first → (SNIPPET_WIDTH,): 10 × the
    mean absolute difference (of [0, 1] intensities) in each of :func:`snippet_regions`."""
    diff = np.abs(following.astype(np.int16) - frame.astype(np.int16)).mean(-1)  # (S, S)
    return np.array([10 * diff[y0:y1, x0:x1].mean() / 255.0
                     for x0, y0, x1, y1 in snippet_regions(face_box, diff.shape[1], diff.shape[0])], np.float32)


def track_motion(rgb: np.ndarray, slots: list[list], k: int, S: int) -> np.ndarray:
    """(10,) how track ``k`` moves over the clip (see the layout above); zeros if seen in < 2 frames."""
    seen = [(t, f) for t, frame in enumerate(slots) if (f := frame[k]) is not None]
    if len(seen) < 2:
        return np.zeros(10, np.float32)
    cx = np.array([(f.box[0] + f.box[2]) / 2 / S for _, f in seen])
    cy = np.array([(f.box[1] + f.box[3]) / 2 / S for _, f in seen])
    geo = np.array([_landmark_geometry(f.landmarks) for _, f in seen])  # (n, 4) yaw pitch roll opening
    energy = np.zeros(3)
    for (t0, _), (t1, f) in zip(seen, seen[1:]):
        diff = np.abs(rgb[t1].astype(np.int16) - rgb[t0].astype(np.int16)).mean(-1)  # (S, S)
        for j, (bx0, by0, bx1, by1) in enumerate(arm_regions(f.box, S, S)):
            energy[j] += diff[by0:by1, bx0:bx1].mean() / 255.0 / (len(seen) - 1)
    return np.array([10 * cx.std(), 10 * cy.std(), 10 * geo[:, 3].std(), geo[:, 0].std(), geo[:, 1].std(),
                     5 * (cx[-1] - cx[0]), 5 * (cy[-1] - cy[0]), *(10 * energy)], np.float32)


def track(frames_faces: list[list], max_people: int) -> list[list]:
    """Faces per frame → slots per frame: slot k holds the same person in every frame (or None).

    Tracks start from the first frame a face appears in, biggest first; later faces join the
    track whose last embedding is nearest (< dlib's 0.6), a new track otherwise (while slots last).
    """
    tracks: list[np.ndarray] = []  # last embedding per track
    out = []
    for faces in frames_faces:
        slots: list = [None] * max_people
        for f in sorted(faces, key=lambda f: -f.size):
            free = [k for k in range(len(tracks)) if slots[k] is None]
            dists = [float(np.linalg.norm(tracks[k] - f.embedding)) for k in free]
            if dists and min(dists) < SAME_PERSON:
                k = free[int(np.argmin(dists))]
            elif len(tracks) < max_people:
                tracks.append(f.embedding)
                k = len(tracks) - 1
            else:
                continue
            tracks[k] = f.embedding
            slots[k] = f
        out.append(slots)
    return out


class PersonTower(nn.Module):
    """(B, T·k, 3, S, S) ImageNet-normalised frames, k = ``snippet`` per step → (B, T, g² + F, D) frozen tokens.

    Args:
        weights: a safetensors file of EfficientNet-Lite0 weights (``pvchat.weights``); ``None``
            builds a random-init network of the same architecture (tests, sizes).
        image_size: S, the frame size the faces are detected at.
        max_people: F, person slots per frame.
        crop_size: side of the body crop fed to the CNN.
        grid: g, the CNN's 7×7 feature grid is average-pooled to g×g scene tokens (the people are in
            their own tokens; fewer scene tokens leave the Q-former's cross-attention less to search).
        body_reader: read body crops through a :class:`BodyReader` (``self.reader``: a copy of the
            CNN's last blocks until trained weights are loaded) instead of the CNN itself.
        snippet: k, consecutive frames per step (:func:`pvchat.video.snippet_indices`); the first is
            read, the second only for the snippet channels (0 with k = 1).
    """

    def __init__(self, weights: str | Path | None = None, image_size: int = 288, max_people: int = 3,
                 crop_size: int = 160, grid: int = 7, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 body_reader: bool = False, snippet: int = 1):
        super().__init__()
        if snippet not in (1, 2):
            raise ConfigError(f"person tower snippet must be 1 or 2 frames per step, got {snippet}")
        self.frames_per_step = snippet

        if max_people < 1:
            raise ConfigError(f"person tower needs max_people >= 1, got {max_people}")
        if not 1 <= grid <= 7:
            raise ConfigError(f"person tower grid must be 1..7 (pooled from 7×7), got {grid}")
        self.grid = grid
        self.cnn = EfficientNet.from_name("efficientnet-lite0")
        if weights is not None:
            state = load_file(str(weights))
            missing, unexpected = self.cnn.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ConfigError(f"{weights}: not EfficientNet-Lite0 weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.cnn.requires_grad_(False).eval()
        self.reader = BodyReader(self.cnn).requires_grad_(False).eval() if body_reader else None
        self._image_size, self.max_people, self.crop_size = image_size, max_people, crop_size
        self.register_buffer("in_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("lite_mean", torch.tensor(LITE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("lite_std", torch.tensor(LITE_STD).view(1, 3, 1, 1), persistent=False)
        self.trainable_blocks = 0
        self._engine = None

    # the VisionTower interface PVChat and the trainer use
    @property
    def hidden_size(self) -> int:
        return TOKEN_DIM

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def num_patches(self) -> int:
        return self.grid**2 + self.max_people

    def set_trainable(self, last_k: int = 0) -> None:
        if last_k:
            raise ConfigError("the person tower is frozen (pretrained CNN and face networks): train_last_k must be 0")

    def train(self, mode: bool = True) -> "PersonTower":
        self.training = mode
        self.cnn.eval()  # frozen: batch norm statistics stay
        if self.reader is not None:
            self.reader.eval()
        return self

    @property
    def engine(self):
        if self._engine is None:
            self._engine = FaceEngine(upsample=1)
        return self._engine

    # ----------------------------------------------------------------------- forward
    def _cnn(self, x01: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) in [0, 1] → (N, 1280, h/32, w/32)."""
        return self.cnn.extract_features((x01 - self.lite_mean) / self.lite_std)

    def body_features(self, crops01: torch.Tensor) -> torch.Tensor:
        """(N, 3, c, c) body crops in [0, 1] → (N, 1280): the CNN's (or the body reader's) mean feature."""
        if self.reader is None:
            return self._cnn(crops01).mean((2, 3))
        return self.reader(frozen_maps(self.cnn, (crops01 - self.lite_mean) / self.lite_std, self.reader.cut))

    def _person_tokens(self, rgb: np.ndarray, x01: torch.Tensor, following: np.ndarray | None = None) -> torch.Tensor:
        """(T, S, S, 3) uint8 and the same frames in [0, 1] (and each step's next frame, (T, S, S, 3)
        uint8, or None) → (T, F, D) person tokens."""
        T, S = rgb.shape[0], rgb.shape[1]
        engine = self.engine
        # dlib releases the GIL while detecting: the frames are searched on torch's intra-op threads' count
        with ThreadPoolExecutor(max(1, min(T, torch.get_num_threads()))) as pool:
            faces = list(pool.map(lambda f: engine.detect(f, embed=True), rgb))
        slots = track(faces, self.max_people)
        out = torch.zeros(T, self.max_people, TOKEN_DIM)
        crops, where = [], []
        prev: list = [None] * self.max_people
        for t in range(T):
            for k, f in enumerate(slots[t]):
                if f is None:
                    prev[k] = None
                    continue
                x0, y0, x1, y1 = f.box
                yaw, pitch, roll, opening = _landmark_geometry(f.landmarks)
                tok = out[t, k]
                tok[EMB:EMB + 128] = torch.from_numpy(f.embedding)
                tok[BOX:BOX + 4] = torch.tensor([x0 / S, y0 / S, x1 / S, y1 / S])
                tok[PRESENT] = 1.0
                tok[POSE:POSE + 3] = torch.tensor([yaw, pitch, roll])
                tok[MOUTH] = opening
                centre = ((x0 + x1) / 2 / S, (y0 + y1) / 2 / S)
                if prev[k] is not None:
                    pc, (pyaw, ppitch) = prev[k]
                    tok[MOTION:MOTION + 4] = torch.tensor([10 * (centre[0] - pc[0]), 10 * (centre[1] - pc[1]),
                                                           yaw - pyaw, pitch - ppitch])
                prev[k] = (centre, (yaw, pitch))
                tx0, ty0, tx1, ty1 = torso_box(f.box, S, S)
                tok[COLOUR:COLOUR + 30] = torch.from_numpy(colour_features(rgb[t, ty0:ty1, tx0:tx1]))
                if following is not None:
                    tok[SNIPPET:SNIPPET + SNIPPET_WIDTH] = torch.from_numpy(snippet_motion(rgb[t], following[t], f.box))
                crops.append(body_crop(x01[t:t + 1], f.box, self.crop_size))
                where.append((t, k))
        for k in range(self.max_people):
            motion = torch.from_numpy(track_motion(rgb, slots, k, S))
            for t in range(T):
                if slots[t][k] is not None:
                    out[t, k, TRACK:TRACK + 10] = motion
        if crops:
            feats = self.body_features(torch.cat(crops))  # (n, 1280): mean over the crop's grid
            for (t, k), v in zip(where, feats):
                out[t, k, :CNN_DIM] = v
        return out

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, T·k, 3, S, S), k consecutive frames per step → (B, T, g² + F, D)."""
        B, Tk, C, H, W = pixel_values.shape
        k = self.frames_per_step
        if (H, W) != (self.image_size, self.image_size):
            raise InputError(f"frames are {H}×{W} but the person tower expects {self.image_size}×{self.image_size}")
        if Tk % k:
            raise InputError(f"{Tk} frames do not make snippets of {k} (the tower reads {k} frames per step)")
        T = Tk // k
        x01 = (pixel_values.float().cpu() * self.in_std.cpu() + self.in_mean.cpu()).clamp(0, 1)
        x01 = x01.reshape(B, T, k, C, H, W)
        nxt = None if k == 1 else x01[:, :, 1].reshape(B * T, C, H, W)  # each step's next frame
        x01 = x01[:, :, 0].reshape(B * T, C, H, W)
        # grid tokens: the whole frame at 224 px, pooled to g×g                          (B·T, g², D)
        small = nn.functional.interpolate(x01, size=(224, 224), mode="bilinear", align_corners=False)
        grid_tokens = scene_tokens(self._cnn(small), self.grid)
        G = self.grid**2
        # person tokens, tracked over each clip                                           (B·T, F, D)
        def uint8(x):
            return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy().reshape(B, T, H, W, 3)
        rgb, following = uint8(x01), None if nxt is None else uint8(nxt)
        people = torch.cat([self._person_tokens(rgb[b], x01[b * T:(b + 1) * T], None if following is None else following[b])
                            for b in range(B)])
        tokens = torch.cat([grid_tokens, people], dim=1)  # (B·T, g² + F, D)
        return tokens.reshape(B, T, G + self.max_people, TOKEN_DIM).to(pixel_values.device)


def scene_tokens(grid: torch.Tensor, g: int) -> torch.Tensor:
    """(N, 1280, 7, 7) CNN grid → (N, g², D) scene tokens: pooled features, grid flag, cell centre."""
    pooled = nn.functional.adaptive_avg_pool2d(grid, g)  # (N, 1280, g, g)
    cells = torch.stack(torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij"), -1).reshape(g * g, 2)
    out = torch.zeros(grid.shape[0], g * g, TOKEN_DIM)
    out[..., :CNN_DIM] = pooled.flatten(2).transpose(1, 2)
    out[..., GRID] = 1.0
    out[..., CELL] = (cells[:, 1].float() + 0.5) / g  # x
    out[..., CELL + 1] = (cells[:, 0].float() + 0.5) / g  # y
    return out


def pool_scene(features: torch.Tensor, g: int) -> torch.Tensor:
    """Tokens of a 7×7-grid tower (…, 49 + F, D) → those of a g×g one (…, g² + F, D), without the CNN."""
    lead, n = features.shape[:-2], features.shape[-2]
    flat = features.reshape(-1, n, TOKEN_DIM)
    grid = flat[:, :49, :CNN_DIM].transpose(1, 2).reshape(-1, CNN_DIM, 7, 7)
    return torch.cat([scene_tokens(grid, g), flat[:, 49:]], 1).reshape(*lead, g * g + n - 49, TOKEN_DIM)
