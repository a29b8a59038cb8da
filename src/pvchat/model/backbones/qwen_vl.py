"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL (decoder-only): routers on chosen decoder layers, detail tokens.

::

    frames (T, H, W, 3) ─► the base's image processor, frame by frame ─► video patches (T/2·h·w, C·2·p·p)
    chat template: user [video, "<Ann> is <Ann#1>…<Ann#N>. " + question] ─► <|video_pad|> × T/2·h·w/m²
    Qwen-VL (ViT frozen; LoRA in the LLM; ReMoH on layers 0–2's heads) ─► logits

Video preprocessing is reproduced here: transformers' Qwen2-VL video processor needs torchvision
(absent from CPU installs, research/ecosystem.md). Each frame goes through the base's own image
processor (its resize, rescale and normalisation from ``preprocessor_config.json``), and pairs of
frames are merged into the video layout (``temporal_patch_size`` frames per patch row, the video
processor's ``patchify``); an odd frame count repeats the last frame, as that processor does.
Qwen3-VL writes each temporal patch as ``<t seconds><|vision_start|><|video_pad|>×n<|vision_end|>``
with t the mean time of its frames, as its processor does; pvchat samples frames without their
times, so frame i is taken as second i. One difference: the size comes from the image processor's pixel bounds, not the video
processor's per-frame budget, so a long video gets more tokens per frame than transformers
would give it. No parity test against the video processor runs here (the two never import
together on this machine); a still (two equal frames) is tested against the image processor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken
from torch import nn
from transformers import (
    AutoModelForImageTextToText,
    AutoTokenizer,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
)

from pvchat.model.backbones.base import BackboneConfig, load_local, processor_settings
from pvchat.model.backbones.decoder import DecoderVLM, saved_template
from pvchat.model.tokenizer import build_tiny_tokenizer

VIDEO_PAD = "<|video_pad|>"
# Qwen2-VL's and Qwen2.5-VL's chat template as their processors ship it (chat_template.json): used
# for the tiny bases the tests build; a real base brings its own.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           VIDEO_PAD)


class QwenVL(DecoderVLM):
    """Qwen2-VL / Qwen2.5-VL from a local directory."""

    family = "qwen-vl"
    video_marker = "<|vision_start|><|video_pad|><|vision_end|>"

    @classmethod
    def load(cls, path: Path, settings: BackboneConfig, dtype: torch.dtype | None = None) -> "QwenVL":
        return cls.wrap(load_local(AutoModelForImageTextToText, path, dtype), path, settings)

    @classmethod
    def wrap(cls, hf: nn.Module, path: Path, settings: BackboneConfig) -> "QwenVL":
        """An HF model of this family (loaded, or built at random for a benchmark) with the files beside it in ``path``."""
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        saved_template(path, tokenizer)
        model = cls(hf, tokenizer, settings, path)
        keep = ("size", "min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size", "image_mean",
                "image_std", "do_rescale", "rescale_factor", "do_normalize", "do_resize", "resample", "do_convert_rgb")
        model.image_processor = Qwen2VLImageProcessorPil(**processor_settings(path, keep))
        return model

    def video_patches(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, H, W, 3) uint8 → (pixel_values_videos (T/2·h·w, C·2·p·p), video_grid_thw (1, 3)) (module docstring)."""
        ip = self.image_processor
        tps, p = ip.temporal_patch_size, ip.patch_size
        frames = list(frames) + [frames[-1]] * (-len(frames) % tps)  # pad to a multiple of tps
        out = ip(images=frames, return_tensors="pt")
        T = len(frames)
        _, gh, gw = (int(v) for v in out["image_grid_thw"][0])
        per = gh * gw
        pv = out["pixel_values"].view(T, per, 3, tps, p, p)[:, :, :, 0]  # each frame once   (T, h·w, C, p, p)
        pv = pv.view(T // tps, tps, per, 3, p, p).permute(0, 2, 3, 1, 4, 5)  # (T/tps, h·w, C, tps, p, p)
        return pv.reshape(T // tps * per, 3 * tps * p * p), torch.tensor([[T // tps, gh, gw]])

    def video_inputs(self, frames: np.ndarray) -> tuple[dict[str, torch.Tensor], str]:
        pixels, grid = self.video_patches(frames)
        n = int(grid.prod()) // self.image_processor.merge_size ** 2  # one token per merged patch
        return {"pixel_values_videos": pixels, "video_grid_thw": grid}, \
            f"<|vision_start|>{VIDEO_PAD * n}<|vision_end|>"

    def token_inputs(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        # which positions are video (2), as the processor marks them: M-RoPE numbers them in (t, h, w)
        return {"mm_token_type_ids": (ids == self.hf.config.video_token_id).long() * 2}


class Qwen3VL(QwenVL):
    """Qwen3-VL from a local directory: Qwen-VL's frames, a timestamp before each temporal patch."""

    family = "qwen3-vl"

    def video_inputs(self, frames: np.ndarray) -> tuple[dict[str, torch.Tensor], str]:
        pixels, grid = self.video_patches(frames)
        groups, gh, gw = (int(v) for v in grid[0])
        n = gh * gw // self.image_processor.merge_size ** 2  # tokens per temporal patch
        tps = self.image_processor.temporal_patch_size
        text = "".join(f"<{g * tps + (tps - 1) / 2:.1f} seconds><|vision_start|>{VIDEO_PAD * n}<|vision_end|>"
                       for g in range(groups))  # the mean time of the patch's frames, frame i at second i
        return {"pixel_values_videos": pixels, "video_grid_thw": grid}, text


# The message rendering of Qwen3-VL-Instruct's chat template (its tool-call and tool-response
# branches left out; none are used here): for the tiny bases the tests build; a real base brings its own.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}{%- if message.content is string %}{%- set content = message.content %}"
    "{%- else %}{%- set content = namespace(text='') %}{%- for item in message.content %}"
    "{%- if 'video' in item or item.type == 'video' %}{%- set content.text = content.text + "
    "'<|vision_start|><|video_pad|><|vision_end|>' %}{%- elif 'image' in item or item.type == 'image' %}"
    "{%- set content.text = content.text + '<|vision_start|><|image_pad|><|vision_end|>' %}"
    "{%- elif 'text' in item %}{%- set content.text = content.text + item.text %}{%- endif %}{%- endfor %}"
    "{%- set content = content.text %}{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


# ------------------------------------------------------------------ random bases (tests, bench)
def tiny_config(version: str = "qwen2_5_vl", vocab_size: int = 640):
    """A CPU-sized random Qwen2-VL / Qwen2.5-VL / Qwen3-VL: 2 decoder layers, 64 wide, a 2-block ViT."""
    if version == "qwen3_vl":
        return Qwen3VLConfig(
            text_config=dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                              "mrope_interleaved": True}),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                               patch_size=16, num_position_embeddings=16, deepstack_visual_indexes=[0]),
            tie_word_embeddings=False)

    text = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, tie_word_embeddings=False,
                bos_token_id=None, eos_token_id=None)
    vision = dict(depth=2, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if version == "qwen2_5_vl":
        vision.update(intermediate_size=64, out_hidden_size=64, window_size=56, fullatt_block_indexes=[1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision)
    vision.update(embed_dim=32, mlp_ratio=2, hidden_size=64)
    return Qwen2VLConfig(text_config=text, vision_config=vision)


def real_config():
    """Qwen2.5-VL-7B-Instruct's sizes (its config.json), for random-weight benchmarks."""
    text = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}, rope_theta=1000000.0,
                tie_word_embeddings=False)
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision)


