"""The names pvchat's registries accept, for the command line's ``--help``.

The registries themselves live next to what they build (presets with the model, generator
backends with the synthesis, ...), which imports torch, cv2 or transformers. ``pvchat --help``
must not pay for that, so the names are also written here, with nothing but the standard library
imported; ``tests/test_cli.py`` checks that each tuple equals its registry. A new preset, backend
or study is added to its registry and here; recipes are listed from their shipped YAML files
(:func:`pvchat.recipes.names`, standard library only), so a new recipe is just a new file.
Registries that name what they build lazily ("module:attr", imported when chosen) resolve it
with :func:`load_target`.
"""

from __future__ import annotations

import importlib
from typing import Any

from pvchat import recipes


def load_target(target: str) -> Any:
    """``"package.module:attr"`` → that attribute, importing the module now."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)

# pvchat.model.presets.PRESETS
PRESETS = ("demo", "face", "paper", "small", "tiny")
# the preset `pvchat demo`, `learn`, `serve` and pvchat.api.learn use when none is given (README, Status)
PRESET = "small"
# pvchat.synth.base.GENERATORS: positive-clip generators of `pvchat synthesize`
GENERATORS = ("classic", "consisid", "liveportrait", "personalvideo", "photomaker")
# pvchat.synth.pipeline.SYNTH_RECIPES (pvchat/recipes/synth/*.yaml): how much data `pvchat synthesize` makes
SYNTH_RECIPES = recipes.names("synth")
# pvchat.qa.generate.RECIPES (pvchat/recipes/qa/*.yaml): how many questions per clip
QA_RECIPES = recipes.names("qa")
# pvchat.eval.ablate.STUDIES, in the paper's order (Tables 2, 3, 4, supp. Table 1)
STUDIES = ("attention", "losses", "data", "queries")
# the stages of the learn pipeline (pvchat.learn), as progress reports name them (the web app's queue too)
STAGES = ("analyze", "synthesize", "stage1", "stage2", "pack")
# pvchat.faces.demographics.BACKENDS (vlm also as vlm:DIR)
DEMOGRAPHICS = ("none", "given", "vlm")
# pvchat.faces.demographics.GENDERS and AGES
GENDERS = ("male", "female")
AGES = ("young", "middle-aged", "elderly")


def train_recipes() -> tuple[str, ...]:
    """The training recipes shipped in ``pvchat/recipes/train`` (``NAME.yaml``), by name (what
    :func:`pvchat.train.stages.recipe_path` accepts besides a YAML path)."""
    return recipes.names("train")


def default_recipe(preset: str, quick: bool = False) -> str:
    """The training recipe a preset learns with when none is given: the one of the same name (else
    ``demo``); with ``quick``, its quick one where it has one (``small-quick``: less data, fewer epochs)."""
    own = preset if preset in train_recipes() else "demo"
    return f"{own}-quick" if quick and f"{own}-quick" in train_recipes() else own
