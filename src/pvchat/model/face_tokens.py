"""Face tokens: identity embeddings from a pretrained face network, as extra visual tokens.

PVChat's identity signal comes from a vision tower pretrained on web-scale data (InternVideo2,
paper §4.1). No such weights ship offline, and a randomly initialised ViT trained on one
person's synthetic clips does not learn identity that transfers to new people: on the offline
world a tiny ViT trained end to end on 228 rendered clips with and without the subject answers
held-out queries at chance (0.58–0.67, bench notes in the README). The one pretrained vision
network that does ship offline is dlib's face recognition ResNet. With ``face_tokens > 0`` the
tower appends, to every frame's patch tokens, up to that many tokens built from the faces dlib
finds in the frame::

    token = [ 128-d dlib embedding | x0, y0, x1, y1 (box / frame size) | 1 (present) | 0 … ]   (D,)

and all-zero tokens for empty slots, largest faces first. Nothing here trains: the Q-former's
cross-attention (keys and values, trained) learns what to read from them, and the subject
queries learn to match a person's embedding. The ``paper`` preset keeps them off.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from pvchat.errors import ConfigError
from pvchat.faces import FaceEngine

EMBED_DIM = 128
TOKEN_DIM = EMBED_DIM + 5  # embedding, box, present flag


class FaceTokens:
    """Frames (normalised tensors) → (B, T, F, D) face tokens. Frozen; holds no parameters.

    Args:
        max_faces: F, face slots per frame.
        hidden_size: D, the vision tower's width (≥ 133).
        mean, std: the normalisation the frames went through (to recover pixels for dlib).
    """

    def __init__(self, max_faces: int, hidden_size: int, mean: Sequence[float], std: Sequence[float]):
        if max_faces < 1:
            raise ConfigError(f"face_tokens must be ≥ 1 when on, got {max_faces}")
        if hidden_size < TOKEN_DIM:
            raise ConfigError(f"face tokens need a vision hidden_size ≥ {TOKEN_DIM}, got {hidden_size}")
        self.max_faces, self.hidden_size = max_faces, hidden_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            self._engine = FaceEngine()
        return self._engine

    def frame_tokens(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 → (F, D) float32."""
        H, W = rgb.shape[:2]
        faces = sorted(self.engine.detect(rgb, embed=True), key=lambda f: -f.size)[: self.max_faces]
        out = np.zeros((self.max_faces, self.hidden_size), np.float32)
        for i, f in enumerate(faces):
            x0, y0, x1, y1 = f.box
            out[i, :EMBED_DIM] = f.embedding
            out[i, EMBED_DIM : EMBED_DIM + 4] = (x0 / W, y0 / H, x1 / W, y1 / H)
            out[i, EMBED_DIM + 4] = 1.0
        return out

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) normalised → (B, T, F, D)."""
        B, T = pixel_values.shape[:2]
        frames = pixel_values.detach().float().cpu().reshape(B * T, 3, *pixel_values.shape[-2:])
        rgb = ((frames * self.std + self.mean).clamp(0, 1) * 255).round().to(torch.uint8)  # (B·T, 3, S, S)
        rgb = rgb.permute(0, 2, 3, 1).numpy()
        tokens = np.stack([self.frame_tokens(np.ascontiguousarray(f)) for f in rgb])  # (B·T, F, D)
        return torch.from_numpy(tokens).reshape(B, T, self.max_faces, self.hidden_size).to(pixel_values.device)
