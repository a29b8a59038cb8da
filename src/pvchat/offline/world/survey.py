"""The survey behind ``faces_survey.json``: dlib over every offline face source, once.

:func:`survey` finds each LFW face's landmarks and the distinct pool; :func:`eyes_survey` renders
every pool face as a neutral portrait (:func:`pvchat.offline.world.negatives.portrait`) and measures
its eyes. Regenerate the file with ``python -m pvchat.offline.world.survey`` (about a minute);
:mod:`pvchat.offline.world.faces` only reads it.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from pvchat.faces import FaceEngine
from pvchat.faces.quality import assess
from pvchat.offline.world.faces import (
    DISTINCT_MIN,
    EYES_OPEN_MIN,
    LFW_PAD,
    LFW_UPSCALE,
    PHOTOS,
    SURVEY_PATH,
    _lfw_for_dlib,
    _lfw_images,
    _photo,
    _survey,
    load_face,
    template,
)
from pvchat.offline.world.negatives import portrait
from pvchat.offline.world.people import Outfit, Person


def survey() -> dict:
    """Run dlib over every source face: landmarks, and which LFW faces form the distinct pool.

    Returns the dict stored in ``faces_survey.json``. Takes a few seconds.
    """
    engine = FaceEngine(detect_max_side=1024, upsample=1)
    lfw: list[dict] = []
    embeddings: dict[int, np.ndarray] = {}
    for i, g in enumerate(_lfw_images()):
        faces = engine.detect(_lfw_for_dlib(g), embed=True)
        if not faces:
            lfw.append({"index": i, "detected": False})
            continue
        f = faces[0]
        lm = (f.landmarks - LFW_PAD) / LFW_UPSCALE  # back to the 25 px crop
        lfw.append({"index": i, "detected": True, "landmarks": np.round(lm, 3).tolist()})
        embeddings[i] = f.embedding
    pool: list[int] = []
    for rec in lfw:
        if not rec["detected"]:
            continue
        i = rec["index"]
        dists = [float(np.linalg.norm(embeddings[i] - embeddings[j])) for j in pool]
        rec["nearest_in_pool"] = round(min(dists), 4) if dists else None
        if not dists or min(dists) >= DISTINCT_MIN:
            pool.append(i)
    photos = {key: {"landmarks": np.round(engine.detect(_photo(key), embed=False)[0].landmarks, 2).tolist()}
              for key in PHOTOS}
    return {"distinct_min": DISTINCT_MIN, "lfw_upscale": LFW_UPSCALE, "lfw": lfw, "pool": pool, "photos": photos}


def eyes_survey(keys: list[str]) -> dict[str, float]:
    """Smaller eye aspect ratio dlib measures on a neutral rendered portrait of each face.

    Needs the survey file in place (the portrait renders through :func:`load_face`).
    """
    engine = FaceEngine()
    outfit = Outfit("sweater", "grey", "plain", "white", "trousers", "black")
    out = {}
    for key in keys:
        person = Person(id="survey", name="Survey", face=key, skin_tone=(200, 150, 115), hair_style="short",
                        hair_colour="brown", outfit=outfit)
        img = portrait(person)
        faces = engine.detect(img, embed=False)
        if faces:
            q = assess(img, faces[0])
            out[key] = round(min(q.ear_left, q.ear_right), 4)
        else:
            out[key] = 0.0
    return out


def main() -> int:
    """Regenerate faces_survey.json (``python -m pvchat.offline.world.survey``).

    Two passes: landmarks and the distinct pool first; then every pool face is rendered as a
    neutral portrait and kept only if its eyes read as open (EAR >= :data:`EYES_OPEN_MIN`) so the
    quality gate of ``pvchat analyze`` (EAR >= 0.25) can pick a best face for every person.
    """
    data = survey()
    SURVEY_PATH.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    _survey.cache_clear()
    template.cache_clear()
    load_face.cache_clear()
    ears = eyes_survey([f"lfw-{i:03d}" for i in data["pool"]])
    data["portrait_ear"] = ears
    data["eyes_open_min"] = EYES_OPEN_MIN
    data["distinct_pool"] = list(data["pool"])
    data["pool"] = [i for i in data["pool"] if ears[f"lfw-{i:03d}"] >= EYES_OPEN_MIN]
    SURVEY_PATH.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{sum(r['detected'] for r in data['lfw'])}/100 LFW faces detected, {len(data['distinct_pool'])} distinct, "
          f"{len(data['pool'])} with open eyes (+{len(PHOTOS)} photos) -> {SURVEY_PATH}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
