"""VideoAlchemy's MSRVTT-Personalization metrics, and a per-subject quality filter built on them.

VideoAlchemy (papers/videoalchemy-paper.txt §4.1; research/generators.md §2.4) scores a generated
video with four cosine similarities and one motion score:

- **Text-S**: mean cosine between the prompt's CLIP text embedding and each frame's CLIP image
  embedding (square centre crop, prompt truncated to the text model's length; raw cosines).
- **Vid-S**: mean of the all-pairs cosine matrix between generated and reference frames (CLIP).
- **Subj-S**: cosine between the subject crop of each frame and the reference subject crops
  (DINO ViT-B/16 in the paper; crop masked on white and padded square). Missing subject → 0.
- **Face-S**: cosine between the first face of each frame and the reference faces, averaged over
  references and frames, missing faces count 0 (= mean cosine × detection rate). The paper uses
  YOLOv9 + ArcFace R100 on unaligned 112² crops; the offline default here is dlib's detector and
  its aligned 128-d embedding (``pvchat.faces``); a PyTorch face encoder from a local directory
  (:mod:`pvchat.synth.pv_face`) can replace the embedding.
- **Dync-D**: VBench's dynamic degree. Frames resampled to ~8 fps; optical flow between consecutive
  frames (RAFT in the paper, OpenCV Farnebäck here) at a shorter side of 256 px; a pair's score is
  the mean of its top 5 % flow magnitudes, it moves if the score > 6·min(H, W)/256; a clip is
  dynamic if at least round(T/4) pairs move. We keep the mean pair score as a continuous value.

Encoders are config choices loaded with ``from_pretrained(local_dir)``; nothing is downloaded.
The quality filter (research/generators.md §4.3) calibrates the Face-S threshold per subject,
between the similarities of the subject's own faces and those of its hard negatives.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pvchat.errors import ConfigError, InputError

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------------------------
# Image encoders (CLIP for Text-S / Vid-S, DINO-style for Subj-S)
# --------------------------------------------------------------------------------------------


def _require_dir(path: str | Path, what: str, hint: str) -> Path:
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise ConfigError(f"{what}: no model at {p} (expected config.json); {hint}")
    return p


def _preprocess_config(path: Path, default_mean, default_std) -> tuple[tuple, tuple]:
    """(mean, std) from a local preprocessor_config.json if it has them."""
    import json

    f = path / "preprocessor_config.json"
    if f.is_file():
        cfg = json.loads(f.read_text())
        return tuple(cfg.get("image_mean", default_mean)), tuple(cfg.get("image_std", default_std))
    return default_mean, default_std


def square_center_crop(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) → (S, S, 3) with S = min(H, W), centred (the benchmark's CLIP crop)."""
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return img[y0 : y0 + s, x0 : x0 + s]


def pad_square(img: np.ndarray, fill: int = 255) -> np.ndarray:
    """(H, W, 3) → (S, S, 3), S = max(H, W), content centred on ``fill`` (Subj-S: white)."""
    h, w = img.shape[:2]
    s = max(h, w)
    out = np.full((s, s, 3), fill, np.uint8)
    y0, x0 = (s - h) // 2, (s - w) // 2
    out[y0 : y0 + h, x0 : x0 + w] = img
    return out


