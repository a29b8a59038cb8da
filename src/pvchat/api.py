"""The Python API: learn a person from one reference video, then chat about other videos.

::

    learn(reference, name)  analyze ─► synthesize ─► stage 1 ─► stage 2 ─► pack
    learn(..., base=DIR)    the same on a video LLM the user has (pvchat.model.backbones)
    Chat([name, ...])       base model + every pack's people ─► ask / stream / head_activation
    forget(name)            delete everything derived from that person

A workspace (``HOME``, default ``$PVCHAT_HOME`` or ``./workspace``) holds::

    base/<preset>/            the subject-free base model every person is learned from
    people/<name>/learn.json  the settings learn was started with (a re-run resumes only with the same)
                  analysis/   faces and people of the reference video
                  data/       the synthesized training set
                  run/        stage1/, stage2/: logs, plots, checkpoints
                  pack/       the concept pack (pack.safetensors + card.json)

Several packs load at once. People learned separately each changed the shared parts of the
model (Q-former, LoRA), so :class:`Chat` keeps each pack's shared tensors and swaps in those of
the pack whose people a question names; the people's own rows and query blocks coexist.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from pvchat.errors import InputError, PVChatError
from pvchat.io import read_json, write_json
from pvchat.model.prompt import NAME_PATTERN, RESERVED, names_in, validate_name  # noqa: F401 (names_in: API)
from pvchat.model.pvchat import CONFIG_NAME, WEIGHTS_NAME
from pvchat.pack import (
    CARD,
    ConceptPack,
    add_pack_subjects,
    apply_shared,
    base_info,
    check_fits,
    dir_size,
    load_pack,
    read_card,
    write_pack,
)
from pvchat.train.loop import TrainingCancelled

DEFAULT_HOME: Path = Path(os.environ.get("PVCHAT_HOME", "workspace"))
STAGES = ("analyze", "synthesize", "stage1", "stage2", "pack")
COMPOSED_CLIPS = 24  # clips of people learned together (pvchat compose); a recipe's compose_clips: overrides
LOCK = ".lock"  # people/<name>/.lock: held while learn works on that person (pvchat.locks)
BASE_SEED = 0  # every base model of a workspace is built from its preset with this seed
Cancelled = TrainingCancelled  # what learn raises when ``cancel`` is set

ProgressFn = Callable[[str, float, dict], None]


@dataclass
class Answer:
    text: str
    frames: np.ndarray  # (T, H, W, 3) uint8: the frames the model saw
    people: list[str]  # the names the question refers to


# ----------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class PersonPaths:
    """Where learn puts everything about one person."""

    root: Path

    @property
    def settings(self) -> Path:
        return self.root / "learn.json"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def pack(self) -> Path:
        return self.root / "pack"


def person_paths(name: str, home: Path = DEFAULT_HOME) -> PersonPaths:
    return PersonPaths(Path(home) / "people" / validate_name(name))


GROUP_JOIN = "+"  # people/<A>+<B>/: two or three people learned together (never a valid name)


def group_paths(names: list[str], home: Path = DEFAULT_HOME) -> PersonPaths:
    """One person's paths, or those of people learned together (``people/Ann+Ben``)."""
    return PersonPaths(Path(home) / "people" / GROUP_JOIN.join(validate_name(n) for n in names))


def _group_of(name: str, home: Path) -> PersonPaths | None:
    """The learned group ``name`` belongs to, if any."""
    people = Path(home) / "people"
    for d in sorted(people.glob(f"*{GROUP_JOIN}*")) if people.is_dir() else []:
        if name in d.name.split(GROUP_JOIN) and (d / "pack" / CARD).is_file():
            return PersonPaths(d)
    return None


def base_dir(preset: str, home: Path = DEFAULT_HOME) -> Path:
    return Path(home) / "base" / preset


def _known(home: Path) -> list[str]:
    people = Path(home) / "people"
    return sorted(d.name for d in people.iterdir() if (d / "pack" / CARD).is_file()) if people.is_dir() else []


def _unknown_person(name: str, home: Path) -> InputError:
    known = _known(home)
    return InputError(f"no learned person {name!r} in {home}; known: {', '.join(known) or 'none'} "
                      f"(learn one with 'pvchat learn REFERENCE --name NAME')")


