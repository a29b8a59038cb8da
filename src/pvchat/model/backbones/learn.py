"""Two-stage personalisation of a base (paper §3.4) over the same manifest the presets train on.

Stage 1: the first frame of each clip, existence and appearance questions; stage 2: T frames, all
question types, and the last ``train_last_k`` vision blocks train. Each stage is a
:class:`~pvchat.train.recipe.StageRecipe` (epochs, batch size, learning rates per group, gradient
clipping, max steps); β of Eq. 9 moves once per optimizer step. One sample per forward (the
families' token counts differ per clip); a batch accumulates them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pvchat.data import QADataset
from pvchat.errors import InputError
from pvchat.model.backbones.base import PersonalVLM
from pvchat.train.recipe import StageRecipe
from pvchat.video import read_first_frame, read_frames_uniform


def learn(model: PersonalVLM, manifest: Path, names: list[str], stages: tuple[StageRecipe, StageRecipe],
          on_step: Callable[[str, int, int, dict], None] | None = None) -> dict[str, dict]:
    """Train ``names`` (already added with ``model.add_person``) on ``manifest``; returns per-stage metrics."""
    missing = [n for n in names if n not in model.people]
    if missing:
        raise InputError(f"add {', '.join(missing)} to the model before learning them")
    metrics = {}
    for recipe in stages:
        stage = f"stage{recipe.stage}"
        data = QADataset(Path(manifest), stage=recipe.stage)
        # the frames of every clip, read once: stage 1 the first frame, stage 2 T uniform frames
        frames: dict[Path, np.ndarray] = {
            clip: read_first_frame(clip)[None] if recipe.stage == 1 else read_frames_uniform(clip, recipe.num_frames)
            for clip in data.clips}

        groups = model.parameter_groups(names, recipe.lr_subject, recipe.lr_qformer, recipe.lr_lora,
                                        recipe.train_last_k if recipe.stage == 2 else 0, recipe.lr_vision)
        params = [p for g in groups for p in g["params"]]
        optimizer = torch.optim.AdamW([{k: g[k] for k in ("params", "lr")} for g in groups],
                                      weight_decay=recipe.weight_decay)
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        order = list(range(len(data)))
        epochs = recipe.num_epochs(len(names))
        total = -(-len(order) // recipe.batch_size) * epochs
        if recipe.max_steps is not None:
            total = min(total, recipe.max_steps)
        rng = random.Random(recipe.seed)
        step, first, last = 0, None, None
        model.train()
        model.hf.eval()  # dropout off in the frozen base; LoRA dropout follows its own flag
        while step < total:
            rng.shuffle(order)
            for start in range(0, len(order), recipe.batch_size):
                if step >= total:
                    break
                chunk = [data[i] for i in order[start : start + recipe.batch_size]]
                for g, lr in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = lr * recipe.lr_factor(step, total)
                optimizer.zero_grad(set_to_none=True)
                record = {"loss": 0.0, "lm": 0.0, "spr": 0.0, "hae": 0.0}
                for s in chunk:
                    out = model(model.encode(frames[s.clip], s.question, s.answer))
                    (out.loss / len(chunk)).backward()
                    for k, v in (("loss", out.loss), ("lm", out.lm_loss), ("spr", out.spr), ("hae", out.hae)):
                        record[k] += float(v.detach()) / len(chunk)
                torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
                optimizer.step()
                model.sparsity.step()  # Eq. 9, once per optimizer step
                step += 1
                first = record if first is None else first
                last = record
                if on_step is not None:
                    on_step(stage, step, total, record)
        model.eval()
        metrics[stage] = {"steps": step, "first_loss": first["loss"], "loss": last["loss"], "lm": last["lm"]}
    return metrics
