"""The two-stage schedule (paper §3.4) over the one loop (``pvchat train``: :mod:`pvchat.commands.train`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch

from pvchat import recipes
from pvchat.data import QADataset, read_manifest
from pvchat.errors import InputError
from pvchat.io import load_tensors
from pvchat.model import subject_tokens
from pvchat.model.config import PVChatConfig
from pvchat.model.presets import get_preset
from pvchat.model.pvchat import CONFIG_NAME, PVChat
from pvchat.qa.self_caption import self_caption
from pvchat.train.alignment import apply_alignment
from pvchat.train.loop import TrainResult, train
from pvchat.train.recipe import StageRecipe, load_train_recipe


def recipe_path(recipe: str | Path) -> Path:
    """A training recipe's file: by name (``pvchat/recipes/train/NAME.yaml``) or by path."""
    return recipes.path("train", recipe)


def stage_recipes(recipe: str | Path) -> tuple[StageRecipe, StageRecipe]:
    """The two stages of a training recipe (by name or YAML path)."""
    loaded = load_train_recipe(recipe)
    return loaded.stage1, loaded.stage2


ConfigFn = Callable[[PVChatConfig], None]  # changes a preset's config in place (an ablation's variant)


def base_model(preset: str, seed: int = 0, configure: ConfigFn | None = None) -> PVChat:
    """PVChat built from ``preset`` with ``seed`` and no subjects, in memory.

    ``configure`` changes the preset's config before the model is built (an ablation's variant:
    :mod:`pvchat.eval.ablate`). Such a model starts from ``seed`` alone: the preset's shipped
    alignment was trained for the preset's own config (a changed one may not even fit it), so it is
    not applied, and the config names no preset (``preset`` None), so :func:`with_subjects` draws
    the people from ``seed`` too. Without ``configure``, a preset aligned once on the offline world
    (``pvchat pretrain``) starts from that alignment.
    """
    torch.manual_seed(seed)
    cfg = get_preset(preset)
    cfg.subjects = []
    if configure is not None:
        configure(cfg)
        cfg.preset = None  # no longer the preset's config: neither its alignment nor its people's start
    model = PVChat.from_config(cfg)
    aligned = shipped_alignment(preset) if configure is None else None
    if aligned is not None:
        apply_alignment(model, aligned)
    return model


def build_base(directory: Path, preset: str, seed: int = 0) -> Path:
    """A base model: :func:`base_model` of ``preset`` with ``seed``, saved once in ``directory``.

    Every person is learned from the same base and adds its own subject after loading, so concept
    packs learned separately fit one base. Returns ``directory``.
    """
    directory = Path(directory)
    if (directory / CONFIG_NAME).is_file():
        return directory
    model = base_model(preset, seed)
    try:
        model.save_pretrained(directory, overwrite=False)
    except (InputError, OSError):  # another process saved the same base first
        if not (directory / CONFIG_NAME).is_file():
            raise
    return directory


ASSETS = "assets"  # pvchat/assets/<preset>_alignment.safetensors: what `pvchat pretrain` trained, shipped


def shipped_alignment(preset: str) -> dict[str, torch.Tensor] | None:
    """The alignment weights shipped for ``preset`` (None when the preset has none)."""
    path = resources.files("pvchat") / ASSETS / f"{preset}_alignment.safetensors"
    return load_tensors(Path(str(path))) if path.is_file() else None


def with_subjects(base: Path | PVChat, subjects: list[str], seed: int = 0, faces: dict | None = None) -> PVChat:
    """Load a saved model (or take ``base``, a model in memory) and add the subjects it lacks: their rows and query blocks start from the
    base's aligned people (the mean row and block, plus noise drawn from ``seed``) when the preset
    has an alignment, else are drawn from ``seed``. ``faces`` (name → the reference's mean face
    embedding, ``faces.analysis_dir.load_embedding``) starts the identity keys of models that have them."""
    model = base if isinstance(base, PVChat) else PVChat.from_pretrained(base)
    torch.manual_seed(seed)
    init = shipped_alignment(model.config.preset) if model.config.preset else None
    for name in subjects:
        if name not in model.subject_ids:
            model.add_subject(name)
            if init is not None and "subject_init.queries" in init:
                init_subject(model, name, init)
            if faces and name in faces:
                model.set_identity(name, faces[name])
    return model


@torch.no_grad()
def init_subject(model: PVChat, name: str, init: dict[str, torch.Tensor]) -> None:
    """Start ``name``'s query block and token rows at the aligned people's mean (+ small noise)."""
    block = model.qformer.subject_queries[model.subjects.index(name)]
    block.copy_(init["subject_init.queries"] + 0.02 * torch.randn_like(block))
    rows = subject_tokens.subject_token_state(model.llm, {name: model.subject_ids[name]})
    for key in rows:
        side = key.split(".", 1)[0]
        if f"subject_init.{side}" in init:
            rows[key] = init[f"subject_init.{side}"] + 0.01 * torch.randn_like(rows[key])
    subject_tokens.load_subject_token_state(model.llm, {name: model.subject_ids[name]}, rows)


def learn_stages(model: PVChat, manifest: Path, out: Path, recipe: str | Path = "demo",
                 subjects: list[str] | None = None, resume: bool = False,
                 progress: bool = True, on_step: Callable[[str, int, int, dict[str, Any]], None] | None = None,
                 cancel: Any | None = None) -> tuple[TrainResult, TrainResult]:
    """Stage 1 (first frames; existence + appearance) then stage 2 (T frames; all types).

    ``on_step(stage, step, total, record)`` follows every step ("stage1" or "stage2"); ``cancel``
    (a ``threading.Event``) stops before the next step with a checkpoint (see :func:`train`).
    """
    loaded = load_train_recipe(recipe)
    r1, r2 = loaded.stage1, loaded.stage2
    size = model.vision.image_size
    features = None
    if loaded.captioner == "base":
        # the base describes the positives in its own words (qa/self_caption.py)

        manifest, features = self_caption(model, manifest, subjects or model.subjects, progress=progress)

    def hook(stage: str):
        return None if on_step is None else (lambda step, total, record: on_step(stage, step, total, record))

    records = read_manifest(manifest)
    ds1 = QADataset(records, stage=1, image_size=size, root=manifest.parent, snippet=model.frames_per_step)
    res1 = train(model, ds1, r1, out / "stage1", subjects=subjects, resume=resume, progress=progress,
                 on_step=hook("stage1"), cancel=cancel)
    ds2 = QADataset(records, stage=2, num_frames=min(r2.num_frames, model.config.max_frames), image_size=size,
                    root=manifest.parent, snippet=model.frames_per_step)
    res2 = train(model, ds2, r2, out / "stage2", subjects=subjects, resume=resume, progress=progress,
                 on_step=hook("stage2"), cancel=cancel,
                 features=features if ds2.num_frames == model.config.num_frames else None)
    return res1, res2
