"""One personalisation step at real sizes on a CUDA GPU: step time and peak memory, random weights.

    python bench/gpu.py [--steps 3] [--frames 8] [--families qwen2_5_vl,instructblipvideo]
    python bench/gpu.py --size tiny --device cpu --steps 1     # the same code path on CPU, tiny models

Bases, built at random from their config classes on the device (nothing is downloaded):

* ``qwen2_5_vl``: Qwen2.5-VL-7B-Instruct's sizes (model/backbones/qwen_vl.py ``real_config``),
  8 frames of 448×448 (4 temporal patches of 32×32 → 1024 video tokens);
* ``instructblipvideo``: InternVideo2-Chat-8B's sizes in InstructBLIP-Video's shape
  (model/backbones/instructblip_video.py ``real_config``: a 1B ViT of 39 blocks at 1408 wide, a
  BERT-base Q-former with 96 queries + 16 per person, Mistral-7B), 8 frames of 224×224.

Each: bf16 weights, gradient checkpointing (non-reentrant), LoRA r16 on the LLM, ReMoH routers,
one person; one sample per step (question + answer), AdamW over the paper's groups. One warm-up
step, then ``--steps`` timed steps (CUDA synchronised); the peak is ``max_memory_allocated`` over
the timed steps. Prints a table and writes bench/results/gpu.json. Without CUDA it says so and
exits 0, measuring nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
QUESTION, ANSWER = "Is <Ann> in this video?", "Yes, <Ann> is on the left, wearing a red coat and waving."


def build(family: str, size: str, device: str, frames: int, workdir: Path):
    """A random base of ``family`` on ``device`` wrapped for personalisation, and one encoded sample."""
    from transformers import InstructBlipVideoForConditionalGeneration, Qwen2_5_VLForConditionalGeneration

    from pvchat.model.backbones import BackboneConfig, instructblip_video, qwen_vl

    if family == "qwen2_5_vl":
        cfg = qwen_vl.real_config() if size == "real" else qwen_vl.tiny_config()
        side = 448 if size == "real" else 56
        qwen_vl.write_processing(workdir, cfg, frame_pixels=side * side)
        model_cls, adapter = Qwen2_5_VLForConditionalGeneration, qwen_vl.QwenVL
    elif family == "instructblipvideo":
        cfg = instructblip_video.real_config() if size == "real" else instructblip_video.tiny_config()
        side = 224 if size == "real" else 32
        instructblip_video.write_processing(workdir, cfg, frame_size=side)
        model_cls, adapter = InstructBlipVideoForConditionalGeneration, instructblip_video.InstructBlipVideo
    else:
        raise SystemExit(f"unknown family {family!r}; choose qwen2_5_vl or instructblipvideo")
    cfg.save_pretrained(workdir)  # config.json: what the adapter hashes
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        hf = model_cls._from_config(cfg, dtype=dtype)
    hf.activation_checkpointing_enable({"use_reentrant": False})  # transformers 5: gradient checkpointing
    settings = BackboneConfig(num_frames=frames, **({} if size == "real" else {"detail_tokens": 2, "subject_queries": 2}))
    model = adapter.wrap(hf, workdir, settings).to(device)
    model.add_person("Ann")
    clip = np.random.default_rng(0).integers(0, 256, (frames, side, side, 3), dtype=np.uint8)
    return model, model.encode(clip, QUESTION, ANSWER)


def measure(family: str, size: str, device: str, frames: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        model, batch = build(family, size, device, frames, Path(d))
        groups = model.parameter_groups(["Ann"], 1e-4, 1e-5, 1e-5)
        optimizer = torch.optim.AdamW([{k: g[k] for k in ("params", "lr")} for g in groups])
        model.train()
        model.hf.eval()  # no dropout in the frozen base

        def step() -> float:
            optimizer.zero_grad(set_to_none=True)
            loss = model(batch).loss
            loss.backward()
            optimizer.step()
            model.sparsity.step()
            return float(loss.detach())

        def sync() -> None:
            if device == "cuda":
                torch.cuda.synchronize()

        step()  # warm-up (allocator, kernels)
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            loss = step()
            sync()
            times.append(time.perf_counter() - t0)
        out = {
            "family": family, "size": size, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "frames": frames, "tokens": int(batch["input_ids"].shape[1]),
            "params": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for g in groups for p in g["params"]),
            "step_s": statistics.median(times), "steps_per_s": 1.0 / statistics.median(times), "loss": loss,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        }
    return out


def measure_freed(family: str, size: str, device: str, frames: int, steps: int) -> dict:
    """:func:`measure`, then its model and optimizer freed before the next family is built."""
    out = measure(family, size, device, frames, steps)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="qwen2_5_vl,instructblipvideo")
    ap.add_argument("--size", choices=("real", "tiny"), default="real")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: skipped (nothing measured)")
        return 0
    rows = [measure_freed(f, args.size, args.device, args.frames, args.steps) for f in args.families.split(",")]
    print(f"{'family':<18} {'params':>8} {'trainable':>10} {'tokens':>7} {'step s':>7} {'steps/s':>8} {'peak GiB':>9}")
    for r in rows:
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        print(f"{r['family']:<18} {r['params'] / 1e9:>7.2f}B {r['trainable'] / 1e6:>9.1f}M {r['tokens']:>7} "
              f"{r['step_s']:>7.2f} {r['steps_per_s']:>8.2f} {peak:>9}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
