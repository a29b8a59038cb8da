"""The offline world's people as a negative pool: what the commands pass to synthesis when the user
names no pool of their own (``pvchat synthesize`` without ``--pool``), and what
:func:`pvchat.learn.default_pool` builds when a caller of the library passes none."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from pvchat.offline.world.api import make_world
from pvchat.synth.negatives import PoolItems


def world_pool(people: int = 60, seed: int = 1) -> PoolItems:
    """Portraits of the offline world's people (real faces: scikit-image's LFW subset, astronaut,
    Grace Hopper), one neutral portrait each, as ``(source, frames)``."""
    world = make_world(people=people, seed=seed)
    return [(f"world:{p.id}", [world.portrait(p.id)]) for p in world.people]


def save_pool(world, people, directory: Path) -> Path:
    """A pool directory (what ``--pool`` and ``learn(pool=...)`` take): one neutral portrait of each
    of ``people`` of ``world``, as ``ID.png``; returns ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for p in people:
        Image.fromarray(world.portrait(p.id)).save(directory / f"{p.id}.png")
    return directory
