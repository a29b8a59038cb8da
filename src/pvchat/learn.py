"""The learn pipeline: one resumable function per stage, the one way every caller learns people.

::

    analyze ─► synthesize (one person) | compose (2-3 together) ─► start_model ─► train (stage 1, stage 2) ─► pack

Callers: :func:`pvchat.api.learn` (a workspace, the people's lock, ``cancel``: synthesis in a child
process), :func:`pvchat.offline.demo.run_demo` (the offline world, in one process), ``pvchat train``
(:mod:`pvchat.commands.train`: start_model and train on a synthesized data set) and ``pvchat
ablate`` (:mod:`pvchat.eval.ablate`: analyze and synthesize once per subject, then per variant and
seed start_model with the variant's config overrides and train). Each stage skips what is already
done (its ``summary.json``, the training checkpoints, the pack's card), so a re-run resumes;
``report(stage, fraction, info)`` follows it, and ``cancel`` (a ``threading.Event``) stops it with
:class:`Cancelled`, leaving every file resumable.

The base model every person starts from is ``HOME/base/<preset>``
(:func:`pvchat.workspace.base_dir`), built once from the preset with :data:`BASE_SEED`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from pvchat.choices import STAGES  # noqa: F401 (the stages progress reports name)
from pvchat.data import ClipRecord, read_manifest, write_manifest
from pvchat.errors import InputError, PVChatError
from pvchat.faces.analysis_dir import load_embedding, write_analysis
from pvchat.faces.analyze import analyze_video
from pvchat.io import read_json, write_json
from pvchat.model.backbones import load_base
from pvchat.model.backbones.learn import learn as learn_people
from pvchat.model.presets import get_preset
from pvchat.model.pvchat import PVChat
from pvchat.pack import write_pack
from pvchat.proc import die_with_parent
from pvchat.synth.compose import compose_dataset
from pvchat.synth.negatives import Pool
from pvchat.synth.pipeline import SYNTH_RECIPES, get_synth_recipe, synthesize_dataset
from pvchat.train import stages
from pvchat.train.loop import TrainingCancelled, TrainResult, read_log
from pvchat.train.recipe import load_train_recipe
from pvchat.weights import resolve_cnn, resolve_llm
from pvchat.workspace import BASE_SEED

COMPOSED_CLIPS = 24  # clips of people learned together (pvchat compose); a recipe's compose_clips: overrides
Cancelled = TrainingCancelled  # what a stage raises when ``cancel`` is set

ProgressFn = Callable[[str, float, dict], None]


def _report(progress: ProgressFn | None, stage: str, fraction: float, info: dict | None = None) -> None:
    if progress is not None:
        progress(stage, float(fraction), info or {})


def check_cancel(cancel: threading.Event | None, stage: str, who: str) -> None:
    if cancel is not None and cancel.is_set():
        raise TrainingCancelled(f"cancelled before {stage} of {who}; run learn again to resume")


# --------------------------------------------------------------------------- recipes
def recipe_setting(recipe: str | Path) -> str:
    """A shipped recipe by name, a YAML file by absolute path (what learn.json records)."""
    path = stages.recipe_path(recipe)
    return str(recipe) if path.name == f"{recipe}.yaml" and not Path(recipe).exists() else str(path.resolve())


def synth_recipe(recipe: str | Path) -> str:
    """The synthesis recipe: the training recipe's ``synthesize:`` key, else the one of the same name, else demo."""
    chosen = load_train_recipe(recipe).synthesize
    if chosen is None:
        chosen = str(recipe) if str(recipe) in SYNTH_RECIPES else "demo"
    get_synth_recipe(str(chosen))
    return str(chosen)


def pair_clips(recipe: str | Path) -> int:
    """How many two-person clips one person's training set gets besides its own (the recipe's ``pair_clips:``)."""
    return load_train_recipe(recipe).pair_clips


def check_weights(preset: str) -> None:
    """The preset's pretrained weights are at hand (carrier packages or the user's folders): a missing
    one is an :class:`InputError` before any work is done."""
    cfg = get_preset(preset)
    if cfg.vision.model_type == "person":
        resolve_cnn(cfg.vision.weights)
    if cfg.llm.weights and not cfg.llm.path:
        resolve_llm(cfg.llm.weights)


def default_pool(pool: Pool | None = None) -> Pool:
    """``pool``, or, where the caller passed none, the offline world's people
    (:func:`pvchat.offline.pool.world_pool`): the library is handed its pool; this default is built
    only when it is not."""
    if pool is not None:
        return pool
    # lazy: pvchat.offline is a client of the library, not a dependency of it (and renders the world: cv2, dlib)
    from pvchat.offline.pool import world_pool

    return world_pool()


