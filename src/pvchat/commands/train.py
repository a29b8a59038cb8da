"""``pvchat train``: the two stages on a synthesized data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pvchat.choices import PRESETS, train_recipes
from pvchat.commands import OneOf
from pvchat.errors import InputError


def train(data: Path, out: Path, preset: Annotated[str, OneOf(PRESETS)] = "tiny",
          recipe: Annotated[str, OneOf(train_recipes(), "a YAML path")] = "demo", resume: bool = False,
          home: Path | None = None, base: Path | None = None) -> int:
    """Train PVChat on a synthesized data set: stage 1 on first frames, then stage 2 on clips.

    Starts from the preset's base in the workspace (HOME/base/PRESET, built once, the one learn
    uses); writes OUT/stage1 and OUT/stage2 (log.jsonl, training.png, checkpoint/) and OUT/model
    (the trained model). With --resume, a run that was stopped at any point continues where its
    last checkpoint left it. With --base, the people are learned on that video LLM instead and
    OUT/pack is their concept pack (no checkpoints yet: --resume is refused).

    Args:
        data: the directory written by 'pvchat synthesize' (holds manifest.jsonl).
        out: the run directory.
        preset: model preset.
        recipe: training recipe.
        resume: continue a stopped run in OUT.
        home: the workspace whose base model training starts from (default: $PVCHAT_HOME or ./workspace).
        base: a local Hugging Face video LLM directory to personalise instead of the preset's model
            (families: instructblipvideo, llava_onevision, qwen2_vl, qwen2_5_vl, qwen3_vl, smolvlm).

    Also runs as N processes (``torchrun --nproc_per_node N -m pvchat.cli train ...``): rank 0
    builds the base (when missing) and writes every file; the others load the base and train their shards.
    """
    # lazy, so that `pvchat --help` stays fast: torch, accelerate, transformers (the model and its training)
    import torch
    from accelerate import PartialState

    from pvchat import learn as pipeline
    from pvchat.data import read_manifest
    from pvchat.train.stages import stage_recipes
    from pvchat.workspace import DEFAULT_HOME, base_dir

    manifest = Path(data) / "manifest.jsonl"
    people = sorted({p for r in read_manifest(manifest) for p in r.people})
    if not people:
        raise InputError(f"{manifest}: no clip lists a subject; nothing to learn")
    if Path(out).exists() and not resume and any(Path(out).iterdir()):
        raise InputError(f"{out} is not empty; pass --resume to continue that run or choose another directory")
    stage_recipes(recipe)  # a bad recipe fails here, before anything is written
    if base is not None:
        return _train_on_base(Path(base), manifest, Path(out), people, recipe, resume)
    state = PartialState(cpu=not torch.cuda.is_available())  # one process, or one rank of a distributed launch
    state.wait_for_everyone()  # every rank has checked OUT before rank 0 writes to it
    with state.main_process_first():
        model = pipeline.start_model(base_dir(preset, DEFAULT_HOME if home is None else home), preset, people)
    r1, r2, _ = pipeline.train(model, manifest, Path(out), recipe, people, resume=resume, verbose=True)
    if state.is_main_process:
        model.save_pretrained(Path(out) / "model")
        print(f"stage 1: {r1.steps} steps, loss {r1.final_loss:.3f}; stage 2: {r2.steps} steps, "
              f"loss {r2.final_loss:.3f} -> {Path(out) / 'model'}")
    return 0


def _train_on_base(base: Path, manifest: Path, out: Path, people: list[str], recipe: str, resume: bool) -> int:
    # lazy, so that `pvchat --help` stays fast: torch, transformers (the user's model and its training)
    from pvchat import learn as pipeline
    from pvchat.model.backbones import family_of

    if resume:
        raise InputError("--resume is not supported with --base yet (its training keeps no checkpoints)")
    family_of(base)  # not a model directory, or an unsupported family: one line
    if len(people) > 3:
        raise InputError(f"{manifest}: {len(people)} people; a concept pack holds 1-3 learned together")
    card = pipeline.learn_on_base(base, people, manifest, out / "pack", recipe, data={})
    m = card["metrics"]
    print(f"stage 1: {m['stage1']['steps']} steps, loss {m['stage1']['loss']:.3f}; stage 2: "
          f"{m['stage2']['steps']} steps, loss {m['stage2']['loss']:.3f} -> {out / 'pack'} "
          f"({card['size_bytes'] / 1e6:.2f} MB)")
    return 0
