"""LLaVA-OneVision (decoder-only): SigLIP frames pooled 2×2, a newline token, a Qwen2 LLM.

::

    frames (T, H, W, 3) ─► resize S×S, rescale, normalise ─► pixel_values_videos (1, T, 3, S, S)
    chat template: "<|im_start|>user <video>\\n<Ann> is <Ann#1>…. question<|im_end|><|im_start|>assistant\\n"
        <video> × (T·⌈P/2⌉² + 1)   (P patches a side; +1: the newline embedding after the frames)
    LLaVA-OneVision (SigLIP frozen; LoRA in the LLM; ReMoH on layers 0–2's heads) ─► logits

Frames are prepared as transformers' LlavaOnevisionVideoProcessor does (it needs torchvision, absent
here): a plain resize to the saved size, rescale, normalise, with the video processor's saved
settings (``video_preprocessor_config.json``) or, without that file, its class defaults (384 px,
bicubic, OpenAI CLIP mean and std).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken
from transformers import (
    AutoTokenizer,
    BlipImageProcessorPil,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
)

from pvchat.io import write_json
from pvchat.model.backbones.base import BackboneConfig, load_local, processor_settings
from pvchat.model.backbones.decoder import DecoderVLM, saved_template
from pvchat.model.tokenizer import build_tiny_tokenizer

# the chat template llava-hf's OneVision processors ship (as transformers' tests hold it); for tiny bases
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
VIDEO_DEFAULTS = {"size": {"height": 384, "width": 384}, "resample": 3,  # bicubic
                  "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
FRAME_KEYS = ("size", "image_mean", "image_std", "do_rescale", "rescale_factor", "do_normalize", "resample")


class LlavaOnevision(DecoderVLM):
    """LLaVA-OneVision from a local directory."""

    family = "llava-onevision"
    video_marker = "<video>"

    @classmethod
    def load(cls, path: Path, settings: BackboneConfig, dtype: torch.dtype | None = None) -> "LlavaOnevision":
        # transformers: the model classes (heavy, imported when a base of this family is loaded)

        hf = load_local(LlavaOnevisionForConditionalGeneration, path, dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        saved_template(path, tokenizer)
        model = cls(hf, tokenizer, settings, path)
        frame = dict(VIDEO_DEFAULTS)
        if (Path(path) / "video_preprocessor_config.json").is_file():
            frame.update(processor_settings(path, FRAME_KEYS, ("video_preprocessor_config.json",)))
        if "shortest_edge" in frame["size"]:  # a square of that side, as the video processor resizes
            frame["size"] = {"height": frame["size"]["shortest_edge"], "width": frame["size"]["shortest_edge"]}
        model.image_processor = BlipImageProcessorPil(**frame)  # resize → rescale → normalise
        return model

    def vision_blocks(self) -> list:
        """SigLIP's layers up to the one whose hidden state the projector reads (``vision_feature_layer``)."""
        layers = list(self.hf.model.vision_tower.encoder.layers)
        chosen = self.hf.config.vision_feature_layer
        k = max(chosen) if isinstance(chosen, (list, tuple)) else chosen
        return layers[: k if k > 0 else len(layers) + 1 + k]  # hidden_states[k] is block k's output

    def video_inputs(self, frames: np.ndarray) -> tuple[dict[str, torch.Tensor], str]:
        pixels = self.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]  # (T, 3, S, S)
        vision = self.hf.config.vision_config
        side = math.ceil((vision.image_size // vision.patch_size) / 2)  # after the 2×2 pooling
        n = pixels.shape[0] * side * side + 1  # + the newline embedding
        return {"pixel_values_videos": pixels[None]}, "<video>" * n


# ------------------------------------------------------------------ random bases (tests, bench)
def tiny_config(vocab_size: int = 640):
    """A CPU-sized random LLaVA-OneVision: a 2-layer SigLIP (32 px, patch 8) and a 2-layer Qwen2."""
    return LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(model_type="qwen2", vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=None,
                         eos_token_id=None),
        vision_feature_layer=-1, image_grid_pinpoints=[[32, 32]],
    )


def write_tiny(path: Path, seed: int = 0) -> Path:
    """Save a random tiny LLaVA-OneVision with a tokenizer and the real chat template."""
    # transformers: the model; pvchat's offline BPE stands in for Qwen2's vocabulary

    path = Path(path)
    tok = build_tiny_tokenizer()
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<|im_start|>", "<|im_end|>", "<image>")],
                   special_tokens=True)
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHAT_TEMPLATE
    cfg = tiny_config()
    cfg.image_token_id, cfg.video_token_id = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("<video>")
    torch.manual_seed(seed)
    LlavaOnevisionForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    write_json(path / "video_preprocessor_config.json", {"size": {"height": 32, "width": 32}, "resample": 3})
    return path
