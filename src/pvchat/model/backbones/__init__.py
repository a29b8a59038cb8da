"""Bases: video LLMs a user has on disk (``--base DIR``), one small adapter file per family.

The family comes from ``model_type`` in the directory's ``config.json`` through :data:`FAMILIES`
(``model_type`` → ``"module:Class"``, imported on first use so that transformers' model code
loads only for the family in use). Nothing is downloaded: every load is ``local_files_only`` and
reads safetensors only.

=================  =============================  ==================================================
model_type         adapter                        where the paper's method goes
=================  =============================  ==================================================
instructblipvideo  instructblip_video.py          ReMoH in the Q-former, N queries per person,
                                                  ``<Name>`` in the LLM (the paper's own shape)
qwen2_vl           qwen_vl.py                     decoder-only (decoder.py): ReMoH routers on the
qwen2_5_vl, qwen3_vl                              heads of decoder layers 0–2, ``<Name>`` + N
llava_onevision    llava_onevision.py             detail tokens per person
smolvlm            smolvlm.py
=================  =============================  ==================================================
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from pvchat.choices import load_target
from pvchat.errors import ConfigError, InputError
from pvchat.io import read_json
from pvchat.model.backbones.base import BackboneConfig, PersonalVLM

FAMILIES: dict[str, str] = {
    "instructblipvideo": "pvchat.model.backbones.instructblip_video:InstructBlipVideo",
    "llava_onevision": "pvchat.model.backbones.llava_onevision:LlavaOnevision",
    "qwen2_vl": "pvchat.model.backbones.qwen_vl:QwenVL",
    "smolvlm": "pvchat.model.backbones.smolvlm:SmolVLM",
    "qwen2_5_vl": "pvchat.model.backbones.qwen_vl:QwenVL",
    "qwen3_vl": "pvchat.model.backbones.qwen_vl:Qwen3VL",
}


def list_families() -> list[str]:
    return sorted(FAMILIES)


def family_of(path: str | Path) -> str:
    """``model_type`` of the base in ``path``; not a model directory or an unsupported family is one error."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: not a Hugging Face model directory (no config.json)")
    model_type = read_json(path / "config.json").get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(f"{path}: base family {model_type!r} is not supported; supported: {', '.join(list_families())}")
    return model_type


def adapter(model_type: str) -> type[PersonalVLM]:
    return load_target(FAMILIES[model_type])


def load_base(path: str | Path, settings: BackboneConfig | dict | None = None,
              dtype: torch.dtype | None = None) -> PersonalVLM:
    """The base in ``path`` (a local HF directory) with the paper's method put in, and no people yet."""
    if isinstance(settings, dict):
        settings = BackboneConfig.from_dict(settings)
    cls = adapter(family_of(path))
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return cls.load(Path(path), settings or BackboneConfig(), dtype=dtype)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


__all__ = ["FAMILIES", "BackboneConfig", "PersonalVLM", "adapter", "family_of", "list_families", "load_base"]
