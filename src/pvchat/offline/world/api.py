"""The offline world as a Python API (the ``pvchat world`` command is :mod:`pvchat.commands.world`).

A world directory holds::

    world.json              settings (seed, counts, frame size, fps, frames per clip)
    people.json             every person: face, name, hair, default outfit, hard negatives
    embeddings.safetensors  (N, 128) dlib embeddings of the people's portraits (row order = people.json)
    clips.jsonl             one line per clip: path, seed, spec, ground truth per person and frame
    clips/cNNNN.mp4         the query clips
    references.jsonl        ground truth of the reference videos (when written)
    references/pNN.mp4      one reference video per person (one person, talking/nodding/standing)
    people.png              contact sheet: every person's portrait with id and name

Everything is deterministic from the seed; only JSON and safetensors are read back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pvchat.errors import ConfigError, InputError
from pvchat.io import atomic_dir, load_tensors, read_json, read_jsonl, save_tensors, write_json, write_text
from pvchat.offline.world.faces import available_faces, folder_faces
from pvchat.offline.world.negatives import hard_negatives, person_embeddings, portrait
from pvchat.offline.world.people import Person, make_people, people_from_folder
from pvchat.offline.world.render import OUTFIT_CHANGE, SIZE, Cast, ClipSpec, Look, Rendered, plan_clip, render_clip
from pvchat.video import write_video

FORMAT_VERSION = 1
REFERENCE_ACTIONS = ("talking", "nodding", "standing")
NEGATIVES_K = 5


def _seed(*parts: int) -> int:
    return int(np.random.default_rng(list(parts)).integers(0, 2**31 - 1))


@dataclass
class World:
    """People plus how to render them; ``root`` is the directory it lives in (None: in memory)."""

    people: list[Person]
    seed: int = 0
    size: tuple[int, int] = SIZE
    num_frames: int = 24
    fps: float = 8.0
    max_people_per_clip: int = 3
    root: Path | None = None
    negatives: dict[str, list[dict]] = field(default_factory=dict)
    variation: float = 0.0  # how much a face differs between query clips and the reference (0..1)
    faces_dir: str | None = None  # the user's photo folder the people come from (None: the offline faces)
    outfit_change: float = OUTFIT_CHANGE  # the chance a person wears other clothes than their default in a query clip

    @property
    def by_id(self) -> dict[str, Person]:
        return {p.id: p for p in self.people}

    def person(self, key: str) -> Person:
        """A person by id ("p03") or name ("Alex"); InputError listing the people otherwise."""
        for p in self.people:
            if key in (p.id, p.name):
                return p
        raise InputError(f"no person {key!r} in this world; people: "
                         + ", ".join(f"{p.id} ({p.name})" for p in self.people))

    def reference_spec(self, person_id: str, num_frames: int = 32) -> ClipSpec:
        """The reference video of a person: alone, centre, front row, default outfit, 32 frames."""
        person = self.person(person_id)
        idx = self.people.index(person)
        seed = _seed(self.seed, 3, idx)
        rng = np.random.default_rng(seed)
        action = str(rng.choice(REFERENCE_ACTIONS, p=[0.5, 0.25, 0.25]))
        cast = (Cast(person=person.id, action=action, slot="centre", depth="front", outfit=None,
                     scale=float(rng.uniform(1.0, 1.1)), light=float(rng.uniform(-0.1, 0.1))),)
        look = Look(gain=float(rng.uniform(0.92, 1.08)), warmth=float(rng.uniform(-0.04, 0.04)), blur=0.0,
                    noise=float(rng.uniform(0.0, 2.0)))
        return ClipSpec(clip_id=f"ref-{person.id}", seed=seed, cast=cast,
                        background=str(rng.choice(["living_room", "office", "kitchen"])),
                        camera=str(rng.choice(["static", "handheld"])), look=look, num_frames=num_frames,
                        fps=self.fps, size=self.size)

    def render_reference(self, person_id: str) -> Rendered:
        """Frames and ground truth of a person's reference video."""
        return render_clip(self.reference_spec(person_id), self.by_id)

    def clip_spec(self, index: int, must_include: str | None = None) -> ClipSpec:
        """The ``index``-th query clip of this world (deterministic in the world seed and index)."""
        return plan_clip(self.people, clip_id=f"c{index:04d}", seed=_seed(self.seed, 5, index),
                         max_people=self.max_people_per_clip, num_frames=self.num_frames, fps=self.fps,
                         size=self.size, must_include=must_include, variation=self.variation,
                         outfit_change=self.outfit_change)

    def render_clip(self, spec: ClipSpec | int) -> Rendered:
        """Render a clip spec (or the clip with that index)."""
        spec = self.clip_spec(spec) if isinstance(spec, int) else spec
        return render_clip(spec, self.by_id)

    def portrait(self, person_id: str) -> np.ndarray:
        """(300, 240, 3) uint8 RGB neutral portrait of a person (what embeddings are taken from)."""
        return portrait(self.person(person_id))

    def clips(self) -> list[dict]:
        """The ground truth of every clip written to this world's directory."""
        return read_jsonl(self._root() / "clips.jsonl")

    def references(self) -> list[dict]:
        """The ground truth of every reference video written (empty list if none were)."""
        path = self._root() / "references.jsonl"
        return read_jsonl(path) if path.is_file() else []

    def embeddings(self) -> np.ndarray:
        """(N, 128) float32 portrait embeddings, row order = ``people``."""
        return load_tensors(self._root() / "embeddings.safetensors")["embeddings"].numpy()

    def _root(self) -> Path:
        if self.root is None:
            raise InputError("this world has no directory (build it with an out_dir or load_world)")
        return self.root

    def settings(self) -> dict:
        return {"format": FORMAT_VERSION, "seed": self.seed, "size": list(self.size), "num_frames": self.num_frames,
                "fps": self.fps, "max_people_per_clip": self.max_people_per_clip, "people": len(self.people),
                "variation": self.variation, "faces_dir": self.faces_dir, "outfit_change": self.outfit_change}




