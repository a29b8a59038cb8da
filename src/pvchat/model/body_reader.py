"""The body reader: EfficientNet-Lite0's last blocks over a person's body crop, trainable on what
they wear.

The ``small`` tower's person token carries a CNN feature of the body crop (model/person_tower.py).
With every block frozen at its ImageNet weights and mean-pooled, a linear probe names the top
garment's kind on unseen people at ~0.6; the same blocks trained on garment kind and colour (by
``pvchat pretrain``, :func:`pvchat.train.body_reader.train_body_reader`) reach 0.88 on them
(colour 0.91, both 0.79; bench/garment.py). The reader splits the network at block ``cut``::

    crop (N, 3, 160, 160) ─► stem + blocks[:cut]  (frozen, the tower's own CNN)   (N, 112, 10, 10)
                          ─► blocks[cut:] + 1×1 head conv + BN (the reader's copy)  (N, 1280, 5, 5)
                          ─► mean over the crop                                    (N, 1280)

Built from the tower's CNN, the reader starts as an exact copy of its last blocks, so an untrained
reader gives the frozen tower's features bit for bit; trained weights arrive with the model's
state dict (a base, or ``alignment.safetensors``). It is frozen everywhere else: batch norm keeps
its ImageNet statistics even while it trains.
"""

from __future__ import annotations

import copy

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

CUT = 11  # blocks 0..10 stay ImageNet's (a 160 px crop: 112 × 10 × 10 maps); 11..15 and the head read
FEATURE_DIM = 1280


def frozen_maps(cnn: EfficientNet, x: torch.Tensor, cut: int = CUT) -> torch.Tensor:
    """(N, 3, h, w), EfficientNet-Lite's input scaling → the maps after block ``cut`` (N, C, h/16, w/16)."""
    x = cnn._swish(cnn._bn0(cnn._conv_stem(x)))
    for block in cnn._blocks[:cut]:
        x = block(x)
    return x


class BodyReader(nn.Module):
    """The last blocks of an EfficientNet-Lite0 and its 1×1 head: block-``cut`` maps → (N, 1280) features."""

    def __init__(self, cnn: EfficientNet, cut: int = CUT):
        super().__init__()
        self.cut = cut
        self.blocks = copy.deepcopy(cnn._blocks[cut:])
        self.conv_head = copy.deepcopy(cnn._conv_head)
        self.bn = copy.deepcopy(cnn._bn1)
        self.swish = copy.deepcopy(cnn._swish)

    def train(self, mode: bool = True) -> BodyReader:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()  # ImageNet statistics stay, also while the reader trains
        return self

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = maps  # (N, C, h, w) after block ``cut``
        for block in self.blocks:
            x = block(x)  # (N, 320, h/2, w/2)
        return self.swish(self.bn(self.conv_head(x))).mean((2, 3))  # (N, 1280)
