"""The training loop: one loop, two stages as recipes (paper §3.4, §4.1).

::

    for epoch:                                   # order fixed by (seed, epoch): resumable
      for batch of (clip, question, answer):
        features  = cache[clip] or vision(frames)    # frozen tower: computed once per clip
        loss      = L_LM + L_SPR + L_HAE              # Eq. 11 (model.forward)
        backward; clip grad; AdamW step (lr by group)
        β ← β·e^{k(T_s − R_s)}                       # Eq. 9, once per optimizer step
        log JSONL; checkpoint every N steps (atomic)

Runs on CPU and on one or many devices with ``torchrun --nproc_per_node N`` (gloo on CPU) or
``accelerate launch --multi_gpu``. Under DDP every global batch is sharded by process (rank r
takes samples r, r+N, ...; a rank left without one repeats the first), gradients are averaged
by DDP, R_s is summed over ranks before the β update and the logged losses are averaged, so all
ranks keep identical weights and β; only rank 0 writes the log, checkpoints, plot and summary.
A resumed DDP run restores rank 0's RNG state on every rank (bit-exact resume is a CPU,
single-process guarantee). ``mixed_precision: bf16`` autocasts the forward and keeps fp32
master weights; fp16 (GPU only) adds loss scaling; ``auto`` is bf16 where the hardware computes it
natively and fp32 elsewhere (:func:`autocast_dtype`).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from pvchat.data import QADataset
from pvchat.errors import InputError, PVChatError
from pvchat.io import recover_dir, write_json, write_text
from pvchat.model import subject_tokens
from pvchat.model.prompt import pad_batch
from pvchat.model.pvchat import PVChat
from pvchat.train.checkpoint import load_checkpoint, save_checkpoint
from pvchat.train.recipe import StageRecipe


class TrainingError(PVChatError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


class TrainingCancelled(PVChatError):
    """Training was cancelled between steps; a checkpoint of the last step is kept, so a resume continues."""


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    log: Path
    plot: Path | None


def parameter_groups(model: PVChat, recipe: StageRecipe, subjects: list[str]) -> list[dict[str, Any]]:
    """Freeze everything, then unfreeze what this stage trains, grouped by learning rate.

    * subject: the rows of the trained subjects' tokens, their query blocks and identity keys (lr 1e-4)
    * qformer: the Q-former (ReMoH routers included), projector, frame positions, vision norm (1e-5)
    * lora: the LLM's LoRA weights (1e-5); the whole LLM when the config has no adapter (lora_r 0)
    * vision: the last K vision blocks, stage 2 only (1e-5)
    Subjects not being trained (earlier concept packs) stay frozen.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    groups: dict[str, list[torch.nn.Parameter]] = {"subject": [], "qformer": [], "lora": [], "vision": []}
    ids = {n: model.subject_ids[n] for n in subjects}
    subject_tokens.set_subject_trainable(model.llm, ids, True)
    groups["subject"] += [p for p in subject_tokens.new_token_parameters(model.llm) if p.requires_grad]
    for name in subjects:
        groups["subject"] += model.qformer.subject_parameters(model.subjects.index(name))
    subject_block_ids = {id(p) for s in range(model.qformer.num_subjects) for p in model.qformer.subject_parameters(s)}
    groups["qformer"] += [p for p in model.qformer.parameters() if id(p) not in subject_block_ids]
    groups["qformer"] += [*model.projector.parameters(), *model.vision_norm.parameters(), model.frame_position]
    new_rows = {id(p) for p in subject_tokens.new_token_parameters(model.llm)}
    if model.config.llm.lora_r > 0:
        groups["lora"] += [p for n, p in model.llm.named_parameters() if "lora_" in n]
    else:  # no adapter (random-init LLM): every original weight trains in the LLM group
        groups["lora"] += [p for p in model.llm.parameters() if id(p) not in new_rows]
    if recipe.stage == 2 and recipe.train_last_k > 0:
        model.vision.set_trainable(recipe.train_last_k)
        groups["vision"] += [p for p in model.vision.parameters() if p.requires_grad]
    else:
        model.vision.set_trainable(0)
    lrs = {"subject": recipe.lr_subject, "qformer": recipe.lr_qformer, "lora": recipe.lr_lora, "vision": recipe.lr_vision}
    out = []
    for name, params in groups.items():
        for p in params:
            p.requires_grad_(True)
        if params:
            out.append({"name": name, "params": params, "lr": lrs[name]})
    return out


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def train(
    model: PVChat,
    dataset: QADataset,
    recipe: StageRecipe,
    out_dir: str | Path,
    subjects: list[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
    on_step: Callable[[int, int, dict[str, Any]], None] | None = None,
    cancel: Any | None = None,
    features: dict[Path, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``recipe``; logs, plot and checkpoints go to ``out_dir``.

    Args:
        model: the PVChat model (its subjects must include ``subjects``).
        dataset: the stage's samples.
        recipe: stage settings (epochs, learning rates, ...).
        out_dir: where ``log.jsonl``, ``checkpoint/`` and ``training.png`` are written.
        subjects: the people being learned (their tokens and queries train); default all.
        resume: continue from ``out_dir/checkpoint`` (bit-exact on CPU).
        progress: show a progress bar.
        stop_after_steps: stop (with a checkpoint) after this many steps in this call; for tests.
        on_step: called after every step as ``on_step(step, total, record)`` with the log record.
        cancel: a ``threading.Event`` (anything with ``is_set()``); once set, training checkpoints
            and raises :class:`TrainingCancelled` before the next step.
        features: frozen-tower features computed beforehand, clip path → (1, T, N, C) (e.g. by
            several processes, :func:`pvchat.train.pretrain.extract_features`); others are computed here.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    subjects = list(model.subjects if subjects is None else subjects)
    torch.manual_seed(recipe.seed)
    # mixed precision is applied here (autocast, fp32 master weights) rather than through
    # Accelerator(mixed_precision=...): Accelerate fixes that once per process, and the two stages of
    # one run may differ (paper.yaml: stage 1 fp32, stage 2 bf16)
    # a subject's query block takes part only in the samples that name it: unused on some ranks
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
    amp = autocast_dtype(recipe.mixed_precision, accelerator.device)
    if amp is torch.float16 and accelerator.device.type != "cuda":
        raise TrainingError("mixed_precision fp16 needs a GPU; use bf16 (or no) on CPU")
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)  # fp16 only; bf16 needs no scaling
    groups = parameter_groups(model, recipe, subjects)
    optimizer = torch.optim.AdamW(groups, weight_decay=recipe.weight_decay)
    for g in optimizer.param_groups:
        g["base_lr"] = g["lr"]
    log_path, ckpt = out_dir / "log.jsonl", out_dir / "checkpoint"

    epochs = recipe.num_epochs(len(subjects))
    batches_per_epoch = math.ceil(len(dataset) / recipe.batch_size)
    total = epochs * batches_per_epoch
    if recipe.max_steps is not None:
        total = min(total, recipe.max_steps)
    step, log_lines = 0, 0
    main = accelerator.is_main_process  # the only process that writes files (log, checkpoints, plot)
    if resume and main:
        recover_dir(ckpt)  # a kill while a checkpoint was being written
    accelerator.wait_for_everyone()
    if resume and (ckpt / "state.json").is_file():
        meta = load_checkpoint(ckpt, model, optimizer)
        step, log_lines = meta["step"], meta["log_lines"]
        if meta["recipe"] != recipe.to_dict():
            raise TrainingError(f"{ckpt}: the checkpoint was made with another recipe; start without --resume")
        if main:  # drop the steps after the checkpoint (and a line torn by a kill); they run again
            lines = log_path.read_text().splitlines()[:log_lines] if log_path.exists() else []
            write_text(log_path, "".join(line + "\n" for line in lines))
    elif main and log_path.exists():
        log_path.unlink()

    model, optimizer = accelerator.prepare(model, optimizer)
    core: PVChat = accelerator.unwrap_model(model)
    core.train()
    cache: dict[Path, torch.Tensor] = dict(features or {})
    frozen_vision = not any(p.requires_grad for p in core.vision.parameters())

    def features(clips: list[Path]) -> torch.Tensor:
        out = []
        for clip in clips:
            if clip not in cache:
                pixels = dataset.frames(clip).unsqueeze(0).to(accelerator.device)
                if frozen_vision and recipe.cache_features:
                    with torch.no_grad():
                        cache[clip] = core.encode_video(pixels).cpu()
                else:
                    out.append(core.encode_video(pixels))
                    continue
            out.append(cache[clip].to(accelerator.device))
        return torch.cat(out)

    saved_step = step  # the step of the newest checkpoint

    def checkpoint() -> None:
        nonlocal saved_step
        saved_step = step
        if main:
            save_checkpoint(ckpt, core, optimizer, {"step": step, "log_lines": log_lines, "recipe": recipe.to_dict()})

    t0, last_loss, done_here = time.perf_counter(), float("nan"), 0
    bar = tqdm(total=total, initial=step, desc=f"stage {recipe.stage}", disable=not progress or not accelerator.is_main_process)
    with open(log_path, "a") if main else contextlib.nullcontext() as log:
        while step < total:
            if cancel is not None and cancel.is_set():
                if saved_step != step:
                    checkpoint()
                bar.close()
                raise TrainingCancelled(f"cancelled at step {step}/{total} of stage {recipe.stage}; run again to resume")
            epoch, in_epoch = divmod(step, batches_per_epoch)
            batch_ids = _batches(len(dataset), recipe.batch_size, recipe.seed, epoch)[in_epoch]
            batch_ids = batch_ids[accelerator.process_index :: accelerator.num_processes] or batch_ids[:1]
            samples = [dataset[i] for i in batch_ids]
            enc = [core.prepare(s.question, answer=s.answer) for s in samples]
            batch = {k: v.to(accelerator.device) for k, v in pad_batch(enc, core.tokenizer.pad_token_id).items()}
            with torch.autocast(accelerator.device.type, dtype=amp, enabled=amp is not None):
                out = model(**batch, vision_features=features([s.clip for s in samples]))
            parts = torch.stack([out.loss, out.lm_loss, out.spr, out.hae, out.moh_balance]).detach().float()
            if accelerator.num_processes > 1:  # the whole batch's numbers, so every rank logs and stops alike
                parts = accelerator.reduce(parts, reduction="mean")
            if not torch.isfinite(parts[0]):
                raise TrainingError(f"non-finite loss at step {step}; the last good checkpoint is kept in {ckpt}")
            optimizer.zero_grad(set_to_none=True)
            for g in optimizer.param_groups:  # recipe.schedule
                g["lr"] = g["base_lr"] * recipe.lr_factor(step, total)
            accelerator.backward(scaler.scale(out.loss))
            if recipe.grad_clip:
                scaler.unscale_(optimizer)
                accelerator.clip_grad_norm_([p for g in groups for p in g["params"]], recipe.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if accelerator.num_processes > 1:
                core.sparsity.pool(lambda t: accelerator.reduce(t, reduction="sum"))
            core.sparsity_step()  # Eq. 9, once per optimizer step
            step, done_here, last_loss = step + 1, done_here + 1, float(parts[0])
            record = {
                "step": step, "epoch": epoch, "loss": last_loss, "lm": float(parts[1]), "spr": float(parts[2]),
                "hae": float(parts[3]), "moh_balance": float(parts[4]),
                "sparsity": [float(s.sparsity) for s in out.routing],
                "target": core.sparsity.target.tolist(),
                "beta": core.sparsity.beta.tolist(),
                "head_active": [[round(float(a), 4) for a in s.active_rate] for s in out.routing],
            }
            if main:
                log.write(json.dumps(record) + "\n")
                log.flush()
                if on_step is not None:
                    on_step(step, total, record)
            log_lines += 1
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}")
            stopping = stop_after_steps is not None and done_here >= stop_after_steps
            if step % recipe.checkpoint_every == 0 or step == total or stopping:
                checkpoint()
            if stopping:
                break
    bar.close()
    plot = plot_log(log_path, out_dir / "training.png") if step == total and accelerator.is_main_process else None
    if accelerator.is_main_process:
        write_json(out_dir / "summary.json", {"steps": step, "final_loss": last_loss, "recipe": recipe.to_dict(),
                                              "precision": str(amp or torch.float32).removeprefix("torch."),
                                              "subjects": subjects, "samples": len(dataset)})
    return TrainResult(step, last_loss, time.perf_counter() - t0, log_path, plot)


def autocast_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype a recipe's ``mixed_precision`` autocasts the forward to on ``device`` (None: fp32).

    ``auto`` is bf16 where the hardware computes it natively, fp32 elsewhere (emulated bf16 is slower
    than fp32): a CUDA GPU that supports bf16, or a CPU with AVX512-BF16 or AMX, where oneDNN runs
    bf16 matmuls at about twice the fp32 rate (the small preset's training step ×1.9 on 2 EPYC
    cores: bench/precision.py). The master weights stay fp32 either way."""
    if mixed_precision != "auto":
        return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        native = (getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                  or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
        return torch.bfloat16 if native else None
    return None


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a training log; a last line torn by a kill (no newline, not JSON) is skipped."""
    path = Path(path)
    text = path.read_text()
    lines = text.splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if n == len(lines) and not text.endswith("\n"):
                    break
                raise InputError(f"{path}:{n}: not a valid log record") from None
    return rows


def plot_log(log_path: Path, png: Path) -> Path | None:
    """Loss parts, sparsity against its target, β, and per-head activation over steps."""
    rows = read_log(log_path)
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(18, 3.6))
    ax = fig.subplots(1, 4)
    for key in ("loss", "lm", "spr", "hae"):
        ax[0].plot(steps, [r[key] for r in rows], label=key)
    ax[0].set_title("loss (Eq. 11)")
    ax[0].set_yscale("symlog", linthresh=1e-4)
    ax[0].legend()
    if rows[0]["sparsity"]:
        sp = np.array([r["sparsity"] for r in rows])
        ax[1].plot(steps, sp.mean(1), label="R_s (mean over modules)")
        ax[1].axhline(float(np.mean(rows[0]["target"])), ls="--", c="k", label="T_s")
        ax[1].set_ylim(-0.05, 1.05)
        ax[1].legend()
        ax[2].plot(steps, np.array([r["beta"] for r in rows]))
        ax[2].set_yscale("log")
        act = np.array([sum(r["head_active"], []) for r in rows])
        ax[3].imshow(act.T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax[3].set_ylabel("routed head (module-major)")
    ax[1].set_title("sparsity R_s vs target")
    ax[2].set_title("SPR coefficient β (Eq. 9)")
    ax[3].set_title("routed head activation rate")
    for a in ax:
        a.set_xlabel("step")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(png)
    return png
