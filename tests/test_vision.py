"""Vision tower: per-frame features from a chosen block, freezing, eval-mode of frozen parts, save/load."""

import pytest
import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel

from pvchat.errors import ConfigError, InputError
from pvchat.model.vision import VisionTower

SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, image_size=32, patch_size=8)
TOKENS = {"clip": 16 + 1, "siglip": 16}  # (32/8)² patches, + CLS for CLIP


def _tower(model_type="clip", feature_layer=-2, **kw):
    torch.manual_seed(0)
    return VisionTower.from_config(model_type, feature_layer=feature_layer, **{**SIZES, **kw})


@pytest.mark.parametrize("model_type", ["clip", "siglip"])
@pytest.mark.parametrize("feature_layer", [-2, -1, 1])
def test_shapes_and_features_are_the_chosen_hidden_state(model_type, feature_layer):
    tower = _tower(model_type, feature_layer)
    x = torch.randn(2, 3, 3, 32, 32)  # (B, T, 3, H, W)
    feats = tower(x)
    assert feats.shape == (2, 3, TOKENS[model_type], 32) == (2, 3, tower.num_patches, tower.hidden_size)
    ref = tower.model(pixel_values=x.flatten(0, 1), output_hidden_states=True).hidden_states[feature_layer]
    torch.testing.assert_close(feats, ref.reshape(2, 3, *ref.shape[1:]), rtol=0, atol=0)
    # frames are independent: frame (1, 2) alone gives the same features
    torch.testing.assert_close(tower(x[1:2, 2:3])[0, 0], feats[1, 2], rtol=1e-5, atol=1e-5)
    assert tower.num_blocks == {-2: 3, -1: 4, 1: 1}[feature_layer]


@pytest.mark.parametrize("model_type", ["clip", "siglip"])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_set_trainable_unfreezes_exactly_the_last_k_feature_blocks(model_type, k):
    tower = _tower(model_type)  # 4 blocks, features from block 3: blocks 0..2 feed them
    tower.set_trainable(k)
    trainable = {n.split(".")[3] for n, p in tower.named_parameters() if p.requires_grad}
    assert all(n.startswith("model.encoder.layers.") for n, p in tower.named_parameters() if p.requires_grad)
    assert trainable == {str(i) for i in range(3 - k, 3)}
    # gradients reach exactly those blocks
    tower.train()
    if k:  # with k = 0 nothing requires grad
        tower(torch.randn(1, 2, 3, 32, 32)).pow(2).mean().backward()
    with_grad = {n.split(".")[3] for n, p in tower.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    tower.set_trainable(0)
    assert not any(p.requires_grad for p in tower.parameters())


def test_frozen_parts_stay_in_eval_mode_under_a_training_parent():
    tower = _tower("clip", attention_dropout=0.5)
    parent = nn.ModuleDict({"vision": tower, "head": nn.Linear(32, 2)})
    tower.set_trainable(1)
    parent.train()
    assert tower.training and parent["head"].training
    modes = {n: m.training for n, m in tower.model.named_modules()}
    assert modes["encoder.layers.2"] and modes["encoder.layers.2.self_attn"]  # the trainable block
    assert not any(v for n, v in modes.items() if not n.startswith("encoder.layers.2"))
    parent.eval()
    assert not any(m.training for m in tower.modules())

    tower.set_trainable(0)  # fully frozen: dropout stays off even in training mode
    parent.train()
    x = torch.randn(1, 2, 3, 32, 32)
    assert torch.equal(tower(x), tower(x))
    tower.set_trainable(3)  # the trainable blocks do get dropout
    assert not torch.equal(tower(x), tower(x))


@pytest.mark.parametrize("model_type", ["clip", "siglip"])
def test_save_pretrained_round_trip_gives_identical_features(tmp_path, model_type):
    tower = _tower(model_type)
    tower.save_pretrained(tmp_path)
    loaded = VisionTower.from_pretrained(tmp_path, feature_layer=-2)
    x = torch.randn(2, 2, 3, 32, 32)
    assert torch.equal(tower(x), loaded(x))
    assert (loaded.num_patches, loaded.image_size, loaded.num_blocks) == (tower.num_patches, 32, 3)


def test_from_pretrained_takes_the_vision_part_of_a_full_clip(tmp_path):
    torch.manual_seed(0)
    full = CLIPModel(CLIPConfig(
        vision_config=dict(SIZES), text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                    num_attention_heads=4, vocab_size=99),
    ))
    full.save_pretrained(tmp_path)
    tower = VisionTower.from_pretrained(tmp_path, feature_layer=-1)
    x = torch.randn(1, 2, 3, 32, 32)
    ref = full.vision_model(pixel_values=x.flatten(0, 1)).last_hidden_state
    assert torch.equal(tower(x)[0], ref)


def test_errors_name_the_valid_choices(tmp_path):
    with pytest.raises(ConfigError, match="clip, siglip"):
        VisionTower.from_config("vit-huge", **SIZES)
    with pytest.raises(ConfigError, match="num_hidden_layer"):
        VisionTower.from_config("clip", num_hidden_layer=2)
    with pytest.raises(ConfigError, match="feature_layer 5"):
        _tower(feature_layer=5)
    with pytest.raises(ConfigError, match="feature_layer 0"):
        _tower(feature_layer=0)
    with pytest.raises(ConfigError, match=r"0\.\.3"):
        _tower().set_trainable(4)  # only 3 blocks feed the penultimate features
    with pytest.raises(InputError, match="config.json"):
        VisionTower.from_pretrained(tmp_path / "missing")
    with pytest.raises(InputError, match="32×32"):
        _tower()(torch.randn(1, 2, 3, 16, 16))
    with pytest.raises(InputError, match=r"\(B, T, 3, H, W\)"):
        _tower()(torch.randn(2, 3, 32, 32))
