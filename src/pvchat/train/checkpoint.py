"""Training checkpoints: everything needed to resume bit-exactly, in safetensors + JSON.

A checkpoint directory holds ``state.safetensors`` (trainable parameters, AdamW moments and
steps, SPR β, the torch RNG state) and ``state.json`` (position in the data, recipe, log
length). It is written to a temporary directory and renamed, so a kill at any moment leaves the
previous checkpoint whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pvchat.errors import InputError
from pvchat.io import atomic_dir, load_tensors, read_json, save_tensors, write_json

STATE = "state.safetensors"
META = "state.json"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    tensors = {f"param/{n}": t for n, t in trainable_state(model).items()}
    tensors.update({f"buffer/{n}": b for n, b in model.named_buffers() if n.endswith("sparsity.beta")})
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{key}"] = value
    tensors["rng/torch"] = torch.get_rng_state()
    with atomic_dir(directory, overwrite=True) as tmp:
        save_tensors(tmp / STATE, tensors)
        write_json(tmp / META, meta)


def load_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore a checkpoint into ``model`` and ``optimizer``; returns its metadata."""
    if not (directory / STATE).is_file() or not (directory / META).is_file():
        raise InputError(f"{directory}: no complete checkpoint to resume from")
    tensors = load_tensors(directory / STATE)
    meta = read_json(directory / META)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for key, value in tensors.items():
            kind, _, name = key.partition("/")
            if kind == "param":
                if name not in params or params[name].shape != value.shape:
                    raise InputError(f"{directory}: checkpoint parameter {name} does not fit this model")
                params[name].copy_(value)
            elif kind == "buffer":
                buffers[name].copy_(value)
    opt = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/")
            state.setdefault(int(idx), {})[name] = value
    opt["state"] = state
    optimizer.load_state_dict(opt)
    torch.set_rng_state(tensors["rng/torch"])
    return meta
