"""Vision tower: any Hugging Face ViT (CLIP / SigLIP style) applied frame by frame.

::

    pixel_values (B, T, 3, H, W)
        │ fold time into the batch                       (B·T, 3, H, W)
        │ ViT blocks 1 … K  (K = the feature block)      (B·T, N, D)
        ▼ unfold                                         (B, T, N, D)

PVChat's encoder is InternVideo2-1B with ``x_vis_return_idx=-2``: the features are the raw output
of the *penultimate* block, with no final norm (pvchat-official.md §2.2). ``feature_layer`` follows
the same convention over Hugging Face's ``hidden_states``: ``-1`` is the last block, ``-2`` the one
before it (default), a positive ``k`` the k-th block. The embeddings (``hidden_states[0]``) are not
a valid choice. The features are read with a forward hook on that block, so the other hidden states
are not kept in memory. Blocks after the feature block still run (the HF model is not truncated, so
it saves and loads unchanged) but get no gradient, so they are never made trainable.

Freezing (paper §3.4): stage 1 keeps the tower frozen; stage 2 trains the last K blocks *that feed
the features*. Frozen parts stay in eval mode (dropout off) whatever ``.train()`` is called on a
parent, as the official ``freeze_module`` does (§2.2), but through an explicit :meth:`train`.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.utils import logging as hf_logging

from pvchat.errors import ConfigError, InputError, unknown_choice

# name → (config class, model class); ``from_config`` uses the keys.
VISION_MODELS: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "clip": (CLIPVisionConfig, CLIPVisionModel),
    "siglip": (SiglipVisionConfig, SiglipVisionModel),
}
# ``model_type`` in a saved config.json → vision model class. A full CLIP/SigLIP checkpoint
# (image + text towers) loads its vision part: the vision classes read ``vision_config`` and the
# ``vision_model.*`` weights from it.
_PRETRAINED_TYPES: dict[str, type[PreTrainedModel]] = {
    "clip_vision_model": CLIPVisionModel,
    "clip": CLIPVisionModel,
    "siglip_vision_model": SiglipVisionModel,
    "siglip": SiglipVisionModel,
}


def list_vision_models() -> list[str]:
    return sorted(VISION_MODELS)


def validated_config(config_cls: type[PretrainedConfig], kwargs: dict, what: str) -> PretrainedConfig:
    """``config_cls(**kwargs)``, refusing keys the config neither declares nor consumes: HF configs
    would keep a misspelled key (``num_hidden_layer=2``) as an attribute and silently use the default."""
    config = config_cls(**kwargs)
    known = (set(inspect.signature(config_cls.__init__).parameters) | set(config_cls().to_dict())) - {"self", "kwargs"}
    bad = sorted(k for k in set(kwargs) - known if k in config.to_dict())  # legacy keys (rope_theta) are consumed
    if bad:
        raise ConfigError(f"unknown {what} config keys {bad}; valid: {', '.join(sorted(known))}")
    return config


def _encoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a HF ViT (``encoder.layers`` in CLIP/SigLIP, ``encoder.layer`` in BERT-likes)."""
    found = [m for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and n.split(".")[-2:-1] == ["encoder"]]
    if len(found) != 1:
        raise ConfigError(f"{type(model).__name__}: cannot find one list of encoder blocks (found {len(found)})")
    return found[0]