def _to_pixels(images: Sequence[np.ndarray], size: int, mean, std) -> torch.Tensor:
    """[(H, W, 3) uint8] → (N, 3, size, size) float32, bicubic resize + mean/std normalisation."""
    arr = np.stack([cv2.resize(np.asarray(im), (size, size), interpolation=cv2.INTER_CUBIC) for im in images])
    x = torch.from_numpy(arr).float().div_(255.0).permute(0, 3, 1, 2)  # (N, 3, S, S)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _pooled(out: Any) -> torch.Tensor:
    """A features tensor from what transformers returns (tensor, or an output with pooler_output)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        return pooled
    return out.last_hidden_state[:, 0]  # CLS token


class ClipEncoder:
    """A CLIP model (transformers ``CLIPModel``) and its tokenizer, from a local directory.

    The paper's choice is OpenAI CLIP ViT-L/14 (``openai/clip-vit-large-patch14``): download it
    with ``huggingface-cli download openai/clip-vit-large-patch14 --local-dir DIR``.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 16):
        from transformers import AutoTokenizer, CLIPModel

        path = _require_dir(model_dir, "CLIP encoder", "download openai/clip-vit-large-patch14 there")
        self.model = CLIPModel.from_pretrained(str(path)).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.device = device
        self.batch_size = batch_size
        self.image_size = int(self.model.config.vision_config.image_size)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        self.mean, self.std = _preprocess_config(path, CLIP_MEAN, CLIP_STD)

    @torch.no_grad()
    def embed_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """[(H, W, 3) uint8] → (N, D) unit vectors, after a square centre crop."""
        feats = []
        for i in range(0, len(images), self.batch_size):
            crops = [square_center_crop(im) for im in images[i : i + self.batch_size]]
            px = _to_pixels(crops, self.image_size, self.mean, self.std).to(self.device)
            feats.append(_pooled(self.model.get_image_features(pixel_values=px)).float())
        return F.normalize(torch.cat(feats), dim=-1).cpu()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """[str] → (N, D) unit vectors; prompts truncated to the text model's length (77 for CLIP)."""
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        out = self.model.get_text_features(input_ids=tok.input_ids.to(self.device),
                                           attention_mask=tok.attention_mask.to(self.device))
        return F.normalize(_pooled(out).float(), dim=-1).cpu()