# ---------------------------------------------------------------------- list / find
def list_people(home: Path = DEFAULT_HOME) -> list[dict]:
    """The cards of every learned person in ``home``, by name, with ``pack`` (its directory) and
    ``size_bytes`` (on disk). A damaged card is listed as ``{"name", "names", "pack", "error"}``."""
    out = []
    for name in _known(Path(home)):
        pack = Path(home) / "people" / name / "pack"
        try:
            card = read_card(pack)
        except InputError as e:
            card = {"name": name, "names": [name], "error": str(e)}
        out.append({**card, "pack": str(pack), "size_bytes": dir_size(pack)})
    return out


def find_people(reference: Path, out: Path) -> dict:
    """Analyse a reference video: who is in it, to choose ``person`` for :func:`learn`.

    Writes the analysis (best faces, contact sheet, summary.json) to ``out`` (replaced if it exists).
    Returns ``{"people": [{"index", "num_faces", "best_face"}], "contact_sheet", "subject"}``; people are
    numbered by how often they are seen, and ``subject`` is the one learn picks by default.
    """
    from pvchat.faces.analyze import analyze_video, write_analysis

    out = Path(out)
    analysis = analyze_video(Path(reference), progress=False)
    write_analysis(analysis, out, overwrite=True)
    return {"people": [{"index": p.id, "num_faces": p.num_faces, "best_face": str(out / f"person_{p.id}" / "best_face.png")}
                       for p in analysis.people],
            "contact_sheet": str(out / "contact_sheet.png"), "subject": analysis.subject}


# ---------------------------------------------------------------------------- learn
_ERROR = "pvchat-error: "  # how the synthesize child reports a user-facing error on stderr


def _synthesize_main() -> None:
    """Body of the synthesize child process; ``sys.argv[1]`` is the JSON of synthesize_dataset's arguments."""
    from pvchat.proc import die_with_parent

    die_with_parent(int(sys.argv[2]) if len(sys.argv) > 2 else None)  # a kill -9 of learn ends this child too
    from pvchat.synth.pipeline import synthesize_dataset

    try:
        synthesize_dataset(**json.loads(sys.argv[1]), progress=False)
    except PVChatError as e:
        print(_ERROR + str(e).replace("\n", " "), file=sys.stderr)
        sys.exit(2)


