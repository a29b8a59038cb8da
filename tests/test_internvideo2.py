"""The InternVideo2-Chat-8B-HD / official PVChat checkpoint layout → pvchat: a synthetic state dict with
the official key names (Internvideo2_chat_8B_HD_finetune_REMOH/model.safetensors.index.json) at tiny sizes."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import Blip2QFormerConfig, Blip2QFormerModel, MistralConfig, MistralForCausalLM

from pvchat.errors import InputError
from pvchat.model.config import LLMConfig, PVChatConfig, QFormerConfig, VisionConfig
from pvchat.model.internvideo2 import convert, convert_checkpoint, load_converted
from pvchat.model.internvideo2_vit import InternVideo2Tower

DV, VHEADS, DEPTH, PATCH, SIZE, FRAMES, MLP = 32, 2, 2, 8, 16, 2, 48  # L = 4 patches a frame
DQ, QLAYERS, QHEADS, SHARED = 32, 4, 4, 2  # routed layers 2, 3 (cross-attention in 0 and 2)
LORA_R, LORA_SCALE = 2, 2.0
VOCAB = 512  # the tiny tokenizer's size; the checkpoint has one row more (an added <sks>)
LLM = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")


def blip2_qformer():
    torch.manual_seed(1)
    cfg = Blip2QFormerConfig(hidden_size=DQ, num_hidden_layers=QLAYERS, num_attention_heads=QHEADS,
                             intermediate_size=64, encoder_hidden_size=DV, cross_attention_frequency=2)
    return Blip2QFormerModel(cfg).eval()


def official_state(routers=True, personal=True):
    """Tensors named as the official checkpoint names them, at tiny sizes."""
    g = torch.Generator().manual_seed(0)

    def r(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    L = (SIZE // PATCH) ** 2
    st = {"vision_encoder.patch_embed.proj.weight": r(DV, 3, 1, PATCH, PATCH), "vision_encoder.patch_embed.proj.bias": r(DV),
          "vision_encoder.cls_token": r(1, 1, DV), "vision_encoder.pos_embed": r(1, 1 + FRAMES * L, DV),
          "vision_encoder.img_pos_embed": r(1, 1 + L, DV),
          "vision_layernorm.weight": 1 + r(DV), "vision_layernorm.bias": r(DV)}
    for i in range(DEPTH):
        b = f"vision_encoder.blocks.{i}."
        st.update({b + "norm1.weight": 1 + r(DV), b + "norm2.weight": 1 + r(DV), b + "attn.qkv.weight": r(3 * DV, DV),
                   b + "attn.q_norm.weight": 1 + r(DV), b + "attn.k_norm.weight": 1 + r(DV),
                   b + "attn.proj.weight": r(DV, DV), b + "attn.proj.bias": r(DV), b + "ls1": r(DV), b + "ls2": r(DV),
                   b + "mlp.fc1.weight": r(MLP, DV), b + "mlp.fc1.bias": r(MLP), b + "mlp.fc2.weight": r(DV, MLP),
                   b + "mlp.fc2.bias": r(DV)})
    for k, v in blip2_qformer().state_dict().items():  # BERT layout: attention.attention.* is official attention.self.*
        k = k.replace("attention.attention.", "attention.self.").replace("crossattention.attention.", "crossattention.self.")
        st["qformer.bert.embeddings.LayerNorm." + k.split(".")[-1] if k.startswith("layernorm.") else "qformer.bert." + k] = v
    st["qformer.bert.embeddings.word_embeddings.weight"] = r(30, DQ)
    st["qformer.bert.embeddings.position_embeddings.weight"] = r(16, DQ)
    if routers:
        for i in (2, 3):
            for part in ("attention",) + (("crossattention",) if i % 2 == 0 else ()):
                p = f"qformer.bert.encoder.layer.{i}.{part}.self.router_alpha."
                st.update({p + "router.weight": r(QHEADS - SHARED, DQ), p + "router.bias": r(QHEADS - SHARED),
                           p + "alpha_proj.weight": r(2, DQ)})
    st.update({"query_tokens": r(1, 4, DQ), "extra_query_tokens": r(1, 2, DQ), "project_up.weight": r(64, DQ),
               "project_up.bias": r(64), "project_down.weight": r(DQ, 64), "project_down.bias": r(DQ)})
    if personal:
        st["personal_query_tokens"] = r(1, 3, DQ)
    torch.manual_seed(2)
    for k, v in MistralForCausalLM(MistralConfig(**{**LLM, "vocab_size": VOCAB + 1})).state_dict().items():
        st["lm.base_model.model." + k] = v
        leaf = k.rsplit(".", 2)[-2] if k.endswith(".weight") else None
        if leaf in TARGETS:
            base = "lm.base_model.model." + k[: -len(".weight")]
            st[base + ".lora_A.default.weight"] = r(LORA_R, v.shape[1])
            st[base + ".lora_B.default.weight"] = r(v.shape[0], LORA_R)
    return st


def reference_vit(st, pixels):
    """The ViT read straight off the official tensors: (B, T, 3, S, S) → (B, 1 + T·L, C)."""
    B, T = pixels.shape[:2]

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    x = F.conv3d(pixels.transpose(1, 2), st["vision_encoder.patch_embed.proj.weight"],
                 st["vision_encoder.patch_embed.proj.bias"], stride=(1, PATCH, PATCH)).flatten(2).transpose(1, 2)
    x = torch.cat([st["vision_encoder.cls_token"].expand(B, -1, -1), x], 1)
    x = x + st["vision_encoder.img_pos_embed" if T == 1 else "vision_encoder.pos_embed"]
    for i in range(DEPTH):
        b = f"vision_encoder.blocks.{i}."
        h = rms(x, st[b + "norm1.weight"])
        q, k, v = (h @ st[b + "attn.qkv.weight"].T).chunk(3, -1)
        q, k = rms(q, st[b + "attn.q_norm.weight"]), rms(k, st[b + "attn.k_norm.weight"])
        q, k, v = (t.view(B, -1, VHEADS, DV // VHEADS).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / (DV // VHEADS) ** 0.5, -1) @ v
        x = x + st[b + "ls1"] * (a.transpose(1, 2).reshape(B, -1, DV) @ st[b + "attn.proj.weight"].T + st[b + "attn.proj.bias"])
        h = rms(x, st[b + "norm2.weight"])
        h = F.gelu(h @ st[b + "mlp.fc1.weight"].T + st[b + "mlp.fc1.bias"]) @ st[b + "mlp.fc2.weight"].T + st[b + "mlp.fc2.bias"]
        x = x + st[b + "ls2"] * h
    return x


def config(routing="remoh"):
    return PVChatConfig(
        vision=VisionConfig(model_type="internvideo2", config=dict(hidden_size=DV, depth=DEPTH, num_heads=VHEADS,
                                                                   mlp_hidden=MLP, image_size=SIZE, patch_size=PATCH,
                                                                   num_frames=FRAMES)),
        qformer=QFormerConfig(hidden_size=DQ, num_layers=QLAYERS, num_heads=QHEADS, intermediate_size=64, dropout=0.0,
                              attention_dropout=0.0, routing=routing, routed_layers=[2, 3], num_shared_heads=SHARED,
                              top_k=1, alpha_scale=1.0, num_general_queries=6, num_subject_queries=3),
        llm=LLMConfig(model_type="mistral", config=LLM, tokenizer="pretrained", lora_r=4, lora_alpha=8, lora_dropout=0.0),
        num_frames=FRAMES,
    )


def test_every_tensor_finds_its_place():
    st = official_state()
    parts = convert(st, LORA_SCALE)
    model = parts["model"]
    assert torch.equal(model["qformer.general_queries"], torch.cat([st["query_tokens"][0], st["extra_query_tokens"][0]]))
    assert torch.equal(parts["person"]["queries"], st["personal_query_tokens"][0])
    assert torch.equal(model["qformer.layers.2.cross_attn.router.weight"],
                       st["qformer.bert.encoder.layer.2.crossattention.self.router_alpha.router.weight"])
    assert torch.equal(model["qformer.layers.3.self_attn.balance.weight"],
                       st["qformer.bert.encoder.layer.3.attention.self.router_alpha.alpha_proj.weight"])
    assert torch.equal(model["projector.weight"], st["project_up.weight"])
    assert torch.equal(model["vision_norm.bias"], st["vision_layernorm.bias"])
    assert not any("project_down" in k or "word_embeddings" in k for k in model)
    p = "lm.base_model.model.model.layers.1.mlp.down_proj."
    want = st[p + "weight"] + LORA_SCALE * st[p + "lora_B.default.weight"] @ st[p + "lora_A.default.weight"]
    assert torch.allclose(parts["llm"]["model.layers.1.mlp.down_proj.weight"], want)
    assert not any("lora_" in k for k in parts["llm"])
    tower = InternVideo2Tower(**config().vision.config)
    tower.load_state_dict({k[len("vision."):]: v for k, v in model.items() if k.startswith("vision.")}, strict=True)
    with pytest.raises(InputError, match="no place in pvchat") as e:
        convert({**st, "vision_encoder.clip_projector.weight": torch.zeros(1)})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("frames", [1, FRAMES])
def test_the_tower_reads_the_layout_as_the_official_vit(frames):
    st = official_state()
    tower = InternVideo2Tower(**config().vision.config).eval()
    tower.load_state_dict({k[len("vision."):]: v for k, v in convert(st)["model"].items() if k.startswith("vision.")})
    pixels = torch.randn(2, frames, 3, SIZE, SIZE)
    with torch.no_grad():
        out = tower(pixels)
    assert out.shape == (2, 1, 1 + frames * (SIZE // PATCH) ** 2, DV)  # the clip as one token set
    assert torch.allclose(out[:, 0], reference_vit(st, pixels), atol=1e-5)
    with pytest.raises(InputError, match="reads 1 or 2 frames"):
        tower(torch.randn(1, 3, 3, SIZE, SIZE))


def test_the_qformer_computes_what_the_bert_qformer_did():
    """Without routers the converted Q-former (queries only, as PVChat runs it) equals the BERT Q-former it came from."""
    from pvchat.model.qformer import QFormer

    st = official_state(routers=False)
    qf = QFormer(config("mha").qformer, vision_width=DV).eval()
    qf.load_state_dict({k[len("qformer."):]: v for k, v in convert(st)["model"].items() if k.startswith("qformer.")})
    vision = torch.randn(2, 9, DV)
    queries = qf.general_queries[None].expand(2, -1, -1)
    with torch.no_grad():
        ours, _, _ = qf(vision, torch.zeros(2, 0, dtype=torch.bool))
        theirs = blip2_qformer()(query_embeds=queries, encoder_hidden_states=vision).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_a_sharded_checkpoint_becomes_a_pvchat(tmp_path):
    from pvchat.model.tokenizer import build_tiny_tokenizer

    st = official_state()
    source = tmp_path / "Internvideo2_chat_8B_HD_finetune_REMOH"
    source.mkdir()
    keys = sorted(st)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, ks in shards.items():
        save_file({k: st[k].contiguous() for k in ks}, str(source / name))
    (source / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}}))
    build_tiny_tokenizer().save_pretrained(source)

    out = convert_checkpoint(source, tmp_path / "converted", config(), lora_scale=LORA_SCALE)
    model = load_converted(out, person="Ann").eval()
    assert torch.equal(model.vision.blocks[1].ls2.detach(), st["vision_encoder.blocks.1.ls2"])
    assert torch.equal(model.qformer.subject_queries[0].detach(), st["personal_query_tokens"][0])
    assert torch.equal(model.qformer.layers[2].self_attn.router.bias.detach(),
                       st["qformer.bert.encoder.layer.2.attention.self.router_alpha.router.bias"])
    head = model.llm.get_base_model().lm_head.base.weight  # inside the subject-token wrapper
    p = "lm.base_model.model.lm_head."
    want = st[p + "weight"] + LORA_SCALE * st[p + "lora_B.default.weight"] @ st[p + "lora_A.default.weight"]
    assert torch.allclose(head, want[:VOCAB])  # the row of the checkpoint's added token is dropped
    enc = model.prepare("Is <Ann> in the video?", answer="Yes.")
    ids = torch.tensor([enc.input_ids])
    loss = model(ids, labels=torch.tensor([enc.labels]), pixel_values=torch.randn(1, FRAMES, 3, SIZE, SIZE)).loss
    assert torch.isfinite(loss)
    with pytest.raises(InputError, match="does not fit the config"):
        convert_checkpoint(source, tmp_path / "bad", config().__class__.from_dict(
            {**config().to_dict(), "llm": {**config().to_dict()["llm"], "config": {**LLM, "hidden_size": 32}}}))


def test_official_config_has_the_papers_sizes():
    from pvchat.model.internvideo2 import official_config

    cfg = official_config()
    with torch.device("meta"):
        tower = InternVideo2Tower(**cfg.vision.config)
    assert 0.95e9 < sum(p.numel() for p in tower.parameters()) < 1.05e9  # InternVideo2-1B, 39 of 40 blocks
    assert tower.pos_embed.shape == (1, 1 + 8 * 256, 1408)  # the official 2049 tokens
    q = cfg.qformer
    assert (q.num_general_queries, q.num_subject_queries, q.routed_layers, q.num_shared_heads, q.top_k) == \
           (96, 16, [6, 7, 8, 9, 10, 11], 8, 2)
    assert cfg.llm.lora_r == 16 and cfg.llm.lora_alpha == 32 and "lm_head" in cfg.llm.lora_targets
