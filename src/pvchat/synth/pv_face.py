"""A PyTorch face encoder and a differentiable face crop for PersonalVideo's identity loss.

PersonalVideo (papers/personalvideo-paper.txt §4.1, Eq. 2) embeds reference faces and faces of
generated frames with ArcFace (ResNet-100 trained on Glint360K) and minimises 1 − cos. insightface
ships that model as ONNX (no gradients), so we build the IResNet architecture in PyTorch with the
module names of ``arcface_torch``; :func:`import_arcface_torch` converts its ``backbone.pth`` into
our local-directory format (``face_encoder.json`` + ``model.safetensors``), which
:func:`load_face_encoder` reads. Any depth/width is a config choice, so tests use a tiny random one.

How the face is found in a generated frame and how gradients pass the crop is not stated in the
paper (research/generators.md §1.2); we find the box or landmarks on the *detached* frame and
resample the face with a differentiable ``grid_sample`` (:func:`warp_face`), so the loss reaches
the pixels and, through the VAE decoder, the latents.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pvchat.errors import ConfigError, InputError
from pvchat.faces import FaceEngine
from pvchat.io import load_tensors, read_json, save_tensors, write_json

# ArcFace's 5-point template in a 112×112 crop: eye centres, nose tip, mouth corners (x, y).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
DEPTHS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3)}
CONFIG_NAME = "face_encoder.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class FaceEncoderConfig:
    """IResNet shape. ``layers`` blocks per stage, ``width`` channels of stage 1 (×2 per stage)."""

    layers: tuple[int, int, int, int] = DEPTHS["r100"]
    width: int = 64
    embedding_dim: int = 512
    input_size: int = 112

    def __post_init__(self):
        self.layers = tuple(int(v) for v in self.layers)
        if len(self.layers) != 4 or self.input_size % 16 or self.width < 1:
            raise ConfigError(f"bad face encoder config: layers {self.layers}, input {self.input_size}")


class IBasicBlock(nn.Module):
    """Pre-activation residual block of IResNet: BN → conv3×3 → BN → PReLU → conv3×3(stride) → BN."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class FaceEncoder(nn.Module):
    """IResNet face embedder: (B, 3, S, S) in [-1, 1] → (B, embedding_dim) (not normalised)."""

    def __init__(self, config: FaceEncoderConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w, eps=1e-5)
        self.prelu = nn.PReLU(w)
        cin = w
        for i, n in enumerate(config.layers):
            cout = w * 2**i
            blocks = [IBasicBlock(cin if j == 0 else cout, cout, 2 if j == 0 else 1) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        side = config.input_size // 16
        self.fc = nn.Linear(cin * side * side, config.embedding_dim)
        self.features = nn.BatchNorm1d(config.embedding_dim, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))  # (B, w, S, S)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 8w, S/16, S/16)
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))  # (B, D)


def save_face_encoder(model: FaceEncoder, out_dir: str | Path) -> Path:
    """Write ``face_encoder.json`` + ``model.safetensors`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG_NAME, asdict(model.config))
    save_tensors(out / WEIGHTS_NAME, model.state_dict())
    return out


def load_face_encoder(model_dir: str | Path) -> FaceEncoder:
    """Load a face encoder saved by :func:`save_face_encoder` (frozen, eval mode)."""
    path = Path(model_dir).expanduser()
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        raise ConfigError(
            f"face encoder: no {CONFIG_NAME}/{WEIGHTS_NAME} in {path}; download arcface_torch's "
            "glint360k_cosface_r100 backbone.pth and run pvchat.synth.pv_face.import_arcface_torch(pth, DIR)"
        )
    cfg = read_json(path / CONFIG_NAME)
    model = FaceEncoder(FaceEncoderConfig(**cfg))
    missing, unexpected = model.load_state_dict(load_tensors(path / WEIGHTS_NAME), strict=False)
    if missing or unexpected:
        raise InputError(f"{path}: face encoder weights do not match its config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval().requires_grad_(False)
    return model


def import_arcface_torch(pth_path: str | Path, out_dir: str | Path, depth: str = "r100") -> Path:
    """Convert an ``arcface_torch`` IResNet ``backbone.pth`` (tensors only) into our format."""
    if depth not in DEPTHS:
        raise ConfigError(f"unknown IResNet depth {depth!r}; choose one of: {', '.join(DEPTHS)}")
    state = torch.load(str(pth_path), map_location="cpu", weights_only=True)
    model = FaceEncoder(FaceEncoderConfig(layers=DEPTHS[depth]))
    model.load_state_dict(state, strict=True)
    return save_face_encoder(model, out_dir)


# --------------------------------------------------------------------------------------------
# Differentiable crops
# --------------------------------------------------------------------------------------------


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """dlib's 68 landmarks → ArcFace's 5 points (eye centres, nose tip, mouth corners), (5, 2)."""
    lm = np.asarray(landmarks68, np.float32)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def align_matrix(points5: np.ndarray, size: int = 112) -> np.ndarray:
    """The similarity transform (2, 3) taking 5 image points to the ArcFace template at ``size``."""
    dst = ARCFACE_TEMPLATE * (size / 112.0)
    m, _ = cv2.estimateAffinePartial2D(np.asarray(points5, np.float32), dst, method=cv2.LMEDS)
    if m is None:
        raise InputError("could not fit a face alignment from the landmarks")
    return m.astype(np.float32)


def box_matrix(box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The affine (2, 3) mapping a box (x0, y0, x1, y1) onto a size×size crop."""
    x0, y0, x1, y1 = box
    sx, sy = (size - 1) / max(x1 - x0 - 1, 1e-6), (size - 1) / max(y1 - y0 - 1, 1e-6)
    return np.array([[sx, 0, -sx * x0], [0, sy, -sy * y0]], np.float32)