def write_processing(path: Path, config, frame_pixels: int = 56 * 56, patch_size: int = 14) -> None:
    """Write the tokenizer (pvchat's offline BPE with Qwen's special tokens, the real chat template) and the
    image processor of a random base into ``path``, and point ``config``'s token ids at it."""
    # transformers: the image processor; pvchat's offline BPE stands in for Qwen's vocabulary

    tok = build_tiny_tokenizer()
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL], special_tokens=True)
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.chat_template = QWEN3_CHAT_TEMPLATE if config.model_type == "qwen3_vl" else CHAT_TEMPLATE
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    config.image_token_id, config.video_token_id = ids["<|image_pad|>"], ids[VIDEO_PAD]
    config.vision_start_token_id, config.vision_end_token_id = ids["<|vision_start|>"], ids["<|vision_end|>"]
    for c in (config, config.get_text_config()):
        c.bos_token_id, c.eos_token_id, c.pad_token_id = None, ids["<|im_end|>"], ids["<|endoftext|>"]
    tok.save_pretrained(path)
    Qwen2VLImageProcessorPil(min_pixels=frame_pixels, max_pixels=frame_pixels, patch_size=patch_size).save_pretrained(path)


def write_tiny(path: Path, version: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """Save a random tiny Qwen2(.5)-VL with a tokenizer, the real chat template and an image processor."""
    path = Path(path)
    cfg = tiny_config(version)
    if version == "qwen3_vl":  # patch 16: 64×64 frames are 4×4 patches, as 56×56 are at patch 14
        write_processing(path, cfg, frame_pixels=64 * 64, patch_size=16)
    else:
        write_processing(path, cfg)
    torch.manual_seed(seed)
    AutoModelForImageTextToText.from_config(cfg).save_pretrained(path)
    return path
