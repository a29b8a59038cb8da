"""InstructBLIP-Video (ViT + Q-former + LLM, the paper's own shape): ReMoH and query blocks in the Q-former.

::

    frames (T, 3, S, S) ─► ViT (frozen) per frame                                  (T, N_v, C_v)
    queries: general (Q) ⧺ N per person in play ─► Q-former (ReMoH in its upper half;
        instruction = the question, BERT-tokenised, as InstructBLIP does)          (T, Q + N·P, D_q)
    language_projection                                                           (T, Q + N·P, D)
    LLM input: [video] × T·(Q + N·P) ⧺ question tokens (with <Name>) ⧺ answer </s>   → logits

The video placeholders come first and the text follows with its BOS, as InstructBlipVideoProcessor
lays them out. Frames go through BLIP's image processor with the base's saved settings: the
model's own video processor needs torchvision (research/ecosystem.md) and does per frame what the
image processor does (resize to the model's size, rescale, normalise). With no person in play the
query set is the base's own, so before training the outputs equal the base's (tested).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import (
    AutoTokenizer,
    BlipImageProcessorPil,
    InstructBlipVideoConfig,
    InstructBlipVideoForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from pvchat.errors import InputError
from pvchat.model.backbones.base import BackboneConfig, PersonalVLM, load_local, processor_settings, supervised
from pvchat.model.pvchat import greedy_tokens
from pvchat.model.tokenizer import build_tiny_tokenizer

# a frame's resize and normalisation: the video processor's settings when saved, else the image processor's
FRAME_KEYS = ("size", "image_mean", "image_std", "do_rescale", "rescale_factor", "do_normalize", "do_resize",
              "resample", "do_convert_rgb")
FRAME_CONFIGS = ("video_preprocessor_config.json", "preprocessor_config.json")


class InstructBlipVideo(PersonalVLM):
    """InstructBLIP-Video from a local directory (tokenizer at the root, the Q-former's in ``qformer_tokenizer/``)."""

    family = "instructblipvideo"
    qformer_family = True

    def __init__(self, hf: nn.Module, tokenizer, settings: BackboneConfig, path: Path):
        super().__init__(hf, tokenizer, settings, path)
        self.person_blocks = nn.ParameterDict()  # name → (N, D_q): the person's queries (supp. S1)

    @classmethod
    def load(cls, path: Path, settings: BackboneConfig, dtype: torch.dtype | None = None) -> "InstructBlipVideo":
        return cls.wrap(load_local(InstructBlipVideoForConditionalGeneration, path, dtype), path, settings)

    @classmethod
    def wrap(cls, hf: nn.Module, path: Path, settings: BackboneConfig) -> "InstructBlipVideo":
        """An HF model of this family (loaded, or built at random for a benchmark) with the files beside it in ``path``."""
        if not (Path(path) / "qformer_tokenizer").is_dir():
            raise InputError(f"{path}: no qformer_tokenizer/ (InstructBLIP's Q-former reads the question with it)")
        model = cls(hf, AutoTokenizer.from_pretrained(path, local_files_only=True), settings, path)
        model.qformer_tokenizer = AutoTokenizer.from_pretrained(Path(path) / "qformer_tokenizer", local_files_only=True)
        model.image_processor = BlipImageProcessorPil(**processor_settings(path, FRAME_KEYS, FRAME_CONFIGS))
        return model

    def lm_scope(self) -> str:
        return "language_model"

    def vision_blocks(self) -> nn.ModuleList:
        return self.hf.vision_model.encoder.layers

    def routed_attention(self) -> list[tuple[nn.Module, str, int, int]]:
        q = self.hf.config.qformer_config
        layers = self.hf.qformer.encoder.layer
        n = len(layers)
        chosen = self.settings.routed_layers if self.settings.routed_layers is not None else list(range(n // 2, n))
        bad = [i for i in chosen if not 0 <= i < n]
        if bad:
            raise InputError(f"routed_layers {bad} outside the Q-former's layers 0..{n - 1}")
        out = []
        for i in chosen:  # self-attention, and cross-attention where the layer has it (official: both)
            out.append((layers[i].attention, "output.dense", q.hidden_size, q.num_attention_heads))
            if getattr(layers[i], "has_cross_attention", False):
                out.append((layers[i].crossattention, "output.dense", q.hidden_size, q.num_attention_heads))
        return out

    # ------------------------------------------------------------ people
    def _add_queries(self, name: str) -> None:
        q = self.hf.query_tokens
        block = torch.randn(self.settings.subject_queries, q.shape[-1], device=q.device) * \
            self.hf.config.qformer_config.initializer_range  # official init N(0, 0.02)
        self.person_blocks[name] = nn.Parameter(block.to(torch.float32))

    def person_queries(self, name: str) -> torch.Tensor | None:
        return self.person_blocks[name]

    # ------------------------------------------------------------ inputs
    def encode(self, frames: np.ndarray, question: str, answer: str | None = None,
               history: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        if history:  # InstructBLIP has no chat template: one instruction, one answer
            raise InputError("InstructBLIP-Video answers one question at a time (it has no chat template)")
        self.check_text(question, answer or "")
        pixels = self.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]  # (T, 3, S, S)
        names = self.in_play(question)
        T = pixels.shape[0]
        per_frame = self.hf.config.num_query_tokens + self.settings.subject_queries * len(names)
        video = [self.hf.config.video_token_index] * (T * per_frame)
        prompt_ids = video + self.tokenizer(question, add_special_tokens=True)["input_ids"]
        answer_ids = []
        if answer is not None:
            answer_ids = self.tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        ids, labels = supervised(prompt_ids, answer_ids)
        qf = self.qformer_tokenizer(question, return_tensors="pt")
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels[None],
                 "qformer_input_ids": qf["input_ids"], "qformer_attention_mask": qf["attention_mask"], "names": names}
        if answer is not None:
            batch["labels"] = labels
        return batch

    def video_tokens(self, batch: dict[str, Any]) -> torch.Tensor:
        """Frames → ViT → Q-former over the general queries ⧺ the in-play people's blocks → LLM width, (1, T·Q', D)."""
        hf = self.hf
        device = hf.query_tokens.device
        pixels = batch["pixel_values"].to(device, hf.vision_model.dtype if hasattr(hf.vision_model, "dtype") else None)
        B, T = pixels.shape[:2]
        image_embeds = hf.vision_model(pixel_values=pixels.flatten(0, 1)).last_hidden_state  # (B·T, N_v, C_v)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device)
        queries = [hf.query_tokens] + [self.person_blocks[n][None].to(hf.query_tokens) for n in batch["names"]]
        queries = torch.cat(queries, dim=1).expand(B * T, -1, -1)  # (B·T, Q', D_q)
        text_ids = batch["qformer_input_ids"].to(device).repeat_interleave(T, dim=0)
        text_mask = batch["qformer_attention_mask"].to(device).repeat_interleave(T, dim=0)
        mask = torch.cat([torch.ones(queries.shape[:-1], dtype=torch.long, device=device), text_mask], dim=1)
        out = hf.qformer(input_ids=text_ids, attention_mask=mask, query_embeds=queries,
                         encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask)
        q = out.last_hidden_state[:, : queries.shape[1]]  # the queries' outputs          (B·T, Q', D_q)
        return hf.language_projection(q).reshape(B, T * queries.shape[1], -1)  # (B, T·Q', D)

    def _embeds(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.hf.query_tokens.device
        ids = batch["input_ids"].to(device)
        embeds = self.hf.get_input_embeddings()(ids)  # (1, L, D)
        slots = (ids == self.hf.config.video_token_index).unsqueeze(-1)
        embeds = embeds.masked_scatter(slots, self.video_tokens(batch).to(embeds.dtype))
        return embeds, batch["attention_mask"].to(device)

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        embeds, mask = self._embeds(batch)
        return self.hf.language_model(inputs_embeds=embeds, attention_mask=mask).logits  # (1, L, V)

    def generate_ids(self, batch: dict[str, Any], max_new_tokens: int) -> list[int]:
        embeds, mask = self._embeds(batch)
        return list(greedy_tokens(self.hf.language_model, embeds, mask, self.tokenizer.eos_token_id, max_new_tokens))


# ------------------------------------------------------------------ random bases (tests, bench)
def tiny_config(vocab_size: int = 600):
    """A CPU-sized random InstructBLIP-Video: 2-block ViT (32 px), 2-layer Q-former, 2-layer Mistral."""
    return InstructBlipVideoConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            encoder_hidden_size=32, vocab_size=600, max_position_embeddings=64,
                            cross_attention_frequency=1, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0),
        text_config=dict(model_type="mistral", vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=False),
        num_query_tokens=4,
    )


def real_config():
    """InstructBLIP-Video-7B's sizes with Mistral-7B in place of Vicuna (InternVideo2-Chat-8B's LLM)."""
    return InstructBlipVideoConfig(
        vision_config=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                           image_size=224, patch_size=14),
        qformer_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            encoder_hidden_size=1408, cross_attention_frequency=2),
        text_config=dict(model_type="mistral", vocab_size=32768, hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=False),
        num_query_tokens=96,
    )


