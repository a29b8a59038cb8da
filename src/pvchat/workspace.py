"""The workspace: where learn puts people and base models, and how names find them.

A workspace (``HOME``, default ``$PVCHAT_HOME`` or ``./workspace``) holds::

    base/<preset>/            the subject-free base model every person is learned from
    people/<name>/learn.json  the settings learn was started with (a re-run resumes only with the same)
                  analysis/   faces and people of the reference video
                  data/       the synthesized training set
                  run/        stage1/, stage2/: logs, plots, checkpoints
                  pack/       the concept pack (pack.safetensors + card.json)
    people/<A>+<B>/           two or three people learned together (one model, one pack)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pvchat.errors import InputError
from pvchat.model.prompt import NAME_PATTERN, validate_name
from pvchat.pack import CARD, dir_size, read_card

DEFAULT_HOME: Path = Path(os.environ.get("PVCHAT_HOME", "workspace"))
LOCK = ".lock"  # people/<name>/.lock: held while learn works on that person (pvchat.locks)
BASE_SEED = 0  # every base model of a workspace is built from its preset with this seed
GROUP_JOIN = "+"  # people/<A>+<B>/: two or three people learned together (never a valid name)


@dataclass(frozen=True)
class PersonPaths:
    """Where learn puts everything about one person (or people learned together)."""

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

    def analyses(self, names: list[str]) -> list[Path]:
        """The analysis directory of each person: ``analysis/``, or ``analysis/<name>/`` for people learned together."""
        return [self.analysis] if len(names) == 1 else [self.analysis / n for n in names]

    def started(self) -> bool:
        """Whether learn derived anything here yet."""
        return any(p.exists() for p in (self.analysis, self.data, self.run, self.pack))


def person_paths(name: str, home: Path = DEFAULT_HOME) -> PersonPaths:
    return PersonPaths(Path(home) / "people" / validate_name(name))


def group_paths(names: list[str], home: Path = DEFAULT_HOME) -> PersonPaths:
    """One person's paths, or those of people learned together (``people/Ann+Ben``)."""
    return PersonPaths(Path(home) / "people" / GROUP_JOIN.join(validate_name(n) for n in names))


def group_of(name: str, home: Path) -> PersonPaths | None:
    """The learned group ``name`` belongs to, if any."""
    people = Path(home) / "people"
    for d in sorted(people.glob(f"*{GROUP_JOIN}*")) if people.is_dir() else []:
        if name in d.name.split(GROUP_JOIN) and (d / "pack" / CARD).is_file():
            return PersonPaths(d)
    return None


def base_dir(preset: str, home: Path = DEFAULT_HOME) -> Path:
    return Path(home) / "base" / preset


def known(home: Path) -> list[str]:
    """Directory names under ``HOME/people`` that hold a concept pack."""
    people = Path(home) / "people"
    return sorted(d.name for d in people.iterdir() if (d / "pack" / CARD).is_file()) if people.is_dir() else []


def unknown_person(name: str, home: Path) -> InputError:
    return InputError(f"no learned person {name!r} in {home}; known: {', '.join(known(home)) or 'none'} "
                      f"(learn one with 'pvchat learn REFERENCE --name NAME')")


def list_people(home: Path = DEFAULT_HOME) -> list[dict]:
    """The cards of every learned person in ``home``, by name, with ``pack`` (its directory) and
    ``size_bytes`` (on disk). A damaged card is listed as ``{"name", "names", "pack", "error"}``."""
    out = []
    for name in known(Path(home)):
        pack = Path(home) / "people" / name / "pack"
        try:
            card = read_card(pack)
        except InputError as e:
            card = {"name": name, "names": [name], "error": str(e)}
        out.append({**card, "pack": str(pack), "size_bytes": dir_size(pack)})
    return out


def pack_path(spec: str | Path, home: Path) -> Path:
    """A pack directory from a learned person's name (looked up first), a pack or a person directory."""
    name = str(spec)
    if NAME_PATTERN.match(name) and (home / "people" / name / "pack" / CARD).is_file():
        return home / "people" / name / "pack"
    group = group_of(name, home) if NAME_PATTERN.match(name) else None
    if group is not None:  # learned together with others: their shared pack
        return group.pack
    for candidate in (Path(spec), Path(spec) / "pack"):
        if (candidate / CARD).is_file():
            return candidate
    if Path(spec).is_dir():
        return Path(spec)  # load_pack says what is missing
    if NAME_PATTERN.match(name):
        raise unknown_person(name, home)
    raise InputError(f"{spec}: neither a learned person's name nor a concept pack directory")


def reference_person(paths: PersonPaths) -> tuple[str | None, int]:
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
