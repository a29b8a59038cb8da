"""Is identity lost in the Q-former? A new person on the face preset's features, Q-former + yes/no head only.

    .venv/bin/pvchat demo --preset face        # writes workspace/demo (data, queries, report.json)
    python bench/identity_transfer.py [--demo workspace/demo] [--clips 250] [--steps 1500] [--seeds 0 1]

The demo's model answers every clip alike; this isolates the part of PVChat that should carry
identity (supp. S1: a subject's N queries in the Q-former) from the LLM. Features: the ``face``
preset's frames (192 px, 4 per clip) as the tower's dlib face tokens. Readout: the mean of the
subject block's outputs → a linear yes/no head (in place of the LLM).

1. pretrain the Q-former (ReMoH, demo sizes) with one query block per world person, on clips of
   people that are NOT in the demo's world ("Is <w07> here?", balanced); report held-out clips;
2. freeze everything, add one block for the demo's subject, train only that block on the demo's
   own training clips (its manifest), answer the demo's held-out queries (the subject, strangers,
   look-alikes) — the same clips the demo reports on;
3. baseline: the same Q-former from random init, everything trained on the demo's clips.

Prints accuracy per seed and writes ``bench/results/identity_transfer.json`` (a run stopped
after seed 0 is kept as printed in ``bench/results/identity_transfer.txt``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pvchat.data import read_manifest
from pvchat.model.face_tokens import FaceTokens
from pvchat.model.presets import get_preset
from pvchat.model.qformer import QFormer
from pvchat.offline.world.people import make_people
from pvchat.train.pretrain import PRETRAIN_FRAMES, pretrain_people, pretrain_world
from pvchat.video import IMAGENET_MEAN, IMAGENET_STD, read_frames_uniform, to_model_input


class IdentityProbe(nn.Module):
    """Face tokens → LayerNorm → Q-former with per-person blocks → mean of the person's block → logit."""

    def __init__(self, dim: int):
        super().__init__()
        self.cfg = get_preset("face").qformer
        self.norm = nn.LayerNorm(dim)
        self.qformer = QFormer(self.cfg, dim)
        self.head = nn.Linear(self.cfg.hidden_size, 1)

    def forward(self, tokens: torch.Tensor, person: torch.Tensor) -> torch.Tensor:
        B, G, N = tokens.shape[0], self.cfg.num_general_queries, self.cfg.num_subject_queries
        mask = torch.zeros(B, self.qformer.num_subjects, dtype=torch.bool)
        mask[torch.arange(B), person] = True
        out, keep, _ = self.qformer(self.norm(tokens), mask)  # (B, Q, D)
        block = out[:, G:][keep[:, G:]].reshape(B, N, -1)  # each sample's own block
        return self.head(block.mean(1)).squeeze(-1)


def features(clips_frames, size: int) -> torch.Tensor:
    """(n, T·F, D) face tokens of each clip's frames, as the face preset's tower makes them."""
    cfg = get_preset("face").vision
    ft = FaceTokens(cfg.face_tokens, cfg.config["hidden_size"], IMAGENET_MEAN, IMAGENET_STD)
    return torch.stack([ft(to_model_input(f, size=size)[None])[0].flatten(0, 1) for f in clips_frames])


def world_data(demo_faces: set[str], clips: int):
    people = pretrain_people(demo_faces)
    world = pretrain_world(people)
    ids = [p.id for p in people]
    frames, present = [], torch.zeros(clips, len(ids), dtype=torch.bool)
    for i in range(clips):
        spec = world.clip_spec(i)
        frames.append(world.render_clip(spec).frames)
        for c in spec.cast:
            present[i, ids.index(c.person)] = True
    return frames, present


def run(seed: int, X, M, DX, DY, QX, QY, steps: int, pretrain: bool) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = IdentityProbe(X.shape[-1])
    bce = nn.BCEWithLogitsLoss()
    out = {}
    if pretrain:
        for _ in range(M.shape[1]):
            net.qformer.add_subject()
        n_train = int(0.8 * len(X))

        def draw(idx, B):  # a clip and a person, present half the time
            clip = rng.choice(idx, B)
            person, y = np.empty(B, int), np.empty(B, np.float32)
            for k, c in enumerate(clip):
                here = np.flatnonzero(M[c].numpy())
                y[k] = float(len(here) > 0 and rng.random() < 0.5)
                person[k] = rng.choice(here if y[k] else np.flatnonzero(~M[c].numpy()))
            return X[clip], torch.tensor(person), torch.tensor(y)

        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
        for _ in range(steps):
            x, p, y = draw(np.arange(n_train), 32)
            loss = bce(net(x, p), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            x, p, y = draw(np.arange(n_train, len(X)), 400)
            out["pretrain_heldout_clips"] = float(((net(x, p) > 0).float() == y).float().mean())
    new = net.qformer.add_subject()
    for p in net.parameters():
        p.requires_grad_(not pretrain)
    block = net.qformer.subject_queries[new]
    block.requires_grad_(True)
    opt = torch.optim.AdamW([block] if pretrain else list(net.parameters()), lr=1e-2 if pretrain else 1e-3,
                            weight_decay=0.0)
    who = torch.full((len(DX),), new)
    for _ in range(300):
        loss = bce(net(DX, who), DY)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out["train"] = float(((net(DX, who) > 0).float() == DY).float().mean())
        q = net(QX, torch.full((len(QX),), new)) > 0
    out["queries"] = float((q == QY).float().mean())
    out["with_subject"] = float(q[QY].float().mean())
    out["without_subject"] = float((~q[~QY]).float().mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=Path("workspace/demo"))
    ap.add_argument("--clips", type=int, default=250)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    report = json.loads((args.demo / "report.json").read_text())
    size = get_preset("face").vision.config["image_size"]
    t = time.perf_counter()
    demo_faces = {p.face for p in make_people(report["world_people"], 0)}
    frames, M = world_data(demo_faces, args.clips)
    X = features(frames, size)
    records = read_manifest(args.demo / "data" / "manifest.jsonl")
    DX = features([read_frames_uniform(args.demo / "data" / r.clip, PRETRAIN_FRAMES) for r in records], size)
    DY = torch.tensor([float(bool(r.people)) for r in records])
    rows = report["transcript"]
    QX = features([read_frames_uniform(args.demo / "queries" / r["clip"], PRETRAIN_FRAMES) for r in rows], size)
    QY = torch.tensor([r["label"] for r in rows])
    print(f"features: {len(X)} world clips of {M.shape[1]} people, {len(DX)} training clips, {len(QX)} queries "
          f"({time.perf_counter() - t:.0f} s)")
    results = []
    for seed in args.seeds:
        for pretrain in (True, False):
            t = time.perf_counter()
            r = {"seed": seed, "pretrained": pretrain, **run(seed, X, M, DX, DY, QX, QY, args.steps, pretrain)}
            r["seconds"] = round(time.perf_counter() - t, 1)
            results.append(r)
            print(json.dumps(r))
    out = Path(__file__).parent / "results" / "identity_transfer.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
