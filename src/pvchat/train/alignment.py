"""The aligned parts of a base: what alignment (:func:`pvchat.train.pretrain.align_base`) trains
and a base ships (``alignment.safetensors``), and loading them into a model of the same preset
(:func:`pvchat.train.stages.base_model` does, for a preset with shipped alignment weights).

Kept apart from :mod:`pvchat.train.pretrain`, which renders the offline world to align on: a
model that loads alignment weights needs none of it.
"""

from __future__ import annotations

import torch

from pvchat.errors import InputError
from pvchat.model.pvchat import PVChat
from pvchat.model.qformer import SUBJECT_PARAMETERS
from pvchat.model.subject_tokens import subject_token_state

# the trained body reader (model/body_reader.py) sits in the frozen tower and ships with the rest, as
# does the attribute readout (model/readout.py)
ALIGNED_PARTS = ("qformer.", "projector.", "vision_norm.", "frame_position", "sparsity.", "vision.reader.",
                 "readout.")


def _aligned(key: str) -> bool:
    """A state-dict key alignment ships: the shared parts and LoRA, never one person's own tensors."""
    shared = key.startswith(ALIGNED_PARTS) and not any(m in key for m in SUBJECT_PARAMETERS)
    return shared or "lora_" in key


def alignment_state(model: PVChat) -> dict[str, torch.Tensor]:
    """What alignment trains and a base ships: the Q-former (not its subject blocks), projector, frame
    positions, vision norm, SPR buffers, the body reader (when the tower has one) and the LoRA
    weights, plus the mean subject query block and token row (``subject_init.*``), from which a new
    person starts."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if _aligned(k)}
    if model.subjects:
        state["subject_init.queries"] = torch.stack([q.detach() for q in model.qformer.subject_queries]).mean(0)
        rows = subject_token_state(model.llm, model.subject_ids)
        for side in ("input", "output"):
            got = [v for k, v in rows.items() if k.startswith(side + ".")]
            if got:
                state[f"subject_init.{side}"] = torch.stack(got).mean(0)
    return {k: v.contiguous() for k, v in state.items()}


def apply_alignment(model: PVChat, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`alignment_state` output into a model of the same preset (its people untouched)."""
    own = model.state_dict()
    parts = {k: v for k, v in state.items() if not k.startswith("subject_init.")}
    bad = sorted(k for k, v in parts.items() if k not in own or own[k].shape != v.shape)
    missing = sorted(k for k in own if _aligned(k) and k not in parts)
    if bad or missing:
        raise InputError(f"the alignment weights do not fit this model (unexpected or misshapen {bad[:3]}, "
                         f"missing {missing[:3]})")
    model.load_state_dict(parts, strict=False)