# ----------------------------------------------------------------------------- stages
def analyze(references: list[Path], analyses: list[Path], person: int | None = None,
            progress: ProgressFn | None = None, cancel: threading.Event | None = None, who: str = "",
            verbose: bool = False) -> dict:
    """Stage 1: the people of each reference video and the subject's faces, into ``analyses`` (one
    directory per reference, skipped when its ``summary.json`` exists); returns the first summary."""
    for i, (reference, analysis) in enumerate(zip(references, analyses)):
        if not (analysis / "summary.json").is_file():
            check_cancel(cancel, "analyze", who)
            _report(progress, "analyze", i / len(references))
            write_analysis(analyze_video(reference, person=person, progress=verbose), analysis, overwrite=True)
    summary = read_json(analyses[0] / "summary.json")
    _report(progress, "analyze", 1.0, {"people": len(summary["people"]), "subject": summary["subject"]})
    return summary


def synthesize(analysis: Path, name: str, data: Path, recipe: str, pool: Pool | None = None,
               progress: ProgressFn | None = None, cancel: threading.Event | None = None,
               lock: int | None = None, verbose: bool = False, pairs: int = 0) -> dict:
    """Stage 2 for one person: positives from the reference, hard and random negatives from ``pool``
    (default :func:`default_pool`), QA; skipped when ``data/summary.json`` exists. Returns that summary.

    ``pairs``: that many clips more of two people, the person beside a stranger or two strangers
    (:func:`pvchat.synth.compose.compose_dataset`, two people per clip, into ``data/pairs``), joined
    to ``data/manifest.jsonl``: one person's clips alone never show two people, and a model learned
    on them alone said yes to clips of two strangers (``bench/existence_parts.py``). One of the two
    strangers is one of the recipe's hard negatives (the pool people nearest the person's face).

    With ``cancel`` it runs in a child process (:func:`synthesize_in_child`, ``pool`` then a directory
    or None), so a cancel stops it at once; without, in this process (``verbose``: its progress bars).
    """
    if not (data / "summary.json").is_file():
        check_cancel(cancel, "synthesize", name)
        _report(progress, "synthesize", 0.0)
        if cancel is not None:
            synthesize_in_child(analysis, name, data, recipe, lambda f, i: _report(progress, "synthesize", f, i),
                                cancel, lock, pool=pool)
        else:
            pool = default_pool(pool)  # built once: the pair clips below draw their strangers from it too
            synthesize_dataset(analysis, name, data, pool=pool, recipe=recipe, progress=verbose)
    summary = read_json(data / "summary.json")
    if pairs and summary.get("pair_clips") != pairs:
        check_cancel(cancel, "synthesize", name)
        summary = _join_pairs(analysis, name, data, recipe, pool, pairs, summary, verbose)
    _report(progress, "synthesize", 1.0, {"clips": summary.get("clips"), "qa_pairs": summary.get("qa_pairs")})
    return summary


def _join_pairs(analysis: Path, name: str, data: Path, recipe: str, pool: Pool | None, pairs: int,
                summary: dict, verbose: bool) -> dict:
    """Compose ``pairs`` two-person clips into ``data/pairs`` (resumable) and rewrite the manifest and
    ``summary`` of ``data`` as its own clips and these together; the summary last, so a run cut off
    between the two writes joins again."""
    r = get_synth_recipe(recipe)
    compose_dataset([(name, analysis)], data / "pairs", clips=pairs, seed=r.seed, progress=verbose,
                    pool=default_pool(pool), num_frames=r.num_frames, fps=r.fps, qa=r.qa, people_per_clip=2,
                    hard_strangers=r.hard_negatives)
    own = [ClipRecord.from_dict(read_json(p)) for p in sorted((data / "records").glob("*.json"))]
    composed = read_manifest(data / "pairs" / "manifest.jsonl")
    records = own + [dataclasses.replace(rec, clip=f"pairs/{rec.clip}") for rec in composed]
    write_manifest(data / "manifest.jsonl", records)
    summary = {**summary, "clips": len(records), "pair_clips": len(composed),
               "qa_pairs": sum(len(rec.qa) for rec in records)}
    write_json(data / "summary.json", summary)
    return summary


