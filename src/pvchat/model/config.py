"""Config dataclasses for the PVChat model, one per component, composed into :class:`PVChatConfig`.

Choices that swap implementations are strings resolved by registries when the model is built.
Every config round-trips through plain JSON (``to_dict`` / ``from_dict``), which is what a
checkpoint stores next to its safetensors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pvchat.errors import ConfigError, unknown_choice
from pvchat.model.attention import REG_GRAD_MODES, ROUTING_MODES
from pvchat.model.losses import SparsityLossConfig


@dataclass
class VisionConfig:
    """Vision tower: a Hugging Face ViT built from ``config`` or loaded from ``path`` (local dir)."""

    model_type: str = "clip"  # registry in model/vision.py: clip | siglip; "person" = model/person_tower.py;
    # "internvideo2" = model/internvideo2_vit.py (the paper's ViT; config: its sizes)
    path: str | None = None  # local directory with a saved vision model; overrides ``config``
    # "person" tower: None = random-init CNN (tests); "efficientnet-lite0" = the carrier's ImageNet
    # weights (pvchat.weights); or a .safetensors file
    weights: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # kwargs of the HF vision config
    feature_layer: int = -2  # hidden state fed to the Q-former (InternVideo2 uses the penultimate)
    train_last_k: int = 0  # stage 2 unfreezes the last K blocks (paper §3.4)
    face_tokens: int = 0  # >0: append that many dlib face tokens per frame (model/face_tokens.py); 0 = paper
    patch_tokens: bool = True  # False: a frame is its face tokens alone (needs face_tokens > 0)


@dataclass
class QFormerConfig:
    """BERT-style Q-former with head-routed attention (paper §3.3, official defaults)."""

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_freq: int = 2  # cross-attention in layers 0, 2, 4, ...
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    attention_dropout: float = 0.1
    # routing (official: ReMoH in layers 6–11, self- and cross-attention, 8 shared + 4 routed, b = 2)
    routing: str = "remoh"
    routed_layers: list[int] = field(default_factory=lambda: [6, 7, 8, 9, 10, 11])
    route_cross_attention: bool = True
    num_shared_heads: int = 8
    top_k: int = 2
    alpha_scale: float = 2.0
    router_bias_init: float = 1.0
    # what the SPR/HAE gradients reach: "all" (paper: the routers and, through x_t, the layers
    # below) or "router" (W_r and its bias only; see model/attention.py)
    reg_grad: str = "all"
    # learnable queries: general + N per subject (supp. S1)
    num_general_queries: int = 32
    num_subject_queries: int = 16
    # prime each subject's block with the person its identity key matches (model/identity.py);
    # needs vision tokens that carry a face embedding (the person tower)
    identity_anchor: bool = False

    def __post_init__(self):
        if self.routing not in ROUTING_MODES:
            raise unknown_choice("routing", self.routing, ROUTING_MODES)
        if self.reg_grad not in REG_GRAD_MODES:
            raise unknown_choice("reg_grad", self.reg_grad, REG_GRAD_MODES)
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"qformer hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.routing != "mha" and not 0 <= self.num_shared_heads < self.num_heads:
            raise ConfigError(
                f"num_shared_heads must be in [0, {self.num_heads - 1}] (num_heads {self.num_heads} "
                f"leaves at least one routed head); got {self.num_shared_heads}"
            )
        bad = [i for i in self.routed_layers if not 0 <= i < self.num_layers]
        if bad and self.routing != "mha":
            raise ConfigError(f"routed_layers {bad} outside the Q-former's layers 0..{self.num_layers - 1}")
        if self.num_general_queries < 1 or self.num_subject_queries < 0:
            raise ConfigError("need ≥ 1 general query and ≥ 0 subject queries")


@dataclass
class LLMConfig:
    """Causal LM built from ``config`` or loaded from ``path`` (local dir), with LoRA (paper §4.1)."""

    model_type: str = "mistral"  # registry in model/llm.py
    path: str | None = None
    weights: str | None = None  # a carrier key of pvchat.weights ("smollm2"), used when ``path`` is unset
    config: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "tiny"  # "tiny" (built offline) or "pretrained" (from ``path``)
    lora_r: int = 16  # 0: no adapter, every LLM weight trains (only sensible for a random-init LLM)
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class PVChatConfig:
    """The whole model."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    loss: SparsityLossConfig = field(default_factory=SparsityLossConfig)
    num_frames: int = 8
    max_frames: int = 16  # size of the learned temporal embedding
    subjects: list[str] = field(default_factory=list)  # names, one <name> token + query block each
    preset: str | None = None
    # "linear" (the paper's projector) or "words": visual tokens as mixtures of the LLM's own word
    # embeddings (model/projector.py), with ``word_loss`` weighting the answer-words term
    projector: str = "linear"
    word_loss: float = 0.0
    # attribute → label phrases named by the attribute readout after each person's block
    # (model/readout.py); empty: no readout. Needs the identity anchor.
    readout: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PVChatConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown PVChatConfig keys {sorted(unknown)}; valid: {sorted(known)}")
        parts = {"vision": VisionConfig, "qformer": QFormerConfig, "llm": LLMConfig, "loss": SparsityLossConfig}
        kwargs = dict(d)
        for name, sub in parts.items():
            if name in kwargs and isinstance(kwargs[name], dict):
                sub_known = {f.name for f in dataclasses.fields(sub)}
                bad = set(kwargs[name]) - sub_known
                if bad:
                    raise ConfigError(f"unknown {name} config keys {sorted(bad)}; valid: {sorted(sub_known)}")
                kwargs[name] = sub(**kwargs[name])
        return cls(**kwargs)
