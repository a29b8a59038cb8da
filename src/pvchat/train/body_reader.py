"""Training the body reader (model/body_reader.py) on what people wear, and scoring it per clip.

``pvchat pretrain`` runs this before alignment, on body crops of the ``align`` people in clips that
dress them anew each time (``train.pretrain.garment_data``); bench/garment.py measures it on unseen
people. The reader's blocks train with one linear head per attribute (cross-entropy summed over
attributes), AdamW with a one-cycle schedule, horizontal flips and ±1-cell shifts of the cached
block maps; only the reader is kept.
"""

from __future__ import annotations

import random

import torch
from torch import nn
from tqdm.auto import tqdm

from pvchat.model.body_reader import FEATURE_DIM, BodyReader


def train_body_reader(reader: BodyReader, maps: torch.Tensor, targets: dict[str, torch.Tensor],
                      num_classes: dict[str, int], steps: int = 600, batch_size: int = 64, lr: float = 3e-4,
                      seed: int = 0, progress: bool = True) -> tuple[nn.ModuleDict, list[float]]:
    """Train ``reader`` (in place) on block maps (n, C, h, w) with integer ``targets`` per attribute
    (each (n,)); returns the attribute heads and the loss per step. The reader ends frozen, in eval mode."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    heads = nn.ModuleDict({a: nn.Linear(FEATURE_DIM, n) for a, n in num_classes.items()})
    reader.requires_grad_(True).train()
    params = [*reader.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    losses = []
    for _ in tqdm(range(steps), desc="body reader (garment kind, colour)", disable=not progress):
        b = torch.randint(0, len(maps), (batch_size,))
        x = maps[b].float()  # (B, C, h, w)
        if rng.random() < 0.5:
            x = x.flip(-1)
        x = torch.roll(x, (rng.randint(-1, 1), rng.randint(-1, 1)), (2, 3))
        f = reader(x)  # (B, 1280)
        loss = sum(nn.functional.cross_entropy(heads[a](f), targets[a][b]) for a in heads)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    reader.requires_grad_(False).eval()
    return heads.eval(), losses


@torch.no_grad()
def clip_accuracy(reader: BodyReader, heads: nn.ModuleDict, maps: torch.Tensor, clip_of: torch.Tensor,
                  targets: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per attribute, and for all attributes at once ("all"), the share of clips named right, with each
    clip's logits averaged over its crops (``clip_of``: the clip of each crop)."""
    feats = torch.cat([reader(maps[i:i + 256].float()) for i in range(0, len(maps), 256)])
    clips: dict[int, list[int]] = {}
    for j, c in enumerate(clip_of.tolist()):
        clips.setdefault(c, []).append(j)
    right = {a: 0 for a in heads} | {"all": 0}
    for rows in clips.values():
        ok = {a: int(heads[a](feats[rows]).mean(0).argmax()) == int(targets[a][rows[0]]) for a in heads}
        for a, v in ok.items():
            right[a] += v
        right["all"] += all(ok.values())
    return {a: v / max(len(clips), 1) for a, v in right.items()}