def compose(names: list[str], analyses: list[Path], data: Path, recipe: str | Path, synth: str,
            progress: ProgressFn | None = None, cancel: threading.Event | None = None,
            pool: Pool | None = None) -> dict:
    """Stage 2 for 2-3 people learned together: clips of them side by side, each cut out of their own
    reference (:func:`pvchat.synth.compose.compose_dataset`); skipped when ``data/summary.json`` exists.
    Strangers from ``pool`` (default :func:`default_pool`) stand in for the people a clip leaves out,
    one of them a hard negative (nearest the people's faces) where the clip shows none of them, so
    how many people a clip shows does not answer "Is <A> here?" (composed without strangers, two
    people learned together were told present in a quarter of clips of two strangers)."""
    if not (data / "summary.json").is_file():
        check_cancel(cancel, "synthesize", "+".join(names))
        _report(progress, "synthesize", 0.0)
        clips = load_train_recipe(recipe).compose_clips or COMPOSED_CLIPS
        synth_recipe = get_synth_recipe(synth)
        compose_dataset(list(zip(names, analyses)), data, clips=clips, progress=False, qa=synth_recipe.qa,
                        pool=default_pool(pool), hard_strangers=synth_recipe.hard_negatives)
    summary = read_json(data / "summary.json")
    _report(progress, "synthesize", 1.0, {"clips": summary.get("clips"), "qa_pairs": summary.get("qa_pairs")})
    return summary


def start_model(base: Path | None, preset: str, names: list[str], analyses: list[Path] | None = None,
                seed: int = BASE_SEED, configure: stages.ConfigFn | None = None) -> PVChat:
    """The model training starts from: the subject-free base of ``preset`` with ``names`` added;
    their identity keys start from the mean face embedding of their analyses (``analyses``, one per
    name, where the preset has keys).

    The base is built once in ``base`` (e.g. ``HOME/base/<preset>``) and loaded from there, or, with
    ``base`` None, built in memory and never saved (:func:`pvchat.train.stages.base_model`).
    ``configure`` (the ablations' config overrides: a function that changes the preset's config in
    place) needs ``base`` None: a changed config's base must not be mistaken for the preset's saved
    one, nor a saved one with another change reused; each call builds it afresh from ``seed``.
    """
    if configure is not None and base is not None:
        raise ValueError("a changed config (configure) builds its base in memory: pass base=None")
    faces = {n: load_embedding(a) for n, a in zip(names, analyses)} if analyses else None
    start = stages.base_model(preset, seed, configure) if base is None else stages.build_base(base, preset, seed)
    return stages.with_subjects(start, names, seed=seed, faces=faces)


def train(model: PVChat, manifest: Path, run: Path, recipe: str | Path, names: list[str], resume: bool = True,
          progress: ProgressFn | None = None, cancel: threading.Event | None = None,
          verbose: bool = False) -> tuple[TrainResult | None, TrainResult | None, dict]:
    """Stages 1 and 2 (:func:`pvchat.train.stages.learn_stages`; checkpointed under ``run``: with
    ``resume`` a re-run continues). Returns both results and, per stage, the last log record's
    step, loss, lm, spr and hae (what the pack's card records)."""
    check_cancel(cancel, "stage1", "+".join(names))
    _report(progress, "stage1", 0.0)

    def on_step(stage: str, step: int, total: int, record: dict) -> None:
        _report(progress, stage, step / max(total, 1), {**record, "total": total})

    results = stages.learn_stages(model, manifest, run, recipe=recipe, subjects=names, resume=resume,
                                  progress=verbose, on_step=None if progress is None else on_step, cancel=cancel)
    r1, r2 = results if results is not None else (None, None)
    metrics = {}
    for stage in ("stage1", "stage2"):
        log = run / stage / "log.jsonl"
        rows = read_log(log) if log.is_file() else []
        last = rows[-1] if rows else {}
        metrics[stage] = {k: last[k] for k in ("step", "loss", "lm", "spr", "hae") if k in last}
        _report(progress, stage, 1.0, last)
    return r1, r2, metrics


def pack(model: PVChat, names: list[str], out: Path, base: Path, recipe: str | Path, data: dict, metrics: dict,
         reference: str, extra: dict | None = None, progress: ProgressFn | None = None,
         cancel: threading.Event | None = None) -> dict:
    """The concept pack of ``names`` (:func:`pvchat.pack.write_pack`); returns its card."""
    check_cancel(cancel, "pack", "+".join(names))
    _report(progress, "pack", 0.0)
    _, r2 = stages.stage_recipes(recipe)
    card = write_pack(model, names, out, base, train_last_k=r2.train_last_k, data=data, metrics=metrics,
                      reference=reference, extra=extra)
    _report(progress, "pack", 1.0, {"size_bytes": card["size_bytes"]})
    return card