class VisionTower(nn.Module):
    """Frames → per-frame patch features from a chosen block of a HF vision transformer.

    Args:
        model: a HF vision model (e.g. ``CLIPVisionModel``, ``SiglipVisionModel``).
        feature_layer: which block's output to return; ``-2`` = penultimate, as InternVideo2 in
            PVChat (pvchat-official.md §2.2).
    """

    def __init__(self, model: PreTrainedModel, feature_layer: int = -2):
        super().__init__()
        self.model = model
        self.blocks = _encoder_blocks(model)
        n = len(self.blocks)
        k = feature_layer if feature_layer > 0 else n + 1 + feature_layer
        if not 1 <= k <= n:
            raise ConfigError(
                f"feature_layer {feature_layer} is not a block of a {n}-block encoder; use 1..{n} or -{n}..-1"
            )
        self.feature_layer = feature_layer
        self.num_blocks = k  # blocks that feed the features: 1 … k
        self._features: list[torch.Tensor] = []
        self.blocks[k - 1].register_forward_hook(self._keep_features)
        self.trainable_blocks = 0
        self.set_trainable(0)
        self.face_tokens = None  # optional FaceTokens (model/face_tokens.py), appended to every frame's tokens
        self.patch_tokens = True  # False (needs face_tokens): a frame is its face tokens alone, the ViT is not run

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, model_type: str, feature_layer: int = -2, **config_kwargs) -> "VisionTower":
        """A randomly initialised tower, e.g. ``from_config("clip", hidden_size=32, image_size=32, ...)``."""
        if model_type not in VISION_MODELS:
            raise unknown_choice("vision model_type", model_type, VISION_MODELS)
        config_cls, model_cls = VISION_MODELS[model_type]
        return cls(model_cls(validated_config(config_cls, config_kwargs, model_type)), feature_layer=feature_layer)

    @classmethod
    def from_pretrained(cls, path: str | Path, feature_layer: int = -2, **kwargs) -> "VisionTower":
        """Load from a LOCAL directory written by ``save_pretrained`` (a vision model, or a full
        CLIP/SigLIP model whose vision part is taken). ``kwargs`` go to HF ``from_pretrained``
        (e.g. ``dtype``)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise InputError(f"{path}: no vision model here (expected a local directory with config.json)")
        model_type = AutoConfig.from_pretrained(path, local_files_only=True).model_type
        if model_type not in _PRETRAINED_TYPES:
            raise unknown_choice(f"vision checkpoint type in {path}:", model_type, _PRETRAINED_TYPES)
        full = not model_type.endswith("_vision_model")
        verbosity = hf_logging.get_verbosity()
        if full:  # the text tower's weights are skipped on purpose; don't list them all as "unexpected"
            hf_logging.set_verbosity_error()
        try:
            model = _PRETRAINED_TYPES[model_type].from_pretrained(path, local_files_only=True, **kwargs)
        finally:
            hf_logging.set_verbosity(verbosity)
        return cls(model, feature_layer=feature_layer)

    def save_pretrained(self, path: str | Path) -> None:
        """Save the HF model (config + safetensors); reload with :meth:`from_pretrained`."""
        self.model.save_pretrained(path)

    # ---------------------------------------------------------------- properties
    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def num_patches(self) -> int:
        """Tokens per frame N, including the CLS token where the model has one (CLIP: yes, SigLIP: no)."""
        return self.model.embeddings.num_positions

    # ----------------------------------------------------------------- freezing
    def set_trainable(self, last_k: int = 0) -> None:
        """Freeze everything, then unfreeze the last ``last_k`` feature blocks (paper §3.4 stage 2).

        Blocks after the feature block get no gradient and stay frozen; so do the embeddings and
        any pooling head.
        """
        if not 0 <= last_k <= self.num_blocks:
            raise ConfigError(f"train_last_k must be in 0..{self.num_blocks} (blocks feeding the features); got {last_k}")
        self.model.requires_grad_(False)
        for block in self._trainable_block_modules(last_k):
            block.requires_grad_(True)
        self.trainable_blocks = last_k
        self.train(self.training)

    def _trainable_block_modules(self, last_k: int) -> list[nn.Module]:
        return list(self.blocks[self.num_blocks - last_k : self.num_blocks])

    def train(self, mode: bool = True) -> "VisionTower":
        """Trainable blocks follow ``mode``; everything frozen stays in eval mode."""
        self.training = mode
        self.model.eval()
        if mode:
            for block in self._trainable_block_modules(self.trainable_blocks):
                block.train()
        return self

    # ------------------------------------------------------------------ forward
    def _keep_features(self, module: nn.Module, inputs, output) -> None:
        self._features.append(output[0] if isinstance(output, tuple) else output)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) → (B, T, N, D): every frame through the ViT, features of the chosen block."""
        if pixel_values.dim() != 5 or pixel_values.shape[2] != 3:
            raise InputError(f"pixel_values must be (B, T, 3, H, W); got {tuple(pixel_values.shape)}")
        B, T, C, H, W = pixel_values.shape
        if (H, W) != (self.image_size, self.image_size):
            raise InputError(f"frames are {H}×{W} but the vision tower expects {self.image_size}×{self.image_size}")
        if not self.patch_tokens:  # faces only                                         (B, T, F, D)
            return self.face_tokens(pixel_values).to(self.model.dtype)
        x = pixel_values.reshape(B * T, C, H, W).to(self.model.dtype)  # (B·T, 3, H, W)
        self._features.clear()
        try:
            self.model(pixel_values=x)
            feats = self._features[-1]  # (B·T, N, D)
        finally:
            self._features.clear()
        feats = feats.reshape(B, T, *feats.shape[1:])  # (B, T, N, D)
        if self.face_tokens is not None:  # + F face tokens per frame                   (B, T, N + F, D)
            feats = torch.cat([feats, self.face_tokens(pixel_values).to(feats.dtype)], dim=2)
        return feats
