"""Decoder-only video LLMs (Qwen-VL, LLaVA-OneVision, ...): what their adapters share.

::

    frames ─► video_inputs (the family's preprocessing) ─► model kwargs + the video's placeholder text
    messages: user [video, "<Ann> is <Ann#1>…<Ann#N>. " + question] (+ assistant answer)
        ─► the base's own chat template ─► video marker replaced by the placeholder text ─► token ids
    HF model (ViT frozen; LoRA in the LLM; ReMoH routers on the heads of layers 0–2) ─► logits

Training and inference see the same prompt: the template's generation prompt, then the answer and
the end-of-turn text the template writes after an assistant message (``<|im_end|>``), which alone
carry labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pvchat.errors import InputError
from pvchat.io import read_json
from pvchat.model.backbones.base import PersonalVLM, supervised


class DecoderVLM(PersonalVLM):
    """A decoder-only VLM; a family says how frames become inputs and where its decoder layers are."""

    qformer_family = False
    video_marker = "<video>"  # what the chat template writes for a video (replaced by its placeholders)

    def decoder_layers(self) -> nn.ModuleList:
        return self.hf.model.language_model.layers

    def lm_scope(self) -> str:
        return "model.language_model"

    def vision_blocks(self) -> nn.ModuleList:
        return self.hf.model.visual.blocks  # Qwen-VL's; the other families override it

    def routed_attention(self) -> list[tuple[nn.Module, str, int, int]]:
        text = self.hf.config.get_text_config()
        layers = self.decoder_layers()
        chosen = self.settings.routed_layers if self.settings.routed_layers is not None else [0, 1, 2][: len(layers)]
        bad = [i for i in chosen if not 0 <= i < len(layers)]
        if bad:
            raise InputError(f"routed_layers {bad} outside the decoder's layers 0..{len(layers) - 1}")
        return [(layers[i].self_attn, "o_proj", text.hidden_size, text.num_attention_heads) for i in chosen]

    # ------------------------------------------------------------ family hooks
    def video_inputs(self, frames: np.ndarray) -> tuple[dict[str, torch.Tensor], str]:
        """(model kwargs for the video, the text that stands for it in the prompt)."""
        raise NotImplementedError

    def token_inputs(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Further per-token inputs the model needs beside ``input_ids`` (Qwen's mm_token_type_ids)."""
        return {}

    # ------------------------------------------------------------ inputs
    def encode(self, frames: np.ndarray, question: str, answer: str | None = None,
               history: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        history = list(history or [])
        self.check_text(question, answer or "", *(t for turn in history for t in turn))
        video, placeholder = self.video_inputs(frames)
        names = self.in_play(" ".join([q for q, _ in history] + [question]))
        turns = []
        for i, (q, a) in enumerate([*history, (question, None)]):  # the video and the people open the first turn
            text = [{"type": "text", "text": (self.person_prefix(names) + q) if i == 0 else q}]
            turns.append({"role": "user", "content": ([{"type": "video"}] if i == 0 else []) + text})
            if a is not None:
                turns.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
        prompt = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        if self.video_marker not in prompt:
            raise InputError(f"{self.path}: its chat template writes no {self.video_marker} for a video")
        prompt_ids = self.tokenizer(prompt.replace(self.video_marker, placeholder, 1), add_special_tokens=False)["input_ids"]
        answer_ids = []
        if answer is not None:
            turn = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
            full = self.tokenizer.apply_chat_template([*turns, turn], tokenize=False)
            if full.startswith(prompt):  # the template's own assistant turn after its generation prompt
                target = full[len(prompt):].rstrip("\n")
            else:  # a template whose assistant turn opens differently ("assistant \n" vs "assistant\n")
                target = answer + full[full.rindex(answer) + len(answer):].rstrip("\n")
            answer_ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        ids, labels = supervised(prompt_ids, answer_ids)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **self.token_inputs(ids), **video}
        if answer is not None:
            batch["labels"] = labels
        return batch

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        device, dtype = self.hf.device, self.hf.dtype
        return {k: v.to(device, dtype if v.is_floating_point() else None) for k, v in batch.items()
                if isinstance(v, torch.Tensor) and k != "labels"}

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.hf(**self._inputs(batch)).logits  # (1, L, V)

    def end_of_turn(self) -> int:
        """The id generation stops at: the token the template closes an assistant turn with."""
        full = self.tokenizer.apply_chat_template([{"role": "assistant", "content": [{"type": "text", "text": "x"}]}],
                                                  tokenize=False)
        ids = self.tokenizer(full[full.rindex("x") + 1:].strip(), add_special_tokens=False)["input_ids"]
        return ids[0] if ids else self.tokenizer.eos_token_id

    def generate_ids(self, batch: dict[str, Any], max_new_tokens: int) -> list[int]:
        inputs = self._inputs(batch)
        eos = self.end_of_turn()
        out = self.hf.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                               pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos)
        return [t for t in out[0, inputs["input_ids"].shape[1]:].tolist() if t != eos]


def saved_template(path: Path, tokenizer) -> None:
    """Give ``tokenizer`` the chat template saved beside the model when its own config has none."""
    if tokenizer.chat_template is not None:
        return
    for name in ("chat_template.jinja", "chat_template.json"):
        f = Path(path) / name
        if f.is_file():
            tokenizer.chat_template = f.read_text() if name.endswith(".jinja") else read_json(f)["chat_template"]
            return
    raise InputError(f"{path}: no chat template (tokenizer_config.json, chat_template.jinja or chat_template.json)")