def learn_on_base(base: Path, names: list[str], manifest: Path, out: Path, recipe: str | Path, data: dict,
                  extra: dict | None = None, progress: ProgressFn | None = None,
                  cancel: threading.Event | None = None) -> dict:
    """Stages 1-2 and the pack on a user's video LLM (``--base DIR``, :mod:`pvchat.model.backbones`):
    the base in bf16 on a GPU when there is one; no checkpoints (a re-run trains again). Returns the card."""
    who = "+".join(names)
    check_cancel(cancel, "stage1", who)
    cuda = torch.cuda.is_available()
    model = load_base(base, dtype=torch.bfloat16 if cuda else None).to("cuda" if cuda else "cpu")
    for n in names:
        model.add_person(n)

    def on_step(stage: str, step: int, total: int, record: dict) -> None:
        check_cancel(cancel, stage, who)
        _report(progress, stage, step / max(total, 1), {**record, "step": step, "total": total})

    _report(progress, "stage1", 0.0)
    metrics = learn_people(model, manifest, names, stages.stage_recipes(recipe), on_step=on_step)
    check_cancel(cancel, "pack", who)
    _report(progress, "pack", 0.0)
    card = model.write_pack(names, out, data=data, metrics=metrics, extra=extra)
    _report(progress, "pack", 1.0, {"size_bytes": card["size_bytes"]})
    return card


# ------------------------------------------------------------------ synthesis child
_ERROR = "pvchat-error: "  # how the synthesize child reports a user-facing error on stderr


def _synthesize_main() -> None:
    """Body of the synthesize child process; ``sys.argv[1]`` is the JSON of synthesize_dataset's arguments
    (``pool`` null: :func:`default_pool`)."""
    die_with_parent(int(sys.argv[2]) if len(sys.argv) > 2 else None)  # a kill -9 of learn ends this child too
    kwargs = json.loads(sys.argv[1])
    try:
        kwargs["pool"] = default_pool(kwargs.get("pool"))
        synthesize_dataset(**kwargs, progress=False)
    except PVChatError as e:
        print(_ERROR + str(e).replace("\n", " "), file=sys.stderr)
        sys.exit(2)


def synthesize_in_child(analysis: Path, name: str, out: Path, recipe: str, report: Callable[[float, dict], None],
                        cancel: threading.Event | None, lock: int | None = None, pool: Path | None = None) -> None:
    """Synthesize in a child process, so ``cancel`` can stop it at once; every clip it finished stays
    (synthesize resumes per clip). Progress is the count of finished clips; the child's output goes
    to ``synthesize.log`` beside ``out``. The child dies with this process, and inherits ``lock`` (the
    person's lock descriptor), so a re-run after a kill cannot start while it still runs. ``pool``: a
    directory, or None for :func:`default_pool`."""
    if pool is not None and not isinstance(pool, (str, Path)):
        raise TypeError("a synthesis child takes its pool as a directory (or None: the offline world's people)")
    r = get_synth_recipe(recipe)
    total = max(1, r.positives + r.hard_negatives + r.random_negatives)
    kwargs = {"analysis": str(analysis), "name": name, "out": str(out), "recipe": recipe,
              "pool": None if pool is None else str(pool)}
    log = out.parent / "synthesize.log"
    for tmp in [*out.glob("clips/.*.tmp"), *out.glob("records/.*.tmp")]:  # cut off by a killed run (no writer now)
        tmp.unlink(missing_ok=True)
    with open(log, "w") as sink:  # a new session: Ctrl-C in a terminal reaches the parent only, which cancels
        proc = subprocess.Popen([sys.executable, "-c", "from pvchat.learn import _synthesize_main; _synthesize_main()",
                                 json.dumps(kwargs), str(os.getpid())], stdout=sink, stderr=sink,
                                start_new_session=True, pass_fds=() if lock is None else (lock,))
    reported = 0
    try:
        while proc.poll() is None:
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled(f"cancelled during synthesize of {name}; run learn again to resume")
            time.sleep(0.25)
            done = len(list((out / "records").glob("*.json"))) if (out / "records").is_dir() else 0
            if done != reported:
                report(min(done / total, 0.99), {"clips": done, "planned": total})
                reported = done
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for tmp in [*out.glob("clips/.*.tmp"), *out.glob("records/.*.tmp")]:  # a clip cut off mid-write
                tmp.unlink(missing_ok=True)
    if proc.returncode == 0:
        return
    lines = log.read_text(errors="replace").splitlines()
    message = next((line[len(_ERROR):] for line in reversed(lines) if line.startswith(_ERROR)), None)
    if message is not None:
        raise InputError(message)
    raise RuntimeError(f"synthesize failed (exit code {proc.returncode}); {log}:\n" + "\n".join(lines[-20:]))
