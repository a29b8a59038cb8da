"""The Python API: learn a person from one reference video, then chat about other videos.

::

    learn(reference, name)  analyze ─► synthesize ─► stage 1 ─► stage 2 ─► pack  (pvchat.learn, one function a stage)
    learn(..., base=DIR)    the same on a video LLM the user has (pvchat.model.backbones)
    Chat([name, ...])       base model + every pack's people ─► ask / stream / head_activation  (pvchat.chat)
    forget(name)            delete everything derived from that person

Everything lives in a workspace (``HOME``, default ``$PVCHAT_HOME`` or ``./workspace``; its layout:
:mod:`pvchat.workspace`). The CLI and the web app import from here.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path

import pvchat.learn as pipeline
from pvchat.chat import Answer, Chat, pack_names  # noqa: F401 (API)
from pvchat.choices import PRESET, default_recipe
from pvchat.errors import InputError
from pvchat.faces.analysis_dir import write_analysis
from pvchat.faces.analyze import analyze_video
from pvchat.io import read_json, write_json
from pvchat.learn import (  # noqa: F401 (API)
    COMPOSED_CLIPS,
    STAGES,
    Cancelled,
    ProgressFn,
    check_weights,
)
from pvchat.locks import hold
from pvchat.model.backbones import family_of
from pvchat.model.presets import get_preset
from pvchat.model.prompt import NAME_PATTERN, names_in  # noqa: F401 (API)
from pvchat.pack import CARD, read_card
from pvchat.train.stages import stage_recipes
from pvchat.video import check_video
from pvchat.workspace import (  # noqa: F401 (API)
    BASE_SEED,
    DEFAULT_HOME,
    GROUP_JOIN,
    LOCK,
    PersonPaths,
    base_dir,
    group_of,
    group_paths,
    list_people,
    person_paths,
    reference_person,
    unknown_person,
)


def find_people(reference: Path, out: Path) -> dict:
    """Analyse a reference video: who is in it, to choose ``person`` for :func:`learn`.

    Writes the analysis (best faces, contact sheet, summary.json) to ``out`` (replaced if it exists).
    Returns ``{"people": [{"index", "num_faces", "best_face"}], "contact_sheet", "subject"}``; people are
    numbered by how often they are seen, and ``subject`` is the one learn picks by default.
    """
    out = Path(out)
    analysis = analyze_video(Path(reference), progress=False)
    write_analysis(analysis, out, overwrite=True)
    return {"people": [{"index": p.id, "num_faces": p.num_faces, "best_face": str(out / f"person_{p.id}" / "best_face.png")}
                       for p in analysis.people],
            "contact_sheet": str(out / "contact_sheet.png"), "subject": analysis.subject}


# ---------------------------------------------------------------------------- learn
def learn(
    reference: Path | list[Path],
    name: str | list[str],
    home: Path = DEFAULT_HOME,
    preset: str = PRESET,
    recipe: str | None = None,
    person: int | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    base: Path | None = None,
    pool: Path | None = None,
) -> dict:
    """Learn ``name`` from one reference video (or 2–3 people together, one video each); returns the
    concept pack's card.

    Runs analyze → synthesize → stage 1 → stage 2 → pack, everything under ``HOME/people/<name>/``.
    People learned together (``learn([a, b], ["Ann", "Ben"])``) get clips of them side by side
    (:func:`pvchat.synth.compose.compose_dataset`) instead of synthesis, one model and one pack,
    under ``HOME/people/Ann+Ben/``, so one question can ask about them together.
    A re-run with the same settings resumes where the last one stopped (a finished person returns
    its card at once); other settings for an existing name are an :class:`InputError`.

    Args:
        reference: the reference video (a list: one per person learned together).
        name: what questions call the person (``<name>``; a list for people learned together).
        home: the workspace.
        preset: model preset (its subject-free base is built once under ``HOME/base/<preset>``).
        recipe: training recipe, a name or a YAML path (default: the preset's own, :func:`default_recipe`);
            a ``synthesize:`` key in it picks the synthesis recipe (default: the one of the same name, else demo).
        person: which person of the reference to learn (0 = seen most; see :func:`find_people`).
        progress: ``progress(stage, fraction, info)``; stage in :data:`STAGES`; during stage1/stage2
            info is the latest training log record (loss, lm, spr, hae, sparsity, ...) plus ``total``.
        cancel: set it to stop at the next step with :class:`Cancelled` ("cancelled"); files stay resumable.
        base: a local Hugging Face video LLM directory to personalise instead of the preset's model
            (:mod:`pvchat.model.backbones` lists the families); its training restarts when resumed.
        pool: a directory of other people's images or videos: the hard and random negatives, and the
            strangers beside the people in composed clips (default: the offline world's people).
    """
    references = [Path(r) for r in (reference if isinstance(reference, (list, tuple)) else [reference])]
    recipe = default_recipe(preset) if recipe is None else recipe
    names = list(name) if isinstance(name, (list, tuple)) else [name]
    if not 1 <= len(names) <= 3 or len(names) != len(references):
        raise InputError(f"learn one person from one video, or 2-3 people together with one video each; "
                         f"got {len(names)} name(s) and {len(references)} video(s)")
    if len(set(names)) != len(names):
        raise InputError(f"the names must differ: {', '.join(names)}")
    paths = group_paths(names, home)
    who = " and ".join(names)
    made = [d for d in (Path(home), Path(home) / "people") if not d.exists()]
    try:
        with hold(paths.root / LOCK, f"{who} is being learned by another process right now; wait for it to "
                  f"finish or stop it") as lock:
            try:
                return _learn(references, names, Path(home), preset, recipe, person, progress, cancel, lock, base,
                              pool)
            except BaseException:
                _drop_unstarted(paths)
                raise
    finally:  # a learn that failed before deriving anything leaves nothing behind
        for d in (paths.root, *reversed(made)):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty


def _drop_unstarted(paths: PersonPaths) -> None:
    """Remove the settings of a learn that derived nothing (e.g. its reference had no face)."""
    if not paths.started():
        paths.settings.unlink(missing_ok=True)


def _learn(references: list[Path], names: list[str], home: Path, preset: str, recipe: str | Path, person: int | None,
           progress: ProgressFn | None, cancel: threading.Event | None, lock: int, base: Path | None = None,
           pool: Path | None = None) -> dict:
    """:func:`learn` while holding the people's lock (``lock``, its descriptor: the synthesis child inherits it)."""
    t0 = time.perf_counter()
    paths = group_paths(names, home)
    name = GROUP_JOIN.join(names)
    get_preset(preset)
    stage_recipes(recipe)
    synth = pipeline.synth_recipe(recipe)
    for reference in references:  # a missing, unreadable or one-frame video fails before anything is written
        check_video(reference)
    if base is None:
        check_weights(preset)  # a missing weight carrier fails now, not after analysis and synthesis
    else:
        family_of(base)  # not a model directory, or an unsupported family: fails before analysis
    settings = {"reference": str(references[0].resolve()), "preset": preset,
                "recipe": pipeline.recipe_setting(recipe), "person": person, "synthesize": synth}
    if base is not None:
        settings.update(preset=None, base=str(Path(base).resolve()))
    if pool is not None:  # (absent before, so people learned on the default pool resume)
        if not Path(pool).is_dir():
            raise InputError(f"{pool}: no such directory (the pool is a directory of other people's images or videos)")
        settings["pool"] = str(Path(pool).resolve())
    if len(names) > 1:
        settings.update(reference=None, references=[str(r.resolve()) for r in references], names=names)
    if paths.started() and paths.settings.is_file():
        old = read_json(paths.settings)
        diff = sorted(k for k in settings if old.get(k) != settings[k])
        if diff:
            raise InputError(f"{name} was learned from other settings ({', '.join(diff)} differ); "
                             f"run 'pvchat forget {name}' first or choose another name")
    else:  # nothing derived yet (e.g. the last reference had no face): these settings count
        write_json(paths.settings, settings)

    if (paths.pack / CARD).is_file():
        card = read_card(paths.pack)
        if progress is not None:
            progress("pack", 1.0, {"size_bytes": card.get("size_bytes")})
        return card

    analyses = paths.analyses(names)
    summary = pipeline.analyze(references, analyses, person, progress, cancel, who=name)
    # positives and hard negatives from the offline world's people (one person); people learned
    # together: clips of them side by side, each cut out of their own reference
    if len(names) == 1:
        data = pipeline.synthesize(paths.analysis, name, paths.data, synth, pool, progress, cancel, lock,
                                   pairs=pipeline.pair_clips(recipe))
    else:
        data = pipeline.compose(names, analyses, paths.data, recipe, synth, progress, cancel, pool)
    pipeline.check_cancel(cancel, "stage1", name)
    if base is not None:  # the user's video LLM: its own stages and pack (pvchat.model.backbones)
        extra = {"person": summary["subject"], "recipe": settings["recipe"], "synthesize": synth,
                 "reference": settings["reference"] or ", ".join(settings["references"]),
                 "learn_seconds": round(time.perf_counter() - t0, 1)}
        return pipeline.learn_on_base(Path(base), names, paths.data / "manifest.jsonl", paths.pack, recipe, data,
                                      extra=extra, progress=progress, cancel=cancel)
    base = base_dir(preset, home)
    model = pipeline.start_model(base, preset, names, analyses, seed=BASE_SEED)
    _, _, metrics = pipeline.train(model, paths.data / "manifest.jsonl", paths.run, recipe, names, resume=True,
                                   progress=progress, cancel=cancel)
    return pipeline.pack(model, names, paths.pack, base, recipe, data, metrics,
                         reference=settings["reference"] or ", ".join(settings["references"]),
                         extra={"person": summary["subject"], "recipe": settings["recipe"], "synthesize": synth,
                                "learn_seconds": round(time.perf_counter() - t0, 1)},
                         progress=progress, cancel=cancel)


def forget(name: str, home: Path = DEFAULT_HOME) -> list[Path]:
    """Delete every file derived from ``name`` (analysis, data, runs, pack); returns what was deleted.

    People learned from the same reference video analysed it too, and their analyses hold every
    person of it: ``name``'s faces there (``analysis/person_K/``, which their learning does not use)
    and the contact sheets showing everyone go as well. A person learned together with others
    (``people/Ann+Ben``) shares one model with them: that whole group goes. The reference video itself
    is the user's and stays. An unknown name, or one being learned right now, is an :class:`InputError`.
    """
    paths = person_paths(name, home)
    if not paths.root.is_dir():
        paths = group_of(name, Path(home)) or paths
    if not paths.root.is_dir():
        raise unknown_person(name, Path(home))
    with hold(paths.root / LOCK, f"{name} is being learned right now; stop that first", wait=0):
        reference, index = reference_person(paths)
        deleted = sorted(p for p in paths.root.iterdir() if p.name != LOCK) + [paths.root]
        shutil.rmtree(paths.root)
    for other in sorted((Path(home) / "people").glob("*")) if reference is not None else []:
        if other != paths.root and reference_person(PersonPaths(other))[0] == reference:
            subject = reference_person(PersonPaths(other))[1]
            for path in (other / "analysis" / f"person_{index}", other / "analysis" / "contact_sheet.png"):
                if subject == index or not path.exists():
                    continue
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                deleted.append(path)
    return deleted
