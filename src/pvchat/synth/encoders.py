"""Image and text encoders for the synthesis metrics: CLIP (Text-S, Vid-S) and a DINO-style vision
model (Subj-S), loaded from local directories, with the crops and normalisation they expect.

Nothing is downloaded: each encoder is ``from_pretrained(local_dir)``; the metrics themselves are
:mod:`pvchat.synth.metrics` and :mod:`pvchat.synth.identity_metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPModel, CLIPVisionModelWithProjection

from pvchat.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _require_dir(path: str | Path, what: str, hint: str) -> Path:
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise ConfigError(f"{what}: no model at {p} (expected config.json); {hint}")
    return p


def _preprocess_config(path: Path, default_mean, default_std) -> tuple[tuple, tuple]:
    """(mean, std) from a local preprocessor_config.json if it has them."""
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