def write_processing(path: Path, config, frame_size: int = 32) -> None:
    """Write both tokenizers (pvchat's offline BPE; a small WordPiece for the Q-former) and the frame settings
    of a random base into ``path``, and point ``config``'s token ids at them."""
    # transformers: the image processor; pvchat's offline BPE and a WordPiece stand in for the vocabularies

    path = Path(path)
    tok = build_tiny_tokenizer()
    config.video_token_index = tok.convert_tokens_to_ids("<video>")
    config.text_config.bos_token_id, config.text_config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    config.text_config.pad_token_id = tok.pad_token_id
    tok.save_pretrained(path)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[DEC]", *sorted(set(_QFORMER_WORDS.split()))]
    wp = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", bos_token="[DEC]").save_pretrained(path / "qformer_tokenizer")
    BlipImageProcessorPil(size={"height": frame_size, "width": frame_size}).save_pretrained(path)


def write_tiny(path: Path, seed: int = 0) -> Path:
    """Save a random tiny InstructBLIP-Video with both tokenizers and BLIP's frame settings."""
    path = Path(path)
    cfg = tiny_config()
    write_processing(path, cfg)
    torch.manual_seed(seed)
    InstructBlipVideoForConditionalGeneration(cfg).save_pretrained(path)
    return path


_QFORMER_WORDS = "is in the video ? what doing wearing where who yes no < > a an person man woman"
