"""InternVideo2-1B's ViT as a pvchat vision tower: the paper's base's vision encoder.

The ViT (pvchat-official.md §2.2): Conv3d patch embedding (tubelet 1, patch 14), a class token,
absolute position embeddings (``img_pos_embed`` for one frame, ``pos_embed`` for ``num_frames``),
pre-norm blocks ``x + ls1·attn(RMSNorm(x))``, ``x + ls2·mlp(RMSNorm(x))`` with a bias-free qkv,
q and k RMS-normalised over the full width before the heads are split, and no final norm (the
features are the last instantiated block's output, the penultimate of 40). It attends across the
frames jointly, so :class:`InternVideo2Tower` returns the clip as one token set
``(B, 1, 1 + T·L, C)``: PVChat's Q-former then reads exactly the official 2049 tokens (T = 8,
L = 256). Not reproduced: the official HD input (two 224 tiles + a global view, 3 × 112 queries);
pvchat feeds one 224×224 view of each frame.

Its weights come from the official checkpoint through :mod:`pvchat.model.internvideo2` (the converter).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pvchat.errors import ConfigError, InputError


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class Attention(nn.Module):
    """Multi-head self-attention, q and k RMS-normalised over the full width (qk_normalization)."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm, self.k_norm = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, N, C) each
        q, k = self.q_norm(q), self.k_norm(k)  # over all C, before the heads split
        q, k, v = (t.view(B, N, self.num_heads, C // self.num_heads).transpose(1, 2) for t in (q, k, v))  # (B, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ/√d) v
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, eps: float = 1e-6):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.attn = Attention(dim, num_heads, eps)
        self.mlp = nn.Sequential()
        self.mlp.fc1, self.mlp.act, self.mlp.fc2 = nn.Linear(dim, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, dim)
        self.ls1 = nn.Parameter(torch.full((dim,), 1e-5))  # LayerScale, init 1e-5
        self.ls2 = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1 * self.attn(self.norm1(x))
        return x + self.ls2 * self.mlp(self.norm2(x))


class InternVideo2Tower(nn.Module):
    """InternVideo2's ViT as a pvchat vision tower: (B, T, 3, S, S) → (B, 1, 1 + T·L, C) (module docstring).

    Args:
        hidden_size: C (1408).
        depth: blocks instantiated (39: the official ``x_vis_return_idx = -2`` of 40).
        num_heads: 16.
        mlp_hidden: 6144.
        image_size: S (224).
        patch_size: 14.
        num_frames: frames of the video position embedding (8); a clip has 1 or this many frames.
    """

    def __init__(self, hidden_size: int = 1408, depth: int = 39, num_heads: int = 16, mlp_hidden: int = 6144,
                 image_size: int = 224, patch_size: int = 14, num_frames: int = 8):
        super().__init__()
        if image_size % patch_size or hidden_size % num_heads:
            raise ConfigError(f"internvideo2: image_size {image_size} must divide by patch_size {patch_size} and "
                              f"hidden_size {hidden_size} by num_heads {num_heads}")
        self._size, self.num_frames = image_size, num_frames
        L = (image_size // patch_size) ** 2
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(3, hidden_size, (1, patch_size, patch_size), (1, patch_size, patch_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_frames * L, hidden_size))  # video
        self.img_pos_embed = nn.Parameter(torch.zeros(1, 1 + L, hidden_size))  # one frame
        self.blocks = nn.ModuleList(Block(hidden_size, num_heads, mlp_hidden) for _ in range(depth))
        self.trainable_blocks = 0
        self.face_tokens = None
        self.patch_tokens = True
        self.set_trainable(0)

    @property
    def hidden_size(self) -> int:
        return self.cls_token.shape[-1]

    @property
    def image_size(self) -> int:
        return self._size

    def set_trainable(self, last_k: int = 0) -> None:
        """Freeze everything, then unfreeze the last ``last_k`` blocks (paper §3.4 stage 2)."""
        if not 0 <= last_k <= len(self.blocks):
            raise ConfigError(f"train_last_k must be in 0..{len(self.blocks)}; got {last_k}")
        self.requires_grad_(False)
        for block in self.blocks[len(self.blocks) - last_k:]:
            block.requires_grad_(True)
        self.trainable_blocks = last_k
        self.train(self.training)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) → (B, 1, 1 + T·L, C): class token + every frame's patches, attended jointly."""
        if pixel_values.dim() != 5 or pixel_values.shape[2] != 3:
            raise InputError(f"pixel_values must be (B, T, 3, H, W); got {tuple(pixel_values.shape)}")
        B, T = pixel_values.shape[:2]
        if T not in (1, self.num_frames):
            raise InputError(f"InternVideo2 reads 1 or {self.num_frames} frames (its position embeddings); got {T}")
        w = self.patch_embed.proj.weight
        x = self.patch_embed.proj(pixel_values.transpose(1, 2).to(w.dtype))  # (B, C, T, H', W')
        x = x.flatten(2).transpose(1, 2)  # (B, T·L, C), frame-major
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1 + T·L, C)
        x = x + (self.img_pos_embed if T == 1 else self.pos_embed)
        for block in self.blocks:
            x = block(x)
        return x.unsqueeze(1)  # one "frame" of 1 + T·L tokens                           (B, 1, 1 + T·L, C)
