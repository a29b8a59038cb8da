"""Hard negatives: for a subject, the other people whose faces dlib finds most alike (paper §3.2).

The paper retrieves the top-k most similar faces from a large pool; here the pool is the world's
people. Each person is embedded once from a neutral *portrait* (the person alone, facing the
camera, default outfit, plain background) with :class:`pvchat.faces.FaceEngine`; negatives are the
nearest other people by euclidean distance of the 128-d dlib embeddings.
"""

from __future__ import annotations

import numpy as np

from pvchat.errors import InputError
from pvchat.faces import FaceEngine
from pvchat.offline.world.actions import Pose
from pvchat.offline.world.figure import draw_person
from pvchat.offline.world.people import Person

PORTRAIT_SIZE = (240, 300)  # (w, h)
PORTRAIT_UNIT = 90.0  # face width in px


def portrait(person: Person) -> np.ndarray:
    """(300, 240, 3) uint8 RGB: the person alone, neutral pose, default outfit, grey backdrop."""
    w, h = PORTRAIT_SIZE
    frame = np.full((h, w, 3), (196, 200, 206), np.uint8)
    idmap = np.zeros((h, w), np.uint8)
    draw_person(frame, idmap, 1, person, person.outfit, Pose(), (w / 2, 0.38 * h), PORTRAIT_UNIT)
    return frame


def person_embeddings(people: list[Person], engine=None) -> np.ndarray:
    """(N, 128) float32 dlib embeddings of the people's portraits, in the order given."""
    engine = engine or FaceEngine()
    out = []
    for p in people:
        faces = engine.detect(portrait(p), embed=True)
        if not faces:
            raise InputError(f"no face found in the portrait of {p.id} ({p.face})")
        out.append(faces[0].embedding)
    return np.stack(out).astype(np.float32)


def nearest(embeddings: np.ndarray, subject: int, k: int) -> list[tuple[int, float]]:
    """The ``k`` rows of ``embeddings`` nearest to row ``subject`` (itself excluded): (row, distance)."""
    d = np.linalg.norm(embeddings - embeddings[subject], axis=1)
    d[subject] = np.inf
    order = np.argsort(d, kind="stable")[: max(0, min(k, len(d) - 1))]
    return [(int(i), float(d[i])) for i in order]


def hard_negatives(people: list[Person], embeddings: np.ndarray, k: int = 5) -> dict[str, list[dict]]:
    """For every person: ``[{"id", "name", "distance"}]`` of the ``k`` most similar other people."""
    if len(people) != len(embeddings):
        raise ValueError(f"{len(people)} people but {len(embeddings)} embeddings")
    return {p.id: [{"id": people[j].id, "name": people[j].name, "distance": round(dist, 4)}
                   for j, dist in nearest(embeddings, i, k)]
            for i, p in enumerate(people)}
