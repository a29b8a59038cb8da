"""The offline world: people made of real faces, scenes, actions and clips with ground truth.

No people videos can be downloaded here, so pvchat renders its own from the real faces that ship
with its dependencies (the scikit-image LFW subset, scikit-image's astronaut and matplotlib's
Grace Hopper). The world is what the tests, the demo and the benchmark stand on: a person has a
stable identity (their face) while clothing, pose, expression, lighting, scene and camera vary,
and every clip comes with ground truth for existence, appearance, action and location questions.

Python API::

    from pvchat.offline.world import build_world, load_world
    w = build_world("world/", people=20, clips=100, seed=0)
    ref = w.render_reference("p00")          # frames + ground truth
    clip = w.render_clip(w.clip_spec(3))     # or w.render_clip(3)

Command line: ``pvchat world OUT --people 20 --clips 100 --seed 0``.
"""

from pvchat.offline.world.actions import ACTIONS, Action, Pose
from pvchat.offline.world.api import World, build_world, contact_sheet, load_world, make_world
from pvchat.offline.world.faces import available_faces, load_face
from pvchat.offline.world.negatives import hard_negatives, nearest, person_embeddings, portrait
from pvchat.offline.world.people import Outfit, Person, make_people, random_outfit
from pvchat.offline.world.render import (
    Cast,
    ClipSpec,
    Look,
    Rendered,
    location_phrase,
    plan_clip,
    position_word,
    render_clip,
)
from pvchat.offline.world.scenes import BACKGROUNDS, CAMERAS

__all__ = [
    "ACTIONS", "Action", "BACKGROUNDS", "CAMERAS", "Cast", "ClipSpec", "Look", "Outfit", "Person", "Pose", "Rendered",
    "World", "available_faces", "build_world", "contact_sheet", "hard_negatives", "load_face", "load_world",
    "location_phrase", "make_people", "make_world", "nearest", "person_embeddings", "plan_clip", "portrait",
    "position_word", "random_outfit", "render_clip",
]