class ImageEncoder:
    """A generic vision encoder for Subj-S (DINO ViT-B/16 in the paper), from a local directory.

    Any transformers vision model works (``ViTModel`` for ``facebook/dino-vitb16``, ``Dinov2Model``,
    a CLIP model); the embedding is CLIP's projected image embedding, else the final CLS token.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 16):
        from transformers import AutoConfig, AutoModel, CLIPVisionModelWithProjection

        path = _require_dir(model_dir, "subject encoder", "download facebook/dino-vitb16 there")
        config = AutoConfig.from_pretrained(str(path))
        if config.model_type == "clip":
            self.model = CLIPVisionModelWithProjection.from_pretrained(str(path))
        else:
            self.model = AutoModel.from_pretrained(str(path))
        self.model = self.model.to(device).eval()
        vision = getattr(config, "vision_config", config)
        self.image_size = int(getattr(vision, "image_size", 224))
        self.mean, self.std = _preprocess_config(path, IMAGENET_MEAN, IMAGENET_STD)
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def embed_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """[(H, W, 3) uint8] → (N, D) unit vectors (images are padded square on white first)."""
        feats = []
        for i in range(0, len(images), self.batch_size):
            crops = [pad_square(np.asarray(im)) for im in images[i : i + self.batch_size]]
            px = _to_pixels(crops, self.image_size, self.mean, self.std).to(self.device)
            out = self.model(pixel_values=px)
            emb = getattr(out, "image_embeds", None)
            if emb is None:  # DINO/ViT: the CLS token (HF DINO checkpoints carry no trained pooler)
                emb = out.last_hidden_state[:, 0]
            feats.append(emb.float())
        return F.normalize(torch.cat(feats), dim=-1).cpu()


# --------------------------------------------------------------------------------------------
# The five metrics
# --------------------------------------------------------------------------------------------


def text_similarity(frames: np.ndarray, prompt: str, clip: ClipEncoder) -> float:
    """Text-S: mean over frames of cos(CLIP(prompt), CLIP(frame)). frames: (T, H, W, 3) uint8."""
    img = clip.embed_images(list(frames))  # (T, D)
    txt = clip.embed_texts([prompt])  # (1, D)
    return float((img @ txt.T).mean())


def video_similarity(frames: np.ndarray, ref_frames: np.ndarray, clip: ClipEncoder) -> float:
    """Vid-S: mean of the all-pairs cosine matrix between generated (T) and reference (R) frames."""
    a = clip.embed_images(list(frames))  # (T, D)
    b = clip.embed_images(list(ref_frames))  # (R, D)
    return float((a @ b.T).mean())


def subject_box_from_face(face_box: Box, shape: tuple[int, int], width: float = 3.0, up: float = 0.8,
                          down: float = 3.0) -> Box:
    """A head-and-shoulders subject box around a face box (the offline stand-in for GroundingDINO).

    The box is ``width`` face-widths wide, extends ``up`` face-heights above and ``down`` below.
    """
    x0, y0, x1, y1 = face_box
    fw, fh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    h, w = shape
    return (max(0, int(cx - width * fw / 2)), max(0, int(y0 - up * fh)),
            min(w, int(math.ceil(cx + width * fw / 2))), min(h, int(math.ceil(y1 + down * fh))))


def subject_similarity(frames: np.ndarray, ref_crops: Sequence[np.ndarray], encoder: ImageEncoder,
                       boxes: Sequence[Box | None]) -> float:
    """Subj-S: mean over frames of the mean cosine between the frame's subject crop and each reference
    crop; a frame whose subject was not found (box None) scores 0.

    Args:
        frames: (T, H, W, 3) uint8.
        ref_crops: reference subject images (H, W, 3) uint8.
        encoder: the subject encoder.
        boxes: one subject box per frame, or None where the subject is missing.
    """
    if len(boxes) != len(frames):
        raise ConfigError(f"subject_similarity: {len(boxes)} boxes for {len(frames)} frames")
    found = [(f, b) for f, b in zip(frames, boxes) if b is not None and b[2] > b[0] and b[3] > b[1]]
    if not found or not ref_crops:
        return 0.0
    crops = [f[b[1] : b[3], b[0] : b[2]] for f, b in found]
    sims = encoder.embed_images(crops) @ encoder.embed_images(list(ref_crops)).T  # (found, R)
    return float(sims.mean(dim=1).sum()) / len(frames)


FaceEmbedder = Callable[[np.ndarray], "tuple[Box, np.ndarray] | None"]


def dlib_face_embedder(detect_max_side: int = 640) -> FaceEmbedder:
    """The offline default: dlib's most confident face and its 128-d aligned embedding (pvchat.faces)."""
    from pvchat.faces import FaceEngine

    engine = FaceEngine(detect_max_side=detect_max_side)

    def embed(rgb: np.ndarray):
        faces = engine.detect(np.ascontiguousarray(rgb), embed=True)
        return (faces[0].box, faces[0].embedding) if faces else None

    return embed


