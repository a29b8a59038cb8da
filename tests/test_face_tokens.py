"""Face tokens: dlib identity embeddings appended to the vision tower's tokens (model/face_tokens.py)."""

import numpy as np
import pytest
import torch

from pvchat.errors import ConfigError
from pvchat.model.presets import get_preset
from pvchat.model.pvchat import PVChat
from pvchat.video import to_model_input


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def test_face_tokens_carry_embedding_box_and_flag():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    cfg.vision.config.update(hidden_size=136, intermediate_size=64, image_size=224, patch_size=32)
    cfg.vision.face_tokens = 2
    model = PVChat.from_config(cfg)
    face = to_model_input(_astronaut()[None], size=224)  # (1, 3, 224, 224): one face
    blank = torch.zeros_like(face)  # no face
    feats = model.encode_video(torch.stack([face, blank]))  # (2, 1, 49 + 1 + 2, 136)
    assert feats.shape == (2, 1, model.vision.num_patches + 2, 136)
    tokens = feats[:, 0, -2:]  # (2, F, D)
    assert tokens[0, 0, 132] == 1 and tokens[0, 1, 132] == 0  # one face found, second slot empty
    assert 0.3 < float(tokens[0, 0, :128].norm()) < 1.5  # a dlib embedding (norm ~0.4–1)
    x0, y0, x1, y1 = tokens[0, 0, 128:132].tolist()
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert tokens[1].abs().sum() == 0  # no face: all-zero tokens
    # the Q-former reads them like any other vision token
    enc = model.prepare("Describe the video.")
    assert model(input_ids=torch.tensor([enc.input_ids]), vision_features=feats[:1]).logits.isfinite().all()


def test_face_tokens_need_room_in_the_tower():
    cfg = get_preset("tiny")
    cfg.vision.face_tokens = 2  # tiny's tower is 32 wide < 133
    with pytest.raises(ConfigError, match="hidden_size"):
        PVChat.from_config(cfg)


def test_face_preset_reads_faces_only():
    torch.manual_seed(0)
    cfg = get_preset("face")
    model = PVChat.from_config(cfg)
    face = to_model_input(_astronaut()[None], size=cfg.vision.config["image_size"])  # (1, 3, 192, 192)
    feats = model.encode_video(face[None])  # no ViT patches: the frame is its 2 face tokens
    assert feats.shape == (1, 1, 2, cfg.vision.config["hidden_size"])
    assert feats[0, 0, 0, 132] == 1 and feats[0, 0, 1].abs().sum() == 0

    cfg = get_preset("tiny")
    cfg.vision.patch_tokens = False  # and no face tokens: a frame would have no tokens
    with pytest.raises(ConfigError, match="patch_tokens"):
        PVChat.from_config(cfg)
