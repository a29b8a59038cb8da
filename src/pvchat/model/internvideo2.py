"""The paper's base: InternVideo2-Chat-8B-HD (and official PVChat checkpoints) in pvchat's modules.

The official checkpoint (``Internvideo2_chat_8B_HD_finetune_REMOH/model.safetensors.index.json``)
holds, with pvchat's places for them::

    vision_encoder.*       InternVideo2-1B ViT (39 blocks used)   ─► PVChat.vision  (InternVideo2Tower, internvideo2_vit.py)
    vision_layernorm.*     LayerNorm(1408, eps 1e-12)             ─► PVChat.vision_norm
    qformer.bert.*         BERT Q-former, query FFN, cross-attention every 2nd layer
                           ─► PVChat.qformer (layers.i.self_attn / cross_attn / ffn_*; embed_norm)
      ….self.router_alpha.router / .alpha_proj  (official ReMoH, PVChat checkpoints)
                           ─► layers.i.self_attn|cross_attn.router / .balance
    query_tokens (1,32,D) ⧺ extra_query_tokens (1,64,D)          ─► qformer.general_queries (96, D)
    personal_query_tokens (1,16,D)  (PVChat checkpoints)          ─► the person's query block
    project_up.*           Linear(768 → 4096)                     ─► PVChat.projector
    lm.base_model.model.*  Mistral-7B + LoRA r16/α32 (peft 0.5 names)
                           ─► an HF Mistral directory, LoRA merged: W + (α/r)·B·A
    dropped: project_down (unused by the official forward), the Q-former's word/position
    embeddings and text FFN (no instruction text is ever fed), position_ids

The ViT is :class:`pvchat.model.internvideo2_vit.InternVideo2Tower`; this module converts the
checkpoint into it and pvchat's other modules (and builds the config).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from pvchat.errors import ConfigError, InputError
from pvchat.io import atomic_dir, load_tensors, read_json, save_tensors, write_json
from pvchat.model.config import PVChatConfig
from pvchat.model.llm import LLM_CONFIGS
from pvchat.model.presets import paper
from pvchat.model.pvchat import PVChat


def official_config(routers: bool = True, vocab_size: int = 32768):
    """The :class:`~pvchat.model.config.PVChatConfig` of InternVideo2-Chat-8B-HD / PVChat (pvchat-official.md §2):
    the ViT (internvideo2_vit.py), a BERT-base Q-former with 32 + 64 general and 16 personal queries, ReMoH
    in layers 6–11 (8 shared + 4 routed heads, b = 2), Mistral-7B-Instruct-v0.3 with LoRA r16/α32 on every
    projection and the head. ``routers``: the checkpoint has the official routers, whose mixing has no ×2 scale."""
    cfg = paper()
    cfg.vision.model_type = "internvideo2"
    cfg.vision.config = dict(hidden_size=1408, depth=39, num_heads=16, mlp_hidden=6144, image_size=224,
                             patch_size=14, num_frames=8)
    cfg.qformer.num_general_queries, cfg.qformer.num_subject_queries = 96, 16
    if routers:
        cfg.qformer.alpha_scale = 1.0
    cfg.llm.config = {**cfg.llm.config, "vocab_size": vocab_size}
    cfg.llm.tokenizer = "pretrained"
    cfg.llm.lora_targets = [*cfg.llm.lora_targets, "lm_head"]
    cfg.preset = None
    return cfg


# ---------------------------------------------------------------------- the converter
VIT_KEY = re.compile(r"^vision_encoder\.(patch_embed\.proj\.(weight|bias)|cls_token|pos_embed|img_pos_embed|"
                     r"blocks\.\d+\.(norm[12]\.weight|attn\.(qkv|q_norm|k_norm)\.weight|attn\.proj\.(weight|bias)|"
                     r"ls[12]|mlp\.fc[12]\.(weight|bias)))$")


def _vision_map(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """official name → PVChat name for the ViT and vision_layernorm (same leaf names, other prefix); a ViT
    tensor of another shape of model (a clip_projector, a final norm) is left out, so it is reported."""
    out = {k: "vision." + k[len("vision_encoder."):] for k in state if VIT_KEY.match(k)}
    out.update({k: "vision_norm." + k.rsplit(".", 1)[1] for k in state if k.startswith("vision_layernorm.")})
    return out


def _qformer_map(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """official name → PVChat name for the Q-former (query path only), its routers and the projector."""
    out = {"qformer.bert.embeddings.LayerNorm.weight": "qformer.embed_norm.weight",
           "qformer.bert.embeddings.LayerNorm.bias": "qformer.embed_norm.bias",
           "project_up.weight": "projector.weight", "project_up.bias": "projector.bias"}
    parts = {"attention": ("self_attn", "self_norm"), "crossattention": ("cross_attn", "cross_norm")}
    for key in state:
        if not key.startswith("qformer.bert.encoder.layer."):
            continue
        i, rest = key[len("qformer.bert.encoder.layer."):].split(".", 1)
        ours = f"qformer.layers.{i}"
        head, _, tail = rest.partition(".")
        if head in parts:
            attn, norm = parts[head]
            for a, b in (("self.query.", "query."), ("self.key.", "key."), ("self.value.", "value."),
                         ("output.dense.", "output."), ("self.router_alpha.router.", "router."),
                         ("self.router_alpha.alpha_proj.", "balance.")):
                if tail.startswith(a):
                    out[key] = f"{ours}.{attn}.{b}{tail[len(a):]}"
            if tail.startswith("output.LayerNorm."):
                out[key] = f"{ours}.{norm}.{tail.rsplit('.', 1)[1]}"
        for a, b in (("intermediate_query.dense.", "ffn_in."), ("output_query.dense.", "ffn_out."),
                     ("output_query.LayerNorm.", "ffn_norm.")):
            if rest.startswith(a):
                out[key] = f"{ours}.{b}{rest[len(a):]}"
    return out


DROPPED = ("project_down.", "qformer.bert.embeddings.word_embeddings", "qformer.bert.embeddings.position_",
           "qformer.cls.")


def _dropped(key: str) -> bool:
    if key.startswith(DROPPED):
        return True
    if key.startswith("qformer.bert.encoder.layer."):  # the text FFN: never run without an instruction
        rest = key.split(".", 5)[5]
        return rest.startswith(("intermediate.dense.", "output.dense.", "output.LayerNorm."))
    return False


def fit_vocabulary(llm: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """Drop embedding and head rows past ``vocab_size``: tokens the official run added (``<sks>``, whose
    rows it never trained, pvchat-official.md §4.4); pvchat adds each person's own trainable rows."""
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        if key in llm and llm[key].shape[0] > vocab_size:
            llm[key] = llm[key][:vocab_size].clone()
    return llm