def torch_face_embedder(encoder_dir: str | Path, detect_max_side: int = 640, device: str = "cpu") -> FaceEmbedder:
    """dlib's face box, extended 17 % up and 3 % down and resized without alignment (the benchmark's
    crop), embedded by a PyTorch face encoder loaded from ``encoder_dir`` (e.g. ArcFace R100)."""
    from pvchat.faces import FaceEngine
    from pvchat.synth.pv_face import load_face_encoder

    engine = FaceEngine(detect_max_side=detect_max_side)
    enc = load_face_encoder(encoder_dir).to(device).eval()

    @torch.no_grad()
    def embed(rgb: np.ndarray):
        faces = engine.detect(np.ascontiguousarray(rgb), embed=False)
        if not faces:
            return None
        x0, y0, x1, y1 = faces[0].box
        h = y1 - y0
        y0, y1 = max(0, int(y0 - 0.17 * h)), min(rgb.shape[0], int(y1 + 0.03 * h))
        crop = cv2.resize(rgb[y0:y1, x0:x1], (enc.config.input_size,) * 2, interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(crop).float().permute(2, 0, 1)[None].div(127.5).sub(1.0).to(device)
        return faces[0].box, enc(x)[0].cpu().numpy()

    return embed


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


@dataclass
class FaceScores:
    """Face-S (benchmark: misses count 0), the mean cosine over detected frames, the detection rate,
    and per-frame cosines (None where no face was found)."""

    face_s: float
    face_cos: float
    face_rate: float
    per_frame: list[float | None]
    boxes: list[Box | None]


def face_similarity(frames: np.ndarray, ref_embeddings: np.ndarray, embedder: FaceEmbedder) -> FaceScores:
    """Face-S over frames (T, H, W, 3) against reference face embeddings (R, D)."""
    refs = _unit(np.atleast_2d(ref_embeddings))  # (R, D)
    per_frame: list[float | None] = []
    boxes: list[Box | None] = []
    for f in frames:
        hit = embedder(f)
        if hit is None:
            per_frame.append(None)
            boxes.append(None)
            continue
        box, emb = hit
        per_frame.append(float((refs @ _unit(emb)).mean()))
        boxes.append(tuple(int(v) for v in box))
    found = [s for s in per_frame if s is not None]
    rate = len(found) / max(1, len(per_frame))
    cos = float(np.mean(found)) if found else 0.0
    return FaceScores(face_s=cos * rate, face_cos=cos, face_rate=rate, per_frame=per_frame, boxes=boxes)


@dataclass
class Dynamics:
    """Dync-D of one clip: ``dynamic`` (the VBench rule), the mean pair score (continuous) and each
    pair's top-5 % flow magnitude in pixels at the flow resolution."""

    dynamic: bool
    score: float
    pair_scores: list[float]
    threshold: float


def resample_indices(num_frames: int, fps: float, target_fps: float = 8.0) -> list[int]:
    """Indices that bring a clip at ``fps`` close to ``target_fps`` (never upsampled)."""
    step = max(1, int(round(fps / target_fps))) if fps > 0 else 1
    return list(range(0, num_frames, step))


def dynamic_degree(frames: np.ndarray, fps: float = 8.0, flow_size: int = 256, top: float = 0.05) -> Dynamics:
    """Dync-D with OpenCV Farnebäck flow (VBench's rule, RAFT replaced; see the module docstring).

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        fps: the clip's frame rate (resampled to ~8 fps first).
        flow_size: shorter side the frames are resized to before flow.
        top: fraction of the largest flow magnitudes averaged per pair.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise InputError(f"dynamic degree needs (T>=2, H, W, 3) frames, got {frames.shape}")
    idx = resample_indices(len(frames), fps)
    if len(idx) < 2:
        idx = [0, len(frames) - 1]
    h, w = frames.shape[1:3]
    s = flow_size / min(h, w)
    size = (max(8, round(w * s)), max(8, round(h * s)))
    grey = [cv2.cvtColor(cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY) for i in idx]
    pair_scores = []
    for a, b in zip(grey[:-1], grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # (h, w, 2)
        mag = np.sqrt((flow**2).sum(-1)).ravel()
        k = max(1, int(len(mag) * top))
        pair_scores.append(float(np.partition(mag, len(mag) - k)[-k:].mean()))
    threshold = 6.0 * min(size) / 256.0
    moving = sum(p > threshold for p in pair_scores)
    need = max(1, round(len(grey) / 4))
    return Dynamics(dynamic=moving >= need, score=float(np.mean(pair_scores)), pair_scores=pair_scores,
                    threshold=threshold)


# --------------------------------------------------------------------------------------------
# All metrics of one clip
# --------------------------------------------------------------------------------------------


@dataclass
class MetricsConfig:
    """Which encoders to use (local directories; None disables the metrics that need them).

    Attributes:
        clip_dir: CLIP model directory for Text-S and Vid-S (paper: ViT-L/14).
        subject_dir: vision encoder directory for Subj-S (paper: DINO ViT-B/16).
        face_encoder: "dlib" (offline default) or a directory with a PyTorch face encoder (pv_face).
        num_frames: frames sampled uniformly per clip for the similarity metrics.
        detect_max_side: dlib detector resolution bound.
        flow_size: Dync-D flow resolution (shorter side).
        device: torch device for the encoders.
    """

    clip_dir: str | None = None
    subject_dir: str | None = None
    face_encoder: str = "dlib"
    num_frames: int = 8
    detect_max_side: int = 640
    flow_size: int = 256
    device: str = "cpu"


@dataclass
class ClipScores:
    """Every score of one clip (None: not computed for lack of an encoder or a reference)."""

    text_s: float | None = None
    vid_s: float | None = None
    subj_s: float | None = None
    face_s: float | None = None
    face_cos: float | None = None
    face_rate: float | None = None
    dync_score: float | None = None
    dynamic: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def uniform_sample(frames: np.ndarray, n: int) -> np.ndarray:
    """n frames at evenly spaced indices (all of them when n >= T)."""
    t = len(frames)
    if n >= t:
        return frames
    return frames[np.linspace(0, t - 1, n).round().astype(int)]


class VideoAlchemyMetrics:
    """Scores clips with the five metrics; encoders are loaded on first use and kept."""

    def __init__(self, config: MetricsConfig | None = None, face_embedder: FaceEmbedder | None = None):
        self.config = config or MetricsConfig()
        self._face_embedder = face_embedder

    @functools.cached_property
    def clip(self) -> ClipEncoder | None:
        return ClipEncoder(self.config.clip_dir, self.config.device) if self.config.clip_dir else None

    @functools.cached_property
    def subject_encoder(self) -> ImageEncoder | None:
        c = self.config
        return ImageEncoder(c.subject_dir, c.device) if c.subject_dir else None

    @property
    def face_embedder(self) -> FaceEmbedder:
        if self._face_embedder is None:
            c = self.config
            if c.face_encoder == "dlib":
                self._face_embedder = dlib_face_embedder(c.detect_max_side)
            else:
                self._face_embedder = torch_face_embedder(c.face_encoder, c.detect_max_side, c.device)
        return self._face_embedder

    def embed_faces(self, faces: Sequence[np.ndarray], allow_empty: bool = False) -> np.ndarray | None:
        """(R, D) embeddings of face images (images with no detectable face are skipped); no face at
        all is an InputError, or None with ``allow_empty``."""
        embs = [hit[1] for hit in (self.face_embedder(np.ascontiguousarray(f)) for f in faces) if hit is not None]
        if not embs:
            if allow_empty:
                return None
            raise InputError("no face found in any reference face image")
        return np.stack(embs).astype(np.float32)

    def score(
        self,
        frames: np.ndarray,
        fps: float = 8.0,
        prompt: str | None = None,
        ref_frames: np.ndarray | None = None,
        ref_face_embeddings: np.ndarray | None = None,
        ref_subject_crops: Sequence[np.ndarray] | None = None,
    ) -> ClipScores:
        """All metrics that the given references and configured encoders allow. frames: (T, H, W, 3)."""
        frames = np.asarray(frames)
        out = ClipScores()
        if len(frames) >= 2:
            d = dynamic_degree(frames, fps, self.config.flow_size)
            out.dync_score, out.dynamic = d.score, d.dynamic
        sample = uniform_sample(frames, self.config.num_frames)
        if self.clip is not None and prompt:
            out.text_s = text_similarity(sample, prompt, self.clip)
        if self.clip is not None and ref_frames is not None and len(ref_frames):
            out.vid_s = video_similarity(sample, uniform_sample(np.asarray(ref_frames), self.config.num_frames), self.clip)
        face = None
        if ref_face_embeddings is not None and len(ref_face_embeddings):
            face = face_similarity(sample, ref_face_embeddings, self.face_embedder)
            out.face_s, out.face_cos, out.face_rate = face.face_s, face.face_cos, face.face_rate
        if self.subject_encoder is not None and ref_subject_crops:
            face_boxes = face.boxes if face is not None else [
                hit[0] if (hit := self.face_embedder(f)) is not None else None for f in sample]
            boxes = [subject_box_from_face(b, f.shape[:2]) if b is not None else None for f, b in zip(sample, face_boxes)]
            out.subj_s = subject_similarity(sample, ref_subject_crops, self.subject_encoder, boxes)
        return out


# --------------------------------------------------------------------------------------------
# Per-subject calibration and the keep/drop filter (research/generators.md §4.3)
# --------------------------------------------------------------------------------------------


def _mean_cos_to(refs: np.ndarray, embs: np.ndarray) -> np.ndarray:
    """(N,) mean cosine of each row of ``embs`` (N, D) to the reference rows (R, D)."""
    return (_unit(embs) @ _unit(refs).T).mean(axis=1)


@dataclass
class Thresholds:
    """Per-subject gates. ``face`` applies to the mean face cosine over detected frames."""

    face: float
    face_rate: float = 0.75
    text: float | None = None
    dync: float | None = None
    max_vid_s: float | None = None
    own_median: float | None = None
    negative_high: float | None = None
    separable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate_face_threshold(ref_embeddings: np.ndarray, negative_embeddings: np.ndarray,
                             quantile: float = 0.99, weight: float = 0.5, floor: float | None = None) -> Thresholds:
    """The Face-S gate of one subject, between its own faces and its hard negatives.

    Own similarities: each reference face against the others (leave-one-out mean cosine, the same
    quantity a clip's face gets). Negative similarities: each hard-negative face against all the
    references. The threshold sits ``weight`` of the way from the negatives' ``quantile`` up to the
    own faces' median; if the two overlap (``separable`` False) it is the own median.

    Args:
        ref_embeddings: (R >= 2, D) the subject's own face embeddings.
        negative_embeddings: (M >= 1, D) hard-negative face embeddings.
        quantile: the high quantile of negative similarities to clear.
        weight: where between the negatives' quantile (0) and the own median (1) the gate sits.
        floor: an optional lower bound on the threshold.
    """
    refs = _unit(np.atleast_2d(ref_embeddings))
    negs = _unit(np.atleast_2d(negative_embeddings))
    if len(refs) < 2 or len(negs) < 1:
        raise InputError(f"calibration needs >= 2 own faces and >= 1 negative, got {len(refs)} and {len(negs)}")
    sims = refs @ refs.T  # (R, R)
    own = (sims.sum(1) - np.diag(sims)) / (len(refs) - 1)
    neg = _mean_cos_to(refs, negs)
    own_med, neg_hi = float(np.median(own)), float(np.quantile(neg, quantile))
    separable = own_med > neg_hi
    tau = neg_hi + weight * (own_med - neg_hi) if separable else own_med
    if floor is not None:
        tau = max(tau, floor)
    return Thresholds(face=float(tau), own_median=own_med, negative_high=neg_hi, separable=separable)


@dataclass
class Decision:
    """keep/drop of one clip with the scores it was judged on and why it was dropped."""

    keep: bool
    reasons: list[str] = field(default_factory=list)
    scores: ClipScores = field(default_factory=ClipScores)

    def to_dict(self) -> dict[str, Any]:
        return {"keep": self.keep, "reasons": list(self.reasons), "scores": self.scores.to_dict()}


def judge(scores: ClipScores, th: Thresholds, positive: bool = True) -> Decision:
    """Apply the gates. A positive needs its face (detection rate and mean cosine ≥ ``th.face``),
    enough text alignment and motion where gated, and must not duplicate a reference (Vid-S). A
    negative is dropped when its face is as close to the subject as a positive's (label noise)."""
    reasons: list[str] = []
    if positive:
        if scores.face_rate is not None and scores.face_rate < th.face_rate:
            reasons.append(f"face found in {scores.face_rate:.2f} of frames < {th.face_rate:.2f}")
        if scores.face_cos is not None and scores.face_rate and scores.face_cos < th.face:
            reasons.append(f"face cos {scores.face_cos:.3f} < {th.face:.3f}")
        if th.text is not None and scores.text_s is not None and scores.text_s < th.text:
            reasons.append(f"Text-S {scores.text_s:.3f} < {th.text:.3f}")
        if th.dync is not None and scores.dync_score is not None and scores.dync_score < th.dync:
            reasons.append(f"Dync-D score {scores.dync_score:.2f} < {th.dync:.2f}")
        if th.max_vid_s is not None and scores.vid_s is not None and scores.vid_s > th.max_vid_s:
            reasons.append(f"Vid-S {scores.vid_s:.3f} > {th.max_vid_s:.3f} (near-duplicate)")
    elif scores.face_cos is not None and scores.face_rate and scores.face_cos >= th.face:
        reasons.append(f"negative's face cos {scores.face_cos:.3f} >= {th.face:.3f} (looks like the subject)")
    return Decision(keep=not reasons, reasons=reasons, scores=scores)


class QualityFilter:
    """One subject's filter: its references embedded and its gates calibrated once, then keep/drop per clip.

    Args:
        ref_faces: the subject's face images (H, W, 3) uint8 (>= 2 for calibration).
        negative_faces: hard-negative face images (or frames); with faces found in them the Face-S
            gate is calibrated.
        metrics: the scorer (default: offline dlib Face-S + Farnebäck Dync-D, no CLIP).
        face_threshold: the face gate when it cannot be calibrated.
        min_text: Text-S gate (None: off).
        min_dync: Dync-D mean-flow gate (None: off; e.g. on for text-to-video backends only).
        max_vid_s: near-duplicate gate against ``ref_frames`` (None: off).
        ref_frames: frames of the reference video (enables Vid-S).
        ref_subject_crops: subject images (enables Subj-S).
    """

    def __init__(self, ref_faces: Sequence[np.ndarray], negative_faces: Sequence[np.ndarray] = (),
                 metrics: VideoAlchemyMetrics | None = None, face_threshold: float = 0.9,
                 min_text: float | None = None, min_dync: float | None = None, max_vid_s: float | None = 0.95,
                 ref_frames: np.ndarray | None = None, ref_subject_crops: Sequence[np.ndarray] | None = None):
        self.metrics = metrics or VideoAlchemyMetrics()
        self.ref_embeddings = self.metrics.embed_faces(ref_faces)  # (R, D)
        neg = self.metrics.embed_faces(negative_faces, allow_empty=True) if len(negative_faces) else None
        if neg is not None and len(self.ref_embeddings) >= 2:
            self.thresholds = calibrate_face_threshold(self.ref_embeddings, neg)
        else:
            self.thresholds = Thresholds(face=face_threshold, separable=False)
        self.thresholds.text, self.thresholds.dync, self.thresholds.max_vid_s = min_text, min_dync, max_vid_s
        self.ref_frames = ref_frames
        self.ref_subject_crops = list(ref_subject_crops) if ref_subject_crops else None

    def __call__(self, frames: np.ndarray, fps: float = 8.0, prompt: str | None = None, positive: bool = True) -> Decision:
        """Score a clip (T, H, W, 3) and keep or drop it (a negative is dropped when it looks like the subject)."""
        scores = self.metrics.score(frames, fps=fps, prompt=prompt, ref_frames=self.ref_frames,
                                    ref_face_embeddings=self.ref_embeddings, ref_subject_crops=self.ref_subject_crops)
        return judge(scores, self.thresholds, positive=positive)