def warp_face(images: torch.Tensor, matrix: np.ndarray, size: int) -> torch.Tensor:
    """Resample (B, 3, H, W) through an image→crop affine ``matrix`` (2, 3) to (B, 3, size, size).

    Bilinear ``grid_sample``: differentiable with respect to ``images``; pixel centres at integers.
    """
    b, _, h, w = images.shape
    inv = torch.from_numpy(cv2.invertAffineTransform(np.asarray(matrix, np.float64)).astype(np.float32))
    v, u = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    uv1 = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (S, S, 3)
    xy = uv1 @ inv.T  # (S, S, 2) source pixel coordinates
    grid = torch.stack([2 * xy[..., 0] / max(w - 1, 1) - 1, 2 * xy[..., 1] / max(h - 1, 1) - 1], dim=-1)
    grid = grid.to(images.device, images.dtype).unsqueeze(0).expand(b, -1, -1, -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def face_matrix_for(frame_uint8: np.ndarray, size: int, mode: str = "detect",
                    fallback_box: tuple[float, float, float, float] = (0.25, 0.1, 0.75, 0.6)) -> tuple[np.ndarray, bool]:
    """Where the face of a (detached) generated frame is: (image→crop matrix, found).

    ``mode`` "detect" runs dlib and aligns to the ArcFace template; when no face is found, or with
    ``mode`` "box", ``fallback_box`` (fractions of W and H) is cropped instead.
    """
    h, w = frame_uint8.shape[:2]
    if mode == "detect":
        faces = FaceEngine().detect(np.ascontiguousarray(frame_uint8), embed=False)
        if faces:
            return align_matrix(five_points(faces[0].landmarks), size), True
    elif mode != "box":
        raise ConfigError(f"unknown face crop mode {mode!r}; choose one of: box, detect")
    fx0, fy0, fx1, fy1 = fallback_box
    return box_matrix((fx0 * w, fy0 * h, fx1 * w, fy1 * h), size), False


def color_jitter(x: torch.Tensor, generator: torch.Generator, strength: float = 0.1) -> torch.Tensor:
    """Brightness/contrast/saturation jitter of (B, 3, H, W) images in [-1, 1] (reference faces, §4.1)."""
    b = x.shape[0]
    r = (torch.rand(b, 3, generator=generator) * 2 - 1) * strength + 1  # (B, 3) factors around 1
    x01 = (x + 1) / 2
    x01 = x01 * r[:, 0].view(b, 1, 1, 1)
    mean = x01.mean(dim=(1, 2, 3), keepdim=True)
    x01 = (x01 - mean) * r[:, 1].view(b, 1, 1, 1) + mean
    grey = x01.mean(dim=1, keepdim=True)
    x01 = (x01 - grey) * r[:, 2].view(b, 1, 1, 1) + grey
    return x01.clamp(0, 1) * 2 - 1
