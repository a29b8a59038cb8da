"""Training recipes: the two stages of paper §3.4 are two settings of the same loop.

A :class:`TrainRecipe` holds both stages (:class:`StageRecipe` sections) and what ``pvchat learn``
makes the data with; the shipped ones are ``pvchat/recipes/train/NAME.yaml``, read by the one
recipe loader (:mod:`pvchat.recipes`: unknown keys are an error that lists the valid ones).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from pvchat import recipes
from pvchat.errors import ConfigError

PRECISIONS = ("no", "bf16", "fp16", "auto")

# paper supp.: 8 epochs in all for one person, 16 for two, 24 for three; stage 1 is one of them
STAGE2_EPOCHS = {1: 7, 2: 15, 3: 23}


@dataclass
class StageRecipe:
    """One training stage.

    Learning rates as paper §4.1: subject tokens and subject queries 1e-4, Q-former / ReMoH 1e-5
    (here also the projector and frame positions), LoRA 1e-5; AdamW, batch 2.
    """

    stage: int = 2
    epochs: int | None = None  # None: STAGE2_EPOCHS by number of people for stage 2, 1 for stage 1
    batch_size: int = 2
    num_frames: int = 8  # stage 2; stage 1 reads the first frame only
    lr_subject: float = 1e-4
    lr_qformer: float = 1e-5
    lr_lora: float = 1e-5
    lr_vision: float = 1e-5
    weight_decay: float = 0.01
    train_last_k: int = 0  # stage 2 unfreezes the last K vision blocks
    grad_clip: float = 1.0
    max_steps: int | None = None
    seed: int = 0
    checkpoint_every: int = 50
    cache_features: bool = True  # frozen vision features computed once per clip
    mixed_precision: str = "no"  # autocast, fp32 master weights: "bf16", "fp16" (GPU), "auto" (autocast_dtype)
    schedule: str = "constant"  # learning rates: "constant", or "cosine" from lr down to lr/10 over the stage

    def __post_init__(self):
        # YAML 1.1 reads "1e-4" (no dot) as a string: accept numbers written that way, reject the rest
        for name in ("lr_subject", "lr_qformer", "lr_lora", "lr_vision", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            try:
                setattr(self, name, float(value))
            except (TypeError, ValueError):
                raise ConfigError(f"recipe field {name} must be a number, got {value!r}") from None
        for name in ("stage", "batch_size", "num_frames", "train_last_k", "seed", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ConfigError(f"recipe field {name} must be an integer, got {getattr(self, name)!r}")
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(f"mixed_precision must be one of: {', '.join(PRECISIONS)}; got {self.mixed_precision!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"schedule must be one of: constant, cosine; got {self.schedule!r}")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be ≥ 1")

    def num_epochs(self, num_people: int) -> int:
        if self.epochs is not None:
            return self.epochs
        return 1 if self.stage == 1 else STAGE2_EPOCHS.get(num_people, 8 * num_people - 1)

    def lr_factor(self, step: int, total: int) -> float:
        """The multiplier on every group's learning rate at ``step`` of ``total`` (a function of the
        step alone, so a resumed run follows the same schedule)."""
        if self.schedule == "constant" or total <= 1:
            return 1.0
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def stage1(**overrides: Any) -> StageRecipe:
    """Stage 1: first frames, existence + appearance, vision frozen, one epoch."""
    return StageRecipe(**{"stage": 1, "epochs": 1, **overrides})


def stage2(**overrides: Any) -> StageRecipe:
    """Stage 2: 8 frames, all four types, last K vision blocks trainable."""
    return StageRecipe(**{"stage": 2, **overrides})


@dataclass
class TrainRecipe:
    """A training recipe (``pvchat/recipes/train/NAME.yaml``): the two stages and the data."""

    stage1: StageRecipe = field(default_factory=stage1)
    stage2: StageRecipe = field(default_factory=stage2)
    synthesize: str | None = None  # synthesis recipe of pvchat learn (None: the one named like this recipe, else demo)
    captioner: str | None = None  # "base": the base describes the positives in its own words (qa/self_caption.py)
    compose_clips: int | None = None  # clips of people learned together (None: pvchat.learn.COMPOSED_CLIPS)
    pair_clips: int = 0  # one person: clips more of two people, the person beside a stranger or two strangers

    def __post_init__(self) -> None:
        for name, stage in (("stage1", 1), ("stage2", 2)):
            if not isinstance(getattr(self, name), StageRecipe):
                raise ConfigError(f"{name} must be a StageRecipe, got {type(getattr(self, name)).__name__}")
            if getattr(self, name).stage != stage:
                raise ConfigError(f"{name}.stage must be {stage}, got {getattr(self, name).stage}")
        if self.synthesize is not None and not isinstance(self.synthesize, str):
            raise ConfigError(f"synthesize must be a synthesis recipe's name or YAML path, got {self.synthesize!r}")
        if self.captioner not in (None, "base"):
            raise ConfigError(f"captioner must be base or left out, got {self.captioner!r}")
        if self.compose_clips is not None and (not isinstance(self.compose_clips, int)
                                               or isinstance(self.compose_clips, bool) or self.compose_clips < 1):
            raise ConfigError(f"compose_clips must be an integer >= 1, got {self.compose_clips!r}")
        if not isinstance(self.pair_clips, int) or isinstance(self.pair_clips, bool) or self.pair_clips < 0:
            raise ConfigError(f"pair_clips must be an integer >= 0, got {self.pair_clips!r}")


def load_train_recipe(recipe: str | os.PathLike | TrainRecipe) -> TrainRecipe:
    """A training recipe by name (``pvchat/recipes/train/NAME.yaml``), by YAML path, or as given."""
    return recipes.load("train", recipe, TrainRecipe)


def load_recipes(path: str | os.PathLike) -> dict[str, Any]:
    """A training recipe's fields as a dict (``stage1``/``stage2``: StageRecipe), the ones left unset out."""
    r = load_train_recipe(path)
    return {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if getattr(r, f.name) is not None}
