"""SmolVLM2 (decoder-only; 256M/500M run on a CPU): every frame one image token block, a Llama-style LLM.

::

    frames (T, H, W, 3) ─► square S×S, rescale, normalise ─► pixel_values (1, T, 3, S, S)
    chat template: "<|im_start|>User: <video>question<end_of_utterance>\\nAssistant:"
        <video> ─► "You are provided the following series of eight frames from a 0:00:08 [H:MM:SS] video.\\n"
                   + per frame "\\nFrame from MM:SS:<fake_token_around_image><global-img><image>×n<fake…>" + "\\n\\n"
    SmolVLM (SigLIP frozen; LoRA in the LLM; ReMoH on layers 0–2's heads) ─► logits

The video text and the frames are prepared as transformers' SmolVLM processor and video processor
do; both need packages absent here (torchvision; num2words for the frame count, written out below
for up to twenty frames). Frames are resized once, straight to the square the model reads (the video
processor resizes the longest edge first, then to the square). pvchat samples frames without their
times, so frame i is written as second i of a T-second video.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken
from torch import nn
from transformers import AutoTokenizer, BlipImageProcessorPil, SmolVLMConfig, SmolVLMForConditionalGeneration

from pvchat.io import write_json
from pvchat.model.backbones.base import BackboneConfig, load_local, processor_settings
from pvchat.model.backbones.decoder import DecoderVLM, saved_template
from pvchat.model.tokenizer import build_tiny_tokenizer

# SmolVLM2's chat template for videos (transformers' SmolVLM processor, DEFAULT_CHAT_TEMPLATE); for tiny bases
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'] is string %}"
    "{{': ' + message['content']}}{% else %}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}"
    "{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SPECIAL = ("<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>", "<image>")
_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen twenty").split()
FRAME_KEYS = ("max_image_size", "image_mean", "image_std", "do_rescale", "rescale_factor", "do_normalize", "resample")


def video_text(num_frames: int, tokens_per_frame: int) -> str:
    """What SmolVLM's processor writes for a video of ``num_frames`` frames, frame i at second i."""
    count = _WORDS[num_frames] if num_frames < len(_WORDS) else str(num_frames)
    h, rest = divmod(num_frames, 3600)
    text = f"You are provided the following series of {count} frames from a {h}:{rest // 60:02d}:{rest % 60:02d} " \
           "[H:MM:SS] video.\n"
    block = "<fake_token_around_image><global-img>" + "<image>" * tokens_per_frame + "<fake_token_around_image>"
    for second in range(num_frames):
        text += f"\nFrame from {second // 60:02d}:{second % 60:02d}:" + block
    return text + "\n\n"


class SmolVLM(DecoderVLM):
    """SmolVLM / SmolVLM2 from a local directory."""

    family = "smolvlm"
    video_marker = "<video>"

    @classmethod
    def load(cls, path: Path, settings: BackboneConfig, dtype: torch.dtype | None = None) -> "SmolVLM":
        # transformers: the model classes (heavy, imported when a base of this family is loaded)

        hf = load_local(SmolVLMForConditionalGeneration, path, dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        saved_template(path, tokenizer)
        model = cls(hf, tokenizer, settings, path)
        frame = {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 1}  # the video processor's defaults
        frame.update(processor_settings(path, FRAME_KEYS, ("video_preprocessor_config.json", "preprocessor_config.json")))
        side = frame.pop("max_image_size", {}).get("longest_edge", hf.config.vision_config.image_size)
        model.image_processor = BlipImageProcessorPil(size={"height": side, "width": side}, **frame)
        return model

    def decoder_layers(self) -> nn.ModuleList:
        return self.hf.model.text_model.layers

    def lm_scope(self) -> str:
        return "model.text_model"

    def vision_blocks(self) -> nn.ModuleList:
        return self.hf.model.vision_model.encoder.layers

    def video_inputs(self, frames: np.ndarray) -> tuple[dict[str, torch.Tensor], str]:
        pixels = self.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]  # (T, 3, S, S)
        vision = self.hf.config.vision_config
        n = (vision.image_size // vision.patch_size) ** 2 // self.hf.config.scale_factor ** 2  # after pixel shuffle
        return {"pixel_values": pixels[None]}, video_text(pixels.shape[0], n)


# ------------------------------------------------------------------ random bases (tests, bench)
def tiny_config(vocab_size: int = 640):
    """A CPU-sized random SmolVLM: a 2-layer SigLIP (32 px, patch 8), pixel shuffle 2, a 2-layer Llama."""
    return SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=None,
                         eos_token_id=None, pad_token_id=None),
        scale_factor=2, pad_token_id=None,
    )


def write_tiny(path: Path, seed: int = 0) -> Path:
    """Save a random tiny SmolVLM with a tokenizer, the video chat template and the frame settings."""
    # transformers: the model; pvchat's offline BPE stands in for SmolLM2's vocabulary

    path = Path(path)
    tok = build_tiny_tokenizer()
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL], special_tokens=True)
    tok.eos_token = "<end_of_utterance>"
    tok.chat_template = CHAT_TEMPLATE
    cfg = tiny_config()
    cfg.image_token_id = tok.convert_tokens_to_ids("<image>")
    torch.manual_seed(seed)
    SmolVLMForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    write_json(path / "video_preprocessor_config.json", {"max_image_size": {"longest_edge": 32}, "resample": 1})
    return path