def merge_lora(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """``lm.base_model.model.*`` (peft names) → a plain HF causal-LM state dict, W ← W + scale·B·A."""
    prefix = "lm.base_model.model."
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and ".lora_" not in k}
    for key, a in state.items():
        if key.startswith(prefix) and ".lora_A." in key:
            target = key[len(prefix):].split(".lora_A.")[0] + ".weight"
            b = state[key.replace(".lora_A.", ".lora_B.")]
            if target not in out:
                raise InputError(f"LoRA weight {key} has no base weight {target}")
            out[target] = (out[target].float() + scale * (b.float() @ a.float())).to(out[target].dtype)
    return out


def convert(state: dict[str, torch.Tensor], lora_scale: float = 2.0) -> dict[str, dict[str, torch.Tensor]]:
    """Split an official state dict into pvchat's parts (module docstring).

    Returns ``{"model": PVChat tensors (vision, vision_norm, qformer, projector), "llm": HF causal-LM
    tensors with the LoRA merged, "person": {"queries": (N, D)} when the checkpoint has personal queries}``.
    ``lora_scale`` is α/r of the checkpoint's LoRA (InternVideo2-Chat and PVChat: 32/16 = 2).
    """
    names = {**_vision_map(state), **_qformer_map(state)}
    model = {ours: state[k] for k, ours in names.items() if k in state}
    queries = [state[k].reshape(-1, state[k].shape[-1]) for k in ("query_tokens", "extra_query_tokens") if k in state]
    if not queries:
        raise InputError("not an InternVideo2-Chat / PVChat checkpoint: no query_tokens")
    model["qformer.general_queries"] = torch.cat(queries)
    llm = merge_lora(state, lora_scale)
    if not llm:
        raise InputError("not an InternVideo2-Chat / PVChat checkpoint: no lm.base_model.model.* weights")
    known = set(names) | {"query_tokens", "extra_query_tokens", "personal_query_tokens"}
    left = sorted(k for k in state if k not in known and not k.startswith("lm.base_model.model.") and not _dropped(k))
    if left:
        raise InputError(f"{len(left)} checkpoint tensors have no place in pvchat, e.g. {left[:3]}")
    out = {"model": model, "llm": llm}
    if "personal_query_tokens" in state:
        t = state["personal_query_tokens"]
        out["person"] = {"queries": t.reshape(-1, t.shape[-1])}
    return out


