"""Training step time with and without the frozen-vision feature cache (``cache_features``).

    python bench/train.py [--repeats 3] [--epochs 3] [--configs tiny,vit-s] [--threads 1]

The real loop (:func:`pvchat.train.loop.train`, stage 2, vision frozen) on a small synthetic clip
set. With the cache, a clip is decoded and run through the vision tower once, in the first epoch;
without it, every step decodes its clips and runs the tower. Both modes run alternately in one
process (a warm-up run each first); a step's time is the gap between two ``on_step`` calls, the
first epoch is left out (it fills the cache), and the median over all repeats is reported with
the ratio uncached / cached, next to what a step without the cache adds, measured apart:
decoding two clips and running the tower on them.

Configs: ``tiny`` (the tests' preset: a 2-block, 32-wide ViT on 32 px, 4 frames) and ``vit-s``
(the same model with a ViT-S-sized tower: 6 blocks of width 384 on 112 px, 8 frames), where the
tower is most of the step. One intra-op thread by default: on a shared CPU, OpenMP threads
waiting for each other can cost more than the small model's compute. Writes
bench/results/train.json and train.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pvchat.data import ClipRecord, QADataset, QARecord, write_manifest
from pvchat.model.presets import get_preset
from pvchat.model.pvchat import PVChat
from pvchat.train.loop import train
from pvchat.train.recipe import stage2
from pvchat.video import write_video

RESULTS = Path(__file__).parent / "results"


def config(name: str):
    """(model config, frames per clip) of a benchmark config."""
    cfg = get_preset("tiny")
    cfg.subjects = ["sks"]
    if name == "tiny":
        return cfg, 4
    if name == "vit-s":
        cfg.vision.config = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                                 image_size=112, patch_size=16)
        return cfg, 8
    raise SystemExit(f"unknown config {name!r}; choose tiny or vit-s")


def make_clips(root: Path, n: int = 8, frames: int = 16, size: int = 128) -> Path:
    """``n`` noisy single-colour clips, half with the subject; returns the manifest path."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        present = i % 2 == 0
        colour = np.array((220, 40, 40) if present else (40, 40, 220), np.uint8)
        video = np.zeros((frames, size, size, 3), np.uint8) + colour
        video += rng.integers(0, 30, video.shape, dtype=np.uint8)
        write_video(root / f"c{i}.mp4", video, fps=8)
        qa = [QARecord("existence", "Is <sks> in the video?", "Yes." if present else "No.", present)]
        records.append(ClipRecord(f"c{i}.mp4", ["sks"] if present else [], qa))
    write_manifest(root / "manifest.jsonl", records)
    return root / "manifest.jsonl"


def step_times(model: PVChat, ds: QADataset, cache: bool, epochs: int, out: Path) -> list[float]:
    """Seconds per step after the first epoch, from one call of the real loop."""
    stamps: list[float] = []
    recipe = stage2(epochs=epochs, num_frames=ds.num_frames, cache_features=cache, checkpoint_every=10**9,
                    lr_subject=1e-3, lr_qformer=1e-3, lr_lora=1e-3)
    train(model, ds, recipe, out, progress=False, on_step=lambda *_: stamps.append(time.perf_counter()))
    per_epoch = len(stamps) // epochs
    return list(np.diff(stamps[per_epoch - 1:]))


def bench(name: str, manifest: Path, repeats: int, epochs: int, work: Path) -> dict:
    cfg, frames = config(name)
    torch.manual_seed(0)
    model = PVChat.from_config(cfg)
    ds = QADataset(manifest, stage=2, num_frames=frames, image_size=model.vision.image_size,
                   snippet=model.frames_per_step)
    times: dict[bool, list[float]] = {True: [], False: []}
    for cache in (True, False):  # warm-up
        step_times(model, ds, cache, 2, work / "warm")
    for r in range(repeats):
        for cache in ((True, False) if r % 2 == 0 else (False, True)):  # alternate, so drift cancels
            times[cache] += step_times(model, ds, cache, epochs, work / "run")
    cached, uncached = statistics.median(times[True]), statistics.median(times[False])
    decode, vision = [], []  # what the cache saves per step, measured apart: decoding and the tower
    for clip in ds.clips * 2:
        t0 = time.perf_counter()
        pixels = ds.frames(clip).unsqueeze(0)
        t1 = time.perf_counter()
        with torch.no_grad():
            model.encode_video(pixels)
        decode.append(t1 - t0)
        vision.append(time.perf_counter() - t1)
    v = cfg.vision.config
    return {
        "config": name, "frames": frames, "image_size": v["image_size"], "vision_width": v["hidden_size"],
        "vision_blocks": v["num_hidden_layers"], "vision_params_m": sum(p.numel() for p in model.vision.parameters()) / 1e6,
        "batch_size": 2, "steps_per_mode": len(times[True]),
        "cached_ms": cached * 1e3, "uncached_ms": uncached * 1e3, "ratio": uncached / cached,
        "decode_ms_per_step": 2 * statistics.median(decode) * 1e3, "vision_ms_per_step": 2 * statistics.median(vision) * 1e3,
    }


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["cached_ms"] for r in rows], 0.4, label="feature cache")
    ax.bar(x + 0.2, [r["uncached_ms"] for r in rows], 0.4, label="no cache")
    for i, r in enumerate(rows):
        ax.text(i + 0.2, r["uncached_ms"], f"×{r['ratio']:.2f}", ha="center", va="bottom")
    ax.set_xticks(x, [f"{r['config']}\n{r['vision_params_m']:.2f}M vision, T={r['frames']}" for r in rows])
    ax.set_ylim(0, 1.15 * max(r["uncached_ms"] for r in rows))
    ax.set_ylabel("median step time (ms)")
    ax.set_title("training step, stage 2, frozen vision (CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--configs", default="tiny,vit-s")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"device=cpu threads={torch.get_num_threads()} repeats={a.repeats} epochs={a.epochs}")
    print(f"{'config':<8} {'vision':>8} {'T':>3} {'cached ms':>10} {'uncached ms':>12} {'uncached/cached':>16}"
          f" {'decode ms':>10} {'tower ms':>9}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_clips(Path(tmp))
        for name in a.configs.split(","):
            r = bench(name, manifest, a.repeats, a.epochs, Path(tmp) / name)
            rows.append(r)
            print(f"{r['config']:<8} {r['vision_params_m']:7.2f}M {r['frames']:>3} {r['cached_ms']:10.1f} "
                  f"{r['uncached_ms']:12.1f} {r['ratio']:16.2f} {r['decode_ms_per_step']:10.1f} "
                  f"{r['vision_ms_per_step']:9.1f}")
    RESULTS.mkdir(exist_ok=True)
    meta = {"device": "cpu", "threads": torch.get_num_threads(), "repeats": a.repeats, "epochs": a.epochs,
            "torch": torch.__version__}
    (RESULTS / "train.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    plot(rows, RESULTS / "train.png")
    print(f"-> {RESULTS / 'train.json'}, {RESULTS / 'train.png'}")


if __name__ == "__main__":
    main()
