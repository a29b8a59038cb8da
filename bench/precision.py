"""The small preset's training step in fp32 and under bf16 autocast (``mixed_precision``), on this CPU.

    python bench/precision.py [--repeats 3] [--epochs 4]

The real loop (:func:`pvchat.train.loop.train`, stage 2 as recipe ``small`` runs it: batch 8, 8
steps of 2-frame snippets) on the aligned small base with one person added, over 8 synthetic clips.
Both modes run alternately in one process from the same weights (restored before every run), so
drift cancels and the first step of each run sees the same batch: its loss under bf16 is compared
with fp32's. A step's time is the gap between two ``on_step`` calls after the first epoch (which
fills the feature cache); the median over all repeats is reported with the ratio fp32 / bf16, and
what ``mixed_precision: auto`` picks here. Writes bench/results/precision.json and precision.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pvchat.data import QADataset
from pvchat.train.loop import autocast_dtype, read_log, train
from pvchat.train.recipe import stage2
from pvchat.train.stages import base_model, with_subjects
from train import make_clips  # bench/train.py: noisy single-colour clips and their manifest

RESULTS = Path(__file__).parent / "results"


def run(model, state: dict, ds: QADataset, precision: str, epochs: int, out: Path) -> tuple[list[float], float]:
    """(seconds per step after the first epoch, the first step's loss) of one call of the real loop."""
    model.load_state_dict(state)
    stamps: list[float] = []
    recipe = stage2(epochs=epochs, batch_size=8, num_frames=ds.num_frames, mixed_precision=precision,
                    checkpoint_every=10**9, lr_subject=1e-3, lr_qformer=1e-5, lr_lora=1e-5)
    r = train(model, ds, recipe, out, progress=False, on_step=lambda *_: stamps.append(time.perf_counter()))
    per_epoch = len(stamps) // epochs
    return [b - a for a, b in zip(stamps[per_epoch - 1:], stamps[per_epoch:])], read_log(r.log)[0]["loss"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    a = p.parse_args()
    model = with_subjects(base_model("small"), ["sks"])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = ("no", "bf16")
    times: dict[str, list[float]] = {m: [] for m in modes}
    losses: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        ds = QADataset(make_clips(Path(tmp)), stage=2, num_frames=8, image_size=model.vision.image_size,
                       snippet=model.frames_per_step)
        for m in modes:  # warm-up: one epoch each
            run(model, state, ds, m, 1, Path(tmp) / "warm")
        for r in range(a.repeats):
            for m in (modes if r % 2 == 0 else modes[::-1]):  # alternate, so drift cancels
                steps, first = run(model, state, ds, m, a.epochs, Path(tmp) / "run")
                times[m] += steps
                losses[m].append(first)
    fp32, bf16 = statistics.median(times["no"]), statistics.median(times["bf16"])
    auto = autocast_dtype("auto", torch.device("cpu"))
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": a.repeats,
           "steps_per_mode": len(times["no"]), "batch_size": 8, "frames": 8,
           "fp32_s_per_step": round(fp32, 3), "bf16_s_per_step": round(bf16, 3), "ratio_fp32_over_bf16": round(fp32 / bf16, 2),
           "first_loss_fp32": round(losses["no"][0], 4), "first_loss_bf16": round(losses["bf16"][0], 4),
           "auto_picks": str(auto or torch.float32).removeprefix("torch.")}
    print(json.dumps(out, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "precision.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(out, RESULTS / "precision.png")


def plot(out: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    vals = [out["fp32_s_per_step"], out["bf16_s_per_step"]]
    ax.bar(["fp32", "bf16 autocast"], vals, color=["tab:grey", "tab:blue"])
    ax.text(1, vals[1], f"×{out['ratio_fp32_over_bf16']:.2f}", ha="center", va="bottom")
    ax.set_ylabel("median s per training step")
    ax.set_title(f"small preset, batch 8, CPU ({out['threads']} threads)", fontsize=9)
    ax.set_ylim(0, 1.15 * max(vals))
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