def make_world(people: int = 20, seed: int = 0, max_people_per_clip: int = 3, num_frames: int = 24, fps: float = 8.0,
               size: tuple[int, int] = SIZE, faces: list[str] | None = None, variation: float = 0.0,
               faces_dir: str | Path | None = None) -> World:
    """An in-memory world (no files, no embeddings yet); ``faces`` restricts whose faces it uses
    (e.g. ``face_split("held_out")``). ``variation`` (0..1) varies each face in the query clips
    from the reference (:func:`pvchat.offline.world.render.face_look`); ``faces_dir`` takes the people
    from a photo folder ``DIR/<person>/*.jpg`` instead of the offline faces."""
    _check(people=people, clips=0, max_people=max_people_per_clip, num_frames=num_frames, fps=fps,
           variation=variation, faces_dir=faces_dir)
    if faces_dir is not None:
        crowd = people_from_folder(faces_dir, seed, n=people)
    else:
        crowd = make_people(people, seed, faces=faces)
    return World(people=crowd, seed=seed, size=tuple(size), num_frames=num_frames, fps=fps,
                 max_people_per_clip=max_people_per_clip, variation=float(variation),
                 faces_dir=str(Path(faces_dir).resolve()) if faces_dir is not None else None)


def _check(people: int, clips: int, max_people: int, num_frames: int, fps: float, variation: float = 0.0,
           faces_dir: str | Path | None = None) -> None:
    if not 0.0 <= variation <= 1.0:
        raise ConfigError(f"variation must be between 0 and 1, got {variation}")
    limit = len(folder_faces(faces_dir)) if faces_dir is not None else len(available_faces())
    where = f"person folders in {faces_dir}" if faces_dir is not None else "distinct real faces available offline"
    if not 1 <= people <= limit:
        raise ConfigError(f"people must be between 1 and {limit} ({where}), got {people}")
    if clips < 0:
        raise ConfigError(f"clips must be >= 0, got {clips}")
    if not 1 <= max_people <= 3:
        raise ConfigError(f"max_people_per_clip must be 1, 2 or 3, got {max_people}")
    if num_frames < 1 or fps <= 0:
        raise ConfigError(f"num_frames must be >= 1 and fps > 0, got {num_frames} and {fps}")