def _synthesize(analysis: Path, name: str, out: Path, recipe: str, report: Callable[[float, dict], None],
                cancel: threading.Event | None, lock: int | None = None) -> None:
    """Synthesize in a child process, so ``cancel`` can stop it at once; every clip it finished stays
    (synthesize resumes per clip). Progress is the count of finished clips; the child's output goes
    to ``synthesize.log`` beside ``out``. The child dies with this process, and inherits ``lock`` (the
    person's lock descriptor), so a re-run after a kill cannot start while it still runs."""
    from pvchat.synth.pipeline import get_synth_recipe

    r = get_synth_recipe(recipe)
    total = max(1, r.positives + r.hard_negatives + r.random_negatives)
    kwargs = {"analysis": str(analysis), "name": name, "out": str(out), "recipe": recipe}
    log = out.parent / "synthesize.log"
    for tmp in [*out.glob("clips/.*.tmp"), *out.glob("records/.*.tmp")]:  # cut off by a killed run (no writer now)
        tmp.unlink(missing_ok=True)
    with open(log, "w") as sink:  # a new session: Ctrl-C in a terminal reaches the parent only, which cancels
        proc = subprocess.Popen([sys.executable, "-c", "from pvchat.api import _synthesize_main; _synthesize_main()",
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


def _recipe_setting(recipe: str | Path) -> str:
    """A shipped recipe by name, a YAML file by absolute path (what learn.json records)."""
    from pvchat.train.stages import recipe_path

    path = recipe_path(recipe)
    return str(recipe) if path.name == f"{recipe}.yaml" and not Path(recipe).exists() else str(path.resolve())


def _synth_recipe(recipe: str | Path) -> str:
    """The synthesis recipe: the training recipe's ``synthesize:`` key, else the one of the same name, else demo."""
    from pvchat.synth.pipeline import SYNTH_RECIPES, get_synth_recipe
    from pvchat.train.recipe import load_recipes
    from pvchat.train.stages import recipe_path

    chosen = load_recipes(recipe_path(recipe)).get("synthesize")
    if chosen is None:
        chosen = str(recipe) if str(recipe) in SYNTH_RECIPES else "demo"
    get_synth_recipe(str(chosen))
    return str(chosen)


def check_weights(preset: str) -> None:
    """The preset's pretrained weights are at hand (carrier packages or the user's folders): a missing
    one is an :class:`InputError` before any work is done."""
    from pvchat.model.presets import get_preset
    from pvchat.weights import resolve_cnn, resolve_llm

    cfg = get_preset(preset)
    if cfg.vision.model_type == "person":
        resolve_cnn(cfg.vision.weights)
    if cfg.llm.weights and not cfg.llm.path:
        resolve_llm(cfg.llm.weights)


def _last_record(log: Path) -> dict:
    from pvchat.train.loop import read_log

    rows = read_log(log) if log.is_file() else []
    return rows[-1] if rows else {}


def learn(
    reference: Path | list[Path],
    name: str | list[str],
    home: Path = DEFAULT_HOME,
    preset: str = "face",
    recipe: str = "face",
    person: int | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    base: Path | None = None,
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
        recipe: training recipe, a name or a YAML path; a ``synthesize:`` key in it picks the synthesis
            recipe (default: the one of the same name, else demo).
        person: which person of the reference to learn (0 = seen most; see :func:`find_people`).
        progress: ``progress(stage, fraction, info)``; stage in :data:`STAGES`; during stage1/stage2
            info is the latest training log record (loss, lm, spr, hae, sparsity, ...) plus ``total``.
        cancel: set it to stop at the next step with :class:`Cancelled` ("cancelled"); files stay resumable.
        base: a local Hugging Face video LLM directory to personalise instead of the preset's model
            (:mod:`pvchat.model.backbones` lists the families); its training restarts when resumed.
    """
    from pvchat.locks import hold

    references = [Path(r) for r in (reference if isinstance(reference, (list, tuple)) else [reference])]
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
                return _learn(references, names, Path(home), preset, recipe, person, progress, cancel, lock, base)
            except BaseException:
                _drop_unstarted(paths)
                raise
    finally:  # a learn that failed before deriving anything leaves nothing behind
        for d in (paths.root, *reversed(made)):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty


def _learn_on_base(base: Path, names: list[str], paths: PersonPaths, recipe: str | Path, data: dict, settings: dict,
                   summary: dict, report, cancel: threading.Event | None, t0: float) -> dict:
    """Stages 1-2 and the pack of :func:`learn` on a user's video LLM (no checkpoints: a re-run starts over)."""
    from pvchat.model.backbones import load_base
    from pvchat.model.backbones.learn import learn as learn_on
    from pvchat.train.stages import stage_recipes

    cuda = torch.cuda.is_available()
    model = load_base(base, dtype=torch.bfloat16 if cuda else None).to("cuda" if cuda else "cpu")
    for n in names:
        model.add_person(n)

    def on_step(stage: str, step: int, total: int, record: dict) -> None:
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled(f"cancelled during {stage}; run learn again to start its training over")
        report(stage, step / max(total, 1), {**record, "step": step, "total": total})

    report("stage1", 0.0)
    metrics = learn_on(model, paths.data / "manifest.jsonl", names, stage_recipes(recipe), on_step=on_step)
    report("pack", 0.0)
    card = model.write_pack(names, paths.pack, data=data, metrics=metrics,
                            extra={"reference": settings["reference"] or ", ".join(settings["references"]),
                                   "person": summary["subject"], "recipe": settings["recipe"],
                                   "synthesize": settings["synthesize"],
                                   "learn_seconds": round(time.perf_counter() - t0, 1)})
    report("pack", 1.0, {"size_bytes": card["size_bytes"]})
    return card


def _drop_unstarted(paths: PersonPaths) -> None:
    """Remove the settings of a learn that derived nothing (e.g. its reference had no face)."""
    if not any(p.exists() for p in (paths.analysis, paths.data, paths.run, paths.pack)):
        paths.settings.unlink(missing_ok=True)


def _learn(references: list[Path], names: list[str], home: Path, preset: str, recipe: str | Path, person: int | None,
           progress: ProgressFn | None, cancel: threading.Event | None, lock: int, base: Path | None = None) -> dict:
    """:func:`learn` while holding the people's lock (``lock``, its descriptor: the synthesis child inherits it)."""
    from pvchat.faces.analyze import analyze_video, write_analysis
    from pvchat.model.presets import get_preset
    from pvchat.train.stages import build_base, learn_stages, stage_recipes, with_subjects
    from pvchat.video import check_video

    t0 = time.perf_counter()
    paths = group_paths(names, home)
    name = GROUP_JOIN.join(names)
    get_preset(preset)
    _, r2 = stage_recipes(recipe)
    synth = _synth_recipe(recipe)
    for reference in references:  # a missing, unreadable or one-frame video fails before anything is written
        check_video(reference)
    if base is None:
        check_weights(preset)  # a missing weight carrier fails now, not after analysis and synthesis
    else:
        from pvchat.model.backbones import family_of

        family_of(base)  # not a model directory, or an unsupported family: fails before analysis
    settings = {"reference": str(references[0].resolve()), "preset": preset, "recipe": _recipe_setting(recipe),
                "person": person, "synthesize": synth}
    if base is not None:
        settings.update(preset=None, base=str(Path(base).resolve()))
    if len(names) > 1:
        settings.update(reference=None, references=[str(r.resolve()) for r in references], names=names)
    started = any(p.exists() for p in (paths.analysis, paths.data, paths.run, paths.pack))
    if started and paths.settings.is_file():
        old = read_json(paths.settings)
        diff = sorted(k for k in settings if old.get(k) != settings[k])
        if diff:
            raise InputError(f"{name} was learned from other settings ({', '.join(diff)} differ); "
                             f"run 'pvchat forget {name}' first or choose another name")
    else:  # nothing derived yet (e.g. the last reference had no face): these settings count
        write_json(paths.settings, settings)

    def report(stage: str, fraction: float, info: dict | None = None) -> None:
        if progress is not None:
            progress(stage, float(fraction), info or {})

    def check_cancel(stage: str) -> None:
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled(f"cancelled before {stage} of {name}; run learn again to resume")

    if (paths.pack / CARD).is_file():
        card = read_card(paths.pack)
        report("pack", 1.0, {"size_bytes": card.get("size_bytes")})
        return card

    # 1. analyze: the people of each reference video and the subject's faces
    analyses = [paths.analysis] if len(names) == 1 else [paths.analysis / n for n in names]
    for i, (reference, analysis) in enumerate(zip(references, analyses)):
        if not (analysis / "summary.json").is_file():
            check_cancel("analyze")
            report("analyze", i / len(names))
            write_analysis(analyze_video(reference, person=person, progress=False), analysis, overwrite=True)
    summary = read_json(analyses[0] / "summary.json")
    report("analyze", 1.0, {"people": len(summary["people"]), "subject": summary["subject"]})

    # 2. synthesize: positives, hard negatives from the default pool, QA; people learned together:
    #    clips of them side by side, each cut out of their own reference
    if not (paths.data / "summary.json").is_file():
        check_cancel("synthesize")
        report("synthesize", 0.0)
        if len(names) == 1:
            _synthesize(paths.analysis, name, paths.data, synth, lambda f, i: report("synthesize", f, i), cancel, lock)
        else:
            from pvchat.synth.compose import compose_dataset
            from pvchat.synth.pipeline import get_synth_recipe
            from pvchat.train.recipe import load_recipes
            from pvchat.train.stages import recipe_path

            clips = int(load_recipes(recipe_path(recipe)).get("compose_clips", COMPOSED_CLIPS))
            compose_dataset(list(zip(names, analyses)), paths.data, clips=clips, progress=False,
                            qa=get_synth_recipe(synth).qa)
    data = read_json(paths.data / "summary.json")
    report("synthesize", 1.0, {"clips": data.get("clips"), "qa_pairs": data.get("qa_pairs")})

    # 3. train both stages from the shared subject-free base (checkpointed: a re-run resumes)
    check_cancel("stage1")
    if base is not None:
        return _learn_on_base(Path(base), names, paths, recipe, data, settings, summary, report, cancel, t0)
    base = build_base(base_dir(preset, home), preset, BASE_SEED)
    from pvchat.faces.analyze import load_embedding

    model = with_subjects(base, names, seed=BASE_SEED, faces={n: load_embedding(a) for n, a in zip(names, analyses)})
    report("stage1", 0.0)

    def on_step(stage: str, step: int, total: int, record: dict) -> None:
        report(stage, step / max(total, 1), {**record, "total": total})

    learn_stages(model, paths.data / "manifest.jsonl", paths.run, recipe=recipe, subjects=names, resume=True,
                 progress=False, on_step=on_step, cancel=cancel)
    metrics = {}
    for stage in ("stage1", "stage2"):
        last = _last_record(paths.run / stage / "log.jsonl")
        metrics[stage] = {k: last[k] for k in ("step", "loss", "lm", "spr", "hae") if k in last}
        report(stage, 1.0, last)

    # 4. the concept pack
    check_cancel("pack")
    report("pack", 0.0)
    card = write_pack(model, names, paths.pack, base, train_last_k=r2.train_last_k, data=data, metrics=metrics,
                      reference=settings["reference"] or ", ".join(settings["references"]),
                      extra={"person": summary["subject"], "recipe": settings["recipe"], "synthesize": synth,
                             "learn_seconds": round(time.perf_counter() - t0, 1)})
    report("pack", 1.0, {"size_bytes": card["size_bytes"]})
    return card


def forget(name: str, home: Path = DEFAULT_HOME) -> list[Path]:
    """Delete every file derived from ``name`` (analysis, data, runs, pack); returns what was deleted.

    People learned from the same reference video analysed it too, and their analyses hold every
    person of it: ``name``'s faces there (``analysis/person_K/``, which their learning does not use)
    and the contact sheets showing everyone go as well. A person learned together with others
    (``people/Ann+Ben``) shares one model with them: that whole group goes. The reference video itself
    is the user's and stays. An unknown name, or one being learned right now, is an :class:`InputError`.
    """
    from pvchat.locks import hold

    paths = person_paths(name, home)
    if not paths.root.is_dir():
        paths = _group_of(name, Path(home)) or paths
    if not paths.root.is_dir():
        raise _unknown_person(name, Path(home))
    with hold(paths.root / LOCK, f"{name} is being learned right now; stop that first", wait=0):
        reference, index = _reference_person(paths)
        deleted = sorted(p for p in paths.root.iterdir() if p.name != LOCK) + [paths.root]
        shutil.rmtree(paths.root)
    for other in sorted((Path(home) / "people").glob("*")) if reference is not None else []:
        if other != paths.root and _reference_person(PersonPaths(other))[0] == reference:
            subject = _reference_person(PersonPaths(other))[1]
            for path in (other / "analysis" / f"person_{index}", other / "analysis" / "contact_sheet.png"):
                if subject == index or not path.exists():
                    continue
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                deleted.append(path)
    return deleted


def _reference_person(paths: PersonPaths) -> tuple[str | None, int]:
    """(the reference video a person was learned from, their number in its analysis), as far as known."""
    try:
        settings = json.loads(paths.settings.read_text())
        reference = str(settings["reference"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, 0
    try:
        index = int(json.loads((paths.analysis / "summary.json").read_text())["subject"])
    except (OSError, ValueError, KeyError, TypeError):
        index = settings.get("person") if isinstance(settings.get("person"), int) else 0
    return reference, index


# ----------------------------------------------------------------------------- chat
def _pack_path(spec: str | Path, home: Path) -> Path:
    """A pack directory from a learned person's name (looked up first), a pack or a person directory."""
    name = str(spec)
    if NAME_PATTERN.match(name) and (home / "people" / name / "pack" / CARD).is_file():
        return home / "people" / name / "pack"
    group = _group_of(name, home) if NAME_PATTERN.match(name) else None
    if group is not None:  # learned together with others: their shared pack
        return group.pack
    for candidate in (Path(spec), Path(spec) / "pack"):
        if (candidate / CARD).is_file():
            return candidate
    if Path(spec).is_dir():
        return Path(spec)  # load_pack says what is missing
    if NAME_PATTERN.match(name):
        raise _unknown_person(name, home)
    raise InputError(f"{spec}: neither a learned person's name nor a concept pack directory")


def _base_for(pack: ConceptPack, home: Path) -> Path:
    """The base a pack was learned on: its recorded path, else ``HOME/base/<preset>`` (rebuilt when missing)."""
    from pvchat.train.stages import build_base

    recorded = Path(pack.card["base"]["path"])
    if (recorded / WEIGHTS_NAME).is_file():
        return recorded
    preset = pack.card["config"].get("preset") or pack.card["base"].get("preset")
    if not preset:
        raise InputError(f"{pack.path}: its base model {recorded} is gone and its preset is unknown; pass base=")
    return build_base(base_dir(preset, home), preset, BASE_SEED)


def _pack_paths(packs, home: Path) -> list[Path]:
    specs = [packs] if isinstance(packs, (str, Path)) else list(packs)
    if not specs:
        raise InputError("Chat needs at least one learned person (a name or a concept pack directory)")
    chosen, seen = [], set()
    for spec in specs:  # two names of people learned together lead to their one pack: load it once
        path = _pack_path(spec, home)
        if path not in chosen or str(spec) in seen:
            chosen.append(path)
        seen.add(str(spec))
    return chosen


def _load_packs(packs, home: Path) -> list[ConceptPack]:
    """The packs named by ``packs`` (names or directories), each person in one of them only."""
    loaded = [load_pack(p) for p in _pack_paths(packs, home)]
    seen: dict[str, Path | None] = {}
    for pk in loaded:
        for n in pk.names:
            if n in seen:
                raise InputError(f"{n} is in two packs ({seen[n]} and {pk.path}); load one of them")
            seen[n] = pk.path
    return loaded


def _on_user_base(packs, home: Path, base: Path | None) -> bool:
    """Whether a chat is over a user's video LLM (``learn(..., base=DIR)``) rather than a preset's base."""
    if base is not None:
        return (Path(base) / "config.json").is_file() and not (Path(base) / CONFIG_NAME).is_file()
    return "family" in read_card(_pack_paths(packs, home)[0])["base"]


class Chat:
    """Questions about videos, with one or more learned people.

    Packs learned on a user's video LLM (``learn(..., base=DIR)``) give a :class:`BaseChat`.

    Args:
        packs: learned people by name (found in ``HOME/people``) or pack directories.
        home: the workspace.
        base: the base model directory (default: the one the packs were learned on).
        max_new_tokens: longest answer, in tokens.
        device: "cpu", "cuda", ...; default CUDA when available.
    """

    def __new__(cls, packs: list[str], home: Path = DEFAULT_HOME, base: Path | None = None, *args, **kwargs):
        if cls is Chat and _on_user_base(packs, Path(home), base):
            return super().__new__(BaseChat)
        return super().__new__(cls)

    def __init__(self, packs: list[str], home: Path = DEFAULT_HOME, base: Path | None = None,
                 max_new_tokens: int = 64, device: str | None = None):
        from pvchat.model.pvchat import PVChat

        home = Path(home)
        loaded = _load_packs(packs, home)
        base = Path(base) if base is not None else _base_for(loaded[0], home)
        info = base_info(base)
        config = read_json(base / CONFIG_NAME)["config"]
        for pk in loaded:
            check_fits(pk, info, config)
        if info["subjects"]:
            raise InputError(f"{base}: a base model has no people, this one has {info['subjects']}")
        self.home, self.base, self.max_new_tokens = home, base, max_new_tokens
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = PVChat.from_pretrained(base)
        for pk in loaded:
            add_pack_subjects(model, pk)
        self.model = model.to(self.device).eval()
        self.packs = loaded
        self.people: list[str] = list(model.subjects)
        self._owner = {n: pk for pk in loaded for n in pk.names}
        self._active: ConceptPack | None = None
        self._features: OrderedDict[tuple, tuple[np.ndarray, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        tok = model.tokenizer
        special = {t.content for t in tok.added_tokens_decoder.values() if t.special}
        self._reserved = sorted(set(RESERVED) | set(tok.all_special_tokens) | special)
        self._max_positions = getattr(model.llm.config, "max_position_embeddings", None)
        self._activate(loaded[0])  # the model is whole from the start: the first pack's shared tensors

    # --------------------------------------------------------------- checks
    def _check_text(self, text: str, what: str = "a question") -> None:
        if not isinstance(text, str):
            raise InputError(f"{what} must be text, got {type(text).__name__}")
        for tok in self._reserved:
            if tok in text:
                raise InputError(f"{tok!r} is reserved and cannot appear in {what}")

    def _people_in(self, question: str, history: list[tuple[str, str]]) -> tuple[list[str], ConceptPack]:
        """Names the conversation refers to, and the pack whose shared tensors answer it."""
        if not question.strip():
            raise InputError("the question is empty")
        for q, a in history:
            self._check_text(q, "the history")
            self._check_text(a, "the history")
        self._check_text(question)
        people = self.model.template.subjects_in([q for q, _ in history] + [question], self.people)
        packs = list(dict.fromkeys(self._owner[n] for n in people))
        if len(packs) > 1:
            groups = " and ".join("/".join(f"<{n}>" for n in people if self._owner[n] is pk) for pk in packs)
            raise InputError(f"{groups} were learned separately (one pack each), so one question cannot ask "
                             f"about them together; learn them together in one pack for that")
        return people, packs[0] if packs else self.packs[0]

    @staticmethod
    def _history(history) -> list[tuple[str, str]]:
        out = []
        for turn in history or []:
            if not isinstance(turn, (tuple, list)) or len(turn) != 2:
                raise InputError(f"history turns are (question, answer) pairs, got {turn!r:.60}")
            out.append((turn[0], turn[1]))
        return out

    # ------------------------------------------------------------- internals
    def _activate(self, pack: ConceptPack) -> None:
        if self._active is not pack:
            apply_shared(self.model, pack)
            self._active = pack
            if any(k.startswith("vision.") for k in pack.shared):
                self._features.clear()  # the pack trained vision blocks: cached features are stale

    def _video(self, video: Path) -> tuple[np.ndarray, torch.Tensor]:
        """(frames (T, H, W, 3) uint8, vision features (1, T, N_v, C_v)) of a video, cached."""
        video = Path(video)
        stat = video.stat() if video.is_file() else None
        key = (str(video.resolve()), stat.st_mtime_ns if stat else None, stat.st_size if stat else None)
        if key not in self._features:
            from pvchat.video import check_video

            check_video(video)  # the one rule for what a video is (pvchat.video.check_video)
            frames, pixels = self.model.read_video(video)  # InputError if unreadable
            with torch.no_grad():
                self._features[key] = (frames, self.model.encode_video(pixels.unsqueeze(0).to(self.device)))
            while len(self._features) > 4:
                self._features.popitem(last=False)
        self._features.move_to_end(key)
        return self._features[key]

    def _prompt(self, video: Path, question: str, history) -> tuple[np.ndarray, list[str], torch.Tensor, list]:
        history = self._history(history)
        people, pack = self._people_in(question, history)
        self._activate(pack)
        frames, features = self._video(video)
        enc = self.model.prepare(question, history=history)
        if self._max_positions and len(enc.input_ids) + self.max_new_tokens > self._max_positions:
            raise InputError(f"the conversation is too long ({len(enc.input_ids)} tokens; the model reads "
                             f"{self._max_positions - self.max_new_tokens} before answering); start a new one")
        return frames, people, features, history

    # ------------------------------------------------------------------ API
    def frames(self, video: Path) -> np.ndarray:
        """(T, H, W, 3) uint8: the frames the model reads from ``video`` (as :meth:`ask` and :meth:`stream`)."""
        with self._lock:
            return self._video(video)[0]

    def stream(self, video: Path, question: str, history: list[tuple[str, str]] | None = None) -> Iterator[str]:
        """Yield the answer as it grows, one token at a time (the last value is the whole answer).

        The chat is locked while the generator runs: iterate it to the end (or close it).
        """
        with self._lock:
            _, _, features, history = self._prompt(video, question, history)
            yield from self.model.stream(question, features, history, self.max_new_tokens)

    def ask(self, video: Path, question: str, history: list[tuple[str, str]] | None = None) -> Answer:
        """Answer ``question`` about ``video``; ``history`` holds earlier (question, answer) turns."""
        with self._lock:
            frames, people, features, history = self._prompt(video, question, history)
            text = self.model.generate([question], vision_features=features, histories=[history],
                                       max_new_tokens=self.max_new_tokens)[0]
        return Answer(text=text, frames=frames, people=people)

    def routed_layers(self) -> list[str]:
        """Names of the routed attention modules, in the order the Q-former reports their stats."""
        names = []
        for i, layer in enumerate(self.model.qformer.layers):
            for part, attn in (("self", layer.self_attn), ("cross", layer.cross_attn)):
                if attn is not None and attn.routing != "mha":
                    names.append(f"layer {i} {part}")
        return names

    @torch.no_grad()
    def head_activation(self, video: Path, question: str) -> dict:
        """Fig. 7: per routed layer, each routed head's activation rate with the people's query blocks
        in play (``with``) and masked out (``without``)."""
        with self._lock:
            people, pack = self._people_in(question, [])
            if not people:
                raise InputError(f"name a person in the question, e.g. <{self.people[0]}>")
            self._activate(pack)
            _, features = self._video(video)
            mask = torch.tensor([[n in people for n in self.people]], device=self.device)
            with_ = self.model.visual_tokens(features, mask).stats
            without = self.model.visual_tokens(features, torch.zeros_like(mask)).stats
        return {"layers": self.routed_layers(), "people": people,
                "with": [[round(float(a), 4) for a in s.active_rate] for s in with_],
                "without": [[round(float(a), 4) for a in s.active_rate] for s in without]}


class BaseChat(Chat):
    """:class:`Chat` over a pack learned on a user's video LLM (:mod:`pvchat.model.backbones`).

    One pack at a time (its LoRA and routers are the model's); the base is the one the pack records
    unless ``base`` is given, and must be the same (config hash, family, settings). A history goes
    into the base's own chat template (decoder-only families; InstructBLIP-Video has none).
    """

    def __init__(self, packs: list[str], home: Path = DEFAULT_HOME, base: Path | None = None,
                 max_new_tokens: int = 64, device: str | None = None):
        from pvchat.model.backbones import BackboneConfig, load_base

        loaded = _load_packs(packs, Path(home))
        if len(loaded) > 1:
            raise InputError("packs learned on a video LLM base load one at a time; learn the people together "
                             "to ask about them in one question")
        settings = {k: v for k, v in loaded[0].card["config"].items() if k != "family"}
        base = Path(base) if base is not None else Path(loaded[0].card["base"]["path"])
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" else None
        model = load_base(base, BackboneConfig.from_dict(settings), dtype=dtype)
        model.apply_pack(loaded[0])
        self.model = model.to(self.device).eval()
        self.home, self.base, self.max_new_tokens, self.packs = Path(home), base, max_new_tokens, loaded
        self.people = list(model.people)
        self._lock = threading.Lock()

    def frames(self, video: Path) -> np.ndarray:
        from pvchat.video import check_video, read_frames_uniform

        check_video(video)
        return read_frames_uniform(video, self.model.settings.num_frames)

    def ask(self, video: Path, question: str, history: list[tuple[str, str]] | None = None) -> Answer:
        history = self._history(history)
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        with self._lock:
            frames = self.frames(video)
            people = self.model.in_play(" ".join([q for q, _ in history] + [question]))
            text = self.model.answer(frames, question, self.max_new_tokens, history=history)
        return Answer(text=text, frames=frames, people=people)

    def stream(self, video: Path, question: str, history: list[tuple[str, str]] | None = None) -> Iterator[str]:
        yield self.ask(video, question, history).text

    def routed_layers(self) -> list[str]:
        return [f"routed attention {i}" for i in range(len(self.model.gates))]

    def head_activation(self, video: Path, question: str) -> dict:
        raise InputError("head activation maps are drawn for the presets' Q-former, not yet for a video LLM base")


def pack_names(packs: list[str] | None) -> list[str]:
    """``--pack A --pack B,C`` → ["A", "B", "C"]."""
    return [s.strip() for p in packs or [] for s in str(p).split(",") if s.strip()]

