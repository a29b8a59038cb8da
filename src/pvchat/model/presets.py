"""Model presets: a small registry of named :class:`PVChatConfig` builders.

* ``tiny``  random init, CPU-sized: one forward+backward in well under a second. Tests.
* ``demo``  ``tiny`` with the LLM trained in full instead of through LoRA: a random-init LLM has
  nothing for an adapter to preserve, and LoRA alone cannot teach it language. The demo.
* ``face``  ``demo`` whose frames are read by a face network: 192 px frames, each frame two dlib face
  tokens (embedding + box, model/face_tokens.py) and no ViT patch tokens; the ReMoH sparsity terms
  train the routers only (``reg_grad="router"``). The demo's preset (README, "Status", says why).
* ``small`` real pretrained parts that ship offline (``pvchat.weights``): EfficientNet-Lite0 grid
  tokens plus one token per tracked person (dlib face embedding, body-crop CNN feature, pose,
  motion; model/person_tower.py) → ReMoH Q-former (4 layers, 256 wide) → SmolLM2-135M-Instruct
  with LoRA r8 and its own ChatML template. Its Q-former, projector and LoRA are aligned once on
  the offline world (``pvchat pretrain``) and shipped with the package.
* ``paper`` the paper's sizes (§4.1, pvchat-official.md §2): InternVideo2-1B-sized ViT (1408 wide,
  39 blocks used of 40, 16 heads, patch 14, 224 px), BERT-base Q-former (ReMoH in layers 6–11,
  8 shared + 4 routed heads, target 2, 96 general + 16 per subject), Mistral-7B-Instruct-v0.3 with
  LoRA r16/α32. Point ``vision.path`` / ``llm.path`` at local checkpoints to load real weights;
  without them it builds on the meta device for parameter counts.
"""

from __future__ import annotations

from typing import Callable

from pvchat.errors import unknown_choice
from pvchat.model.config import LLMConfig, PVChatConfig, QFormerConfig, VisionConfig


def tiny() -> PVChatConfig:
    return PVChatConfig(
        vision=VisionConfig(
            model_type="clip",
            config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        image_size=32, patch_size=8),
            feature_layer=-1,
        ),
        qformer=QFormerConfig(
            hidden_size=32, num_layers=4, num_heads=4, intermediate_size=64, dropout=0.0, attention_dropout=0.0,
            routing="remoh", routed_layers=[2, 3], num_shared_heads=2, top_k=1,
            num_general_queries=8, num_subject_queries=4,
        ),
        llm=LLMConfig(
            model_type="mistral",
            config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False),
            lora_r=8, lora_alpha=16, lora_dropout=0.0,
            # a random LM head gives near-flat logits; LoRA on it lets the tiny model become confident
            lora_targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
        ),
        num_frames=4,
        preset="tiny",
    )


def paper() -> PVChatConfig:
    return PVChatConfig(
        vision=VisionConfig(
            model_type="clip",
            # InternVideo2-1B sizes; 40 blocks of which the penultimate output is used (x_vis_return_idx=-2)
            config=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=40, num_attention_heads=16,
                        image_size=224, patch_size=14),
            feature_layer=-2,
            train_last_k=0,
        ),
        qformer=QFormerConfig(num_general_queries=96),  # BERT-base, official ReMoH defaults
        llm=LLMConfig(
            model_type="mistral",
            config=dict(vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                        rope_theta=1_000_000.0, tie_word_embeddings=False),
            lora_r=16, lora_alpha=32, lora_dropout=0.1,
        ),
        num_frames=8,
        preset="paper",
    )


def demo() -> PVChatConfig:
    cfg = tiny()
    cfg.llm.lora_r = 0
    cfg.preset = "demo"
    return cfg


def face() -> PVChatConfig:
    cfg = demo()
    cfg.vision.config.update(hidden_size=144, intermediate_size=288, image_size=192, patch_size=32)
    cfg.vision.face_tokens = 2
    # patch tokens of a random-init ViT let a model trained on one person's 17 clips tell its
    # positives apart by clothing and background, and it answers held-out clips at chance
    cfg.vision.patch_tokens = False
    # SPR/HAE gradients through x_t outweigh the LM's at this scale (model/attention.py)
    cfg.qformer.reg_grad = "router"
    cfg.preset = "face"
    return cfg


def readout_labels() -> dict[str, list[str]]:
    """The attribute readout's label phrases: the offline world's garments and actions as its answers say them."""
    colours = ["red", "blue", "green", "yellow", "orange", "purple", "pink", "black", "white", "grey", "brown", "navy",
               "teal", "beige"]
    return {
        "top_colour": colours, "pattern": ["plain", "striped", "checked", "dotted"],
        "top": ["t-shirt", "sweater", "shirt", "jacket"],
        "bottom_colour": ["black", "grey", "navy", "brown", "beige", "blue"], "bottom": ["trousers", "jeans", "skirt"],
        "action": ["standing still", "walking to the left", "walking to the right", "waving a hand", "nodding",
                   "shaking the head", "jumping", "sitting down on a chair", "talking"],
    }


def small() -> PVChatConfig:
    """Real pretrained parts that ship offline (pvchat.weights), in the paper's shape."""
    return PVChatConfig(
        # EfficientNet-Lite0 grid tokens + one token per tracked person (face, body crop, pose, motion; each
        # step a snippet of 2 frames, so motion between steps is seen);
        # body crops through the body reader, which `pvchat pretrain` trains on what people wear
        vision=VisionConfig(model_type="person", weights="efficientnet-lite0",
                            config=dict(image_size=288, max_people=3, crop_size=160, grid=2, body_reader=True, snippet=2)),
        qformer=QFormerConfig(
            hidden_size=256, num_layers=4, num_heads=8, intermediate_size=1024, dropout=0.0, attention_dropout=0.0,
            routing="remoh", routed_layers=[2, 3], num_shared_heads=5, top_k=2,
            num_general_queries=16, num_subject_queries=8,
            reg_grad="router",  # as the face preset: the sparsity terms set the routers, the LM the rest
            identity_anchor=True,  # each person's block starts from the face it matches (model/identity.py)
        ),
        # SmolLM2-135M-Instruct; LoRA on the attention projections keeps what it already says
        llm=LLMConfig(model_type="llama", weights="smollm2", tokenizer="pretrained", lora_r=8, lora_alpha=16,
                      lora_dropout=0.0, lora_targets=["q_proj", "k_proj", "v_proj", "o_proj"]),
        num_frames=8,
        # visual tokens written as mixtures of SmolLM2's own words, which the answers ask for (projector.py)
        projector="words", word_loss=1.0,
        # after each person's block, tokens naming what they wear and do (model/readout.py); the labels
        # are the offline world's, which alignment teaches (tests check they match it)
        readout=readout_labels(),
        preset="small",
    )


PRESETS: dict[str, Callable[[], PVChatConfig]] = {"tiny": tiny, "demo": demo, "face": face, "small": small,
                                                  "paper": paper}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> PVChatConfig:
    """A fresh config for preset ``name``; an unknown name lists the valid ones."""
    if name not in PRESETS:
        raise unknown_choice("preset", name, PRESETS)
    return PRESETS[name]()