def contact_sheet(world: World, columns: int = 8, tile: tuple[int, int] = (160, 200)) -> np.ndarray:
    """(H, W, 3) uint8 RGB grid of every person's portrait labelled with id and name."""
    tw, th = tile
    label_h = 34
    rows = -(-len(world.people) // columns)
    sheet = np.full((rows * (th + label_h), min(columns, len(world.people)) * tw, 3), 24, np.uint8)
    for k, p in enumerate(world.people):
        r, c = divmod(k, columns)
        img = cv2.resize(portrait(p), (tw, th), interpolation=cv2.INTER_AREA)
        y, x = r * (th + label_h), c * tw
        sheet[y:y + th, x:x + tw] = img
        cv2.putText(sheet, f"{p.id} {p.name}", (x + 4, y + th + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (240, 240, 240), 1,
                    cv2.LINE_AA)
        face_label = Path(p.face.removeprefix("file:")).name
        cv2.putText(sheet, face_label, (x + 4, y + th + 29), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (170, 170, 170), 1, cv2.LINE_AA)
    return sheet


def build_world(out_dir: str | Path, people: int = 20, clips: int = 100, seed: int = 0, max_people_per_clip: int = 3,
                references: bool = True, overwrite: bool = False, num_frames: int = 24, fps: float = 8.0,
                size: tuple[int, int] = SIZE, progress: bool = False, variation: float = 0.0,
                faces_dir: str | Path | None = None) -> World:
    """Make a world and write it to ``out_dir`` atomically (see the module docstring for the layout;
    :func:`make_world` for ``variation`` and ``faces_dir``)."""
    _check(people=people, clips=clips, max_people=max_people_per_clip, num_frames=num_frames, fps=fps,
           variation=variation, faces_dir=faces_dir)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise InputError(f"{out_dir} already exists (pass overwrite to replace it)")
    world = make_world(people, seed, max_people_per_clip, num_frames, fps, size, variation=variation, faces_dir=faces_dir)
    total = people + clips + (people if references else 0)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, tqdm(total=total, desc="world", unit="item",
                                                              disable=not progress) as bar:
        bar.set_postfix_str("faces")
        emb_rows = []
        for p in world.people:  # one at a time so the bar moves
            emb_rows.append(person_embeddings([p])[0])
            bar.update(1)
        emb = np.stack(emb_rows)
        world.negatives = hard_negatives(world.people, emb, k=NEGATIVES_K)
        save_tensors(tmp / "embeddings.safetensors", {"embeddings": _tensor(emb)},
                     metadata={"ids": json.dumps([p.id for p in world.people]), "source": "dlib portrait"})
        ref_rows = []
        if references:
            bar.set_postfix_str("references")
            (tmp / "references").mkdir()
            for p in world.people:
                r = world.render_reference(p.id)
                rel = f"references/{p.id}.mp4"
                write_video(tmp / rel, r.frames, fps=fps)
                ref_rows.append({"path": rel, "person": p.id, **r.truth})
                bar.update(1)
        rows = []
        if clips:
            bar.set_postfix_str("clips")
            (tmp / "clips").mkdir()
        for i in range(clips):
            r = world.render_clip(i)
            rel = f"clips/c{i:04d}.mp4"
            write_video(tmp / rel, r.frames, fps=fps)
            rows.append({"path": rel, **r.truth})
            bar.update(1)
        people_json = []
        for p in world.people:
            d = p.to_dict()
            d["hard_negatives"] = world.negatives[p.id]
            d["reference"] = f"references/{p.id}.mp4" if references else None
            d["clips"] = [r["path"] for r in rows if p.id in r["person_ids"]]
            people_json.append(d)
        write_json(tmp / "people.json", {"format": FORMAT_VERSION, "people": people_json})
        write_json(tmp / "world.json", {**world.settings(), "clips": clips, "references": references,
                                        "faces_available": len(available_faces())})
        write_text(tmp / "clips.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        if references:
            write_text(tmp / "references.jsonl", "".join(json.dumps(r) + "\n" for r in ref_rows))
        cv2.imwrite(str(tmp / "people.png"), cv2.cvtColor(contact_sheet(world), cv2.COLOR_RGB2BGR))
    world.root = out_dir
    return world


def _tensor(a: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(a))


def load_world(path: str | Path) -> World:
    """A world written by :func:`build_world` (reads world.json and people.json only)."""
    path = Path(path)
    settings = read_json(path / "world.json")
    if not isinstance(settings, dict) or settings.get("format") != FORMAT_VERSION:
        raise InputError(f"{path}/world.json: not a pvchat world (format {FORMAT_VERSION} expected)")
    data = read_json(path / "people.json")
    try:
        people = [Person.from_dict(d) for d in data["people"]]
        negatives = {d["id"]: d["hard_negatives"] for d in data["people"]}
        return World(people=people, seed=int(settings["seed"]), size=tuple(settings["size"]),
                     num_frames=int(settings["num_frames"]), fps=float(settings["fps"]),
                     max_people_per_clip=int(settings["max_people_per_clip"]), root=path, negatives=negatives,
                     variation=float(settings.get("variation", 0.0)), faces_dir=settings.get("faces_dir"),
                     outfit_change=float(settings.get("outfit_change", OUTFIT_CHANGE)))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: malformed world files ({type(e).__name__}: {e})") from None