def read_checkpoint(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a (sharded) safetensors checkpoint directory: its index's files, or every *.safetensors."""
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise InputError(f"{directory}: no safetensors weights (only safetensors are read)")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_tensors(directory / name))
    return state


def convert_checkpoint(source: Path, out: Path, config, lora_scale: float = 2.0) -> Path:
    """Convert the checkpoint in ``source`` into ``out``: ``llm/`` (an HF Mistral directory, LoRA merged,
    the source's tokenizer files copied when present), ``model.safetensors`` (vision, vision_norm,
    qformer, projector in PVChat's names), ``person.safetensors`` (personal queries, if any) and
    ``pvchat_config.json`` (``config``, a :class:`~pvchat.model.config.PVChatConfig` whose vision is
    ``internvideo2``, with ``llm.path`` set to ``out/llm``). Load with :func:`load_converted`.
    """
    parts = convert(read_checkpoint(source), lora_scale)
    out = Path(out)
    with atomic_dir(out, overwrite=True) as tmp:
        lc = config.llm
        llm_config = AutoConfig.for_model(lc.model_type, **lc.config) if lc.model_type in LLM_CONFIGS else None
        if llm_config is None:
            raise ConfigError(f"llm model_type {lc.model_type!r} is not one pvchat builds")
        with torch.device("meta"):
            shapes = AutoModelForCausalLM.from_config(llm_config).state_dict()
        parts["llm"] = fit_vocabulary(parts["llm"], llm_config.vocab_size)
        _check_shapes(parts["llm"], shapes, "llm")
        (tmp / "llm").mkdir()
        llm_config.save_pretrained(tmp / "llm")
        save_tensors(tmp / "llm" / "model.safetensors", parts["llm"])
        for f in Path(source).glob("tokenizer*"):
            shutil.copy(f, tmp / "llm" / f.name)
        save_tensors(tmp / "model.safetensors", parts["model"])
        if "person" in parts:
            save_tensors(tmp / "person.safetensors", parts["person"])
        cfg = config.to_dict()
        cfg["llm"].update(path=str(out / "llm"), config={}, tokenizer="pretrained")
        write_json(tmp / "pvchat_config.json", cfg)
    return out


def _check_shapes(tensors: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    bad = sorted(k for k in set(want) & set(tensors) if tuple(want[k].shape) != tuple(tensors[k].shape))
    if missing or extra or bad:
        raise InputError(f"{what}: the checkpoint does not fit the config (missing {missing[:3]}, unexpected "
                         f"{extra[:3]}, other shapes {bad[:3]})")


def load_converted(directory: Path, person: str | None = None):
    """The PVChat of :func:`convert_checkpoint`'s output; ``person`` adds the checkpoint's personal queries
    under that name (a PVChat checkpoint's learned person)."""
    directory = Path(directory)
    config = PVChatConfig.from_dict(read_json(directory / "pvchat_config.json"))
    model = PVChat.from_config(config)
    tensors = load_tensors(directory / "model.safetensors")
    own = model.state_dict()
    _check_shapes(tensors, {k: own[k] for k in own if k.split(".")[0] in ("vision", "vision_norm", "projector")
                            or (k.startswith("qformer.") and "subject_queries" not in k
                                and not (k.endswith((".router.weight", ".router.bias", ".balance.weight"))
                                         and k not in tensors))}, "model")
    with torch.no_grad():
        for k, t in tensors.items():
            own[k].copy_(t)
    if person is not None:
        queries = load_tensors(directory / "person.safetensors")["queries"]
        model.add_subject(person)
        with torch.no_grad():
            model.qformer.subject_queries[-1].copy_(queries)
    return model
