"""The real faces the offline world is made of, aligned to one canonical face frame.

Sources that ship with the installed packages (nothing is downloaded):

- ``lfw-NNN``: the first 100 images of scikit-image's LFW subset (25×25 grey, tightly cropped).
  Not all of them are distinct people (George W. Bush appears three times), dlib finds no
  face in 6, and many squint, so a survey (:mod:`pvchat.offline.world.survey`) runs dlib once over
  all of them and keeps a *pool*: faces dlib detects whose embedding is at least :data:`DISTINCT_MIN`
  from every face kept before them (94 detected → 80 distinct) and whose eyes read as open on a rendered
  portrait (EAR >= :data:`EYES_OPEN_MIN`, the gate ``pvchat analyze`` uses for the best face;
  → 61). The survey ships as ``faces_survey.json`` next to this module (regenerate with
  ``python -m pvchat.offline.world.survey``, about a minute); loading a face then needs no dlib call.
- ``astronaut`` (Eileen Collins, scikit-image) and ``grace_hopper`` (matplotlib), colour photos.
- ``file:PATH``: a user's own photo (``pvchat world --faces DIR``, :func:`folder_faces`); dlib
  finds the largest face when it is first loaded.

The LFW subset repeats two people (checked by eye; dlib distance < 0.41): George W. Bush is
LFW 0, 36 and 90, Gerhard Schröder LFW 3 and 97. :func:`other_photos` gives those further photos,
so a person's reference video and query clips can show different photos of them.

Every face is warped by a similarity transform that maps its 68 dlib landmarks onto
:data:`TEMPLATE`, the mean LFW landmark layout placed in a :data:`CANON`-pixel square, so the
renderer can treat all faces alike: one texture, one soft face mask, one set of landmarks.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib.cbook as cbook
import numpy as np
from PIL import Image, UnidentifiedImageError
from skimage import data

from pvchat.errors import ConfigError, InputError
from pvchat.faces import FaceEngine
from pvchat.model.prompt import validate_name

CANON = 128  # px, side of the canonical face canvas
FACE_FRACTION = 0.62  # the 25 px LFW crop spans this fraction of the canonical canvas
EYES_OPEN_MIN = 0.25  # smallest eye aspect ratio on a neutral portrait for a face to join the pool
DISTINCT_MIN = 0.5  # dlib euclidean distance below which two LFW faces count as one person
LFW_UPSCALE = 5  # LFW crops are upscaled this much (125 px) for dlib during the survey
LFW_PAD = 62  # px of replicated border around the upscaled crop (dlib needs some context)
PHOTOS = ("astronaut", "grace_hopper")
SURVEY_PATH = Path(__file__).with_name("faces_survey.json")

# Other photos of a pool face's person in the LFW subset (checked by eye; dlib distance < 0.41).
SAME_PERSON: dict[str, tuple[str, ...]] = {"lfw-000": ("lfw-036", "lfw-090"), "lfw-003": ("lfw-097",)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FILE_PREFIX = "file:"
MORPH_PREFIX = "morph:"  # morph:KEY_A|KEY_B|W: W of face A blended with 1 - W of face B (a look-alike of A)


def morph_key(a: str, b: str, weight: float) -> str:
    """The key of a look-alike of face ``a``: ``weight`` of ``a`` blended with face ``b``."""
    if not 0.0 < weight < 1.0:
        raise ConfigError(f"a look-alike's weight must be between 0 and 1, got {weight}")
    return f"{MORPH_PREFIX}{a}|{b}|{weight:.3f}"

# What is known about the people in the colour photos (LFW gives nothing).
PHOTO_FACTS = {
    "astronaut": {"gender": "female", "age": "middle-aged"},
    "grace_hopper": {"gender": "female", "age": "elderly"},
}


@dataclass(frozen=True)
class FaceSource:
    """One real face in the canonical frame.

    ``texture`` is (CANON, CANON, 3) uint8 RGB (grey faces are grey in all three channels),
    ``mask`` (CANON, CANON) float32 in [0, 1] is where the face itself is (soft edge),
    ``landmarks`` (68, 2) float32 are dlib's points in canonical pixels.
    """

    key: str
    texture: np.ndarray
    mask: np.ndarray
    landmarks: np.ndarray
    colour: bool
    gender: str | None
    age: str | None


def _lfw_images() -> np.ndarray:
    return (data.lfw_subset()[:100] * 255).round().astype(np.uint8)


def _photo(key: str) -> np.ndarray:
    if key == "astronaut":
        return np.ascontiguousarray(data.astronaut())
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB")).copy()


def _lfw_for_dlib(grey25: np.ndarray) -> np.ndarray:
    big = cv2.resize(grey25, (25 * LFW_UPSCALE,) * 2, interpolation=cv2.INTER_CUBIC)
    big = cv2.copyMakeBorder(big, LFW_PAD, LFW_PAD, LFW_PAD, LFW_PAD, cv2.BORDER_REPLICATE)
    return cv2.cvtColor(big, cv2.COLOR_GRAY2RGB)


@functools.lru_cache(maxsize=1)
def _survey() -> dict:
    return json.loads(SURVEY_PATH.read_text(encoding="utf-8"))


def available_faces() -> list[str]:
    """Keys of every usable face: the two colour photos first, then the LFW pool."""
    return list(PHOTOS) + [f"lfw-{i:03d}" for i in _survey()["pool"]]


FACE_SPLITS = ("align", "held_out")


def face_split(split: str) -> list[str]:
    """A fixed split of :func:`available_faces`: ``align`` (base alignment, ``pvchat pretrain``) and
    ``held_out`` (the two photos and every third LFW face: the demo's, tests' and benchmark's
    people, never seen by the shipped base)."""
    if split not in FACE_SPLITS:
        raise ValueError(f"unknown face split {split!r}; choose one of {FACE_SPLITS}")
    faces = available_faces()
    held = [k for i, k in enumerate(faces) if k in PHOTOS or i % 3 == 0]
    return held if split == "held_out" else [k for k in faces if k not in held]


@functools.lru_cache(maxsize=1)
def template() -> np.ndarray:
    """(68, 2) canonical landmark layout: mean LFW landmarks, centred in the CANON canvas."""
    lms = np.array([r["landmarks"] for r in _survey()["lfw"] if r["detected"]], dtype=np.float64)
    mean = lms.mean(axis=0)
    return ((mean - 12.5) * (FACE_FRACTION * CANON / 25.0) + CANON / 2.0).astype(np.float32)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 least-squares similarity (rotation, uniform scale, shift) taking src points to dst."""
    m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    return m


def _face_mask(lm: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Soft mask over jaw line and forehead (eyebrows lifted by a third of the face height)."""
    jaw = lm[0:17]
    brows = lm[17:27]
    face_h = float(lm[8, 1] - lm[17:27, 1].mean())
    forehead = brows[::-1] - np.array([0.0, 0.28 * face_h])
    poly = np.concatenate([jaw, forehead]).astype(np.float32)
    hull = cv2.convexHull(poly).astype(np.int32)
    mask = np.zeros((CANON, CANON), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8)) * valid
    return cv2.GaussianBlur(mask, (0, 0), CANON / 40.0)


def other_photos(key: str) -> tuple[str, ...]:
    """Further photos of the person whose face is ``key`` (empty when the source has one)."""
    return SAME_PERSON.get(key, ())


def _user_photo(key: str) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, 68 landmarks of its largest face) of a ``file:PATH`` face."""
    path = Path(key[len(FILE_PREFIX):])
    try:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB")).copy()
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"{path}: not a readable image ({type(e).__name__})") from None
    faces = FaceEngine(detect_max_side=1024).detect(image, embed=False)
    if not faces:
        raise InputError(f"{path}: dlib finds no face in this photo")
    largest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return image, np.asarray(largest.landmarks, np.float32)


def folder_faces(root: str | Path) -> dict[str, list[str]]:
    """``{person: [face keys]}`` of a folder ``root/<person>/*.jpg|*.jpeg|*.png`` (sorted; the first
    photo of each person is their reference photo). InputError for a folder that is not one."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--faces {root}: no such directory")
    people: dict[str, list[str]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            continue
        try:
            validate_name(d.name)
        except InputError as e:
            raise InputError(f"--faces {root}: folder {d.name!r} is not usable as a person's name ({e})") from None
        people[d.name] = [FILE_PREFIX + str(f.resolve()) for f in photos]
    if not people:
        raise InputError(f"--faces {root}: no person folders with photos (expected {root}/<person>/*.jpg)")
    return people


@functools.lru_cache(maxsize=128)
def load_face(key: str) -> FaceSource:
    """The face ``key`` (see :func:`available_faces`, :func:`other_photos`, ``file:PATH``) aligned
    to the canonical frame."""
    survey_ = _survey()
    alternates = {k for ks in SAME_PERSON.values() for k in ks}
    if key.startswith(MORPH_PREFIX):
        return _morph(key)
    if key.startswith(FILE_PREFIX):
        image, lm = _user_photo(key)
        colour = True
        facts = {"gender": None, "age": None}
    elif key in PHOTOS:
        image = _photo(key)
        lm = np.asarray(survey_["photos"][key]["landmarks"], np.float32)
        colour = True
        facts = PHOTO_FACTS[key]
    elif key.startswith("lfw-") and key[4:].isdigit() and (int(key[4:]) in survey_["pool"] or key in alternates):
        grey = _lfw_images()[int(key[4:])]
        image = np.repeat(grey[:, :, None], 3, axis=2)
        lm = np.asarray(survey_["lfw"][int(key[4:])]["landmarks"], np.float32)
        colour = False
        facts = {"gender": None, "age": None}
    else:
        raise ConfigError(f"unknown face {key!r}; available: astronaut, grace_hopper, lfw-NNN for NNN in the pool "
                          f"({len(survey_['pool'])} faces)")
    m = _similarity(lm, template())
    texture = cv2.warpAffine(image, m, (CANON, CANON), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    ones = np.ones(image.shape[:2], np.float32)
    valid = cv2.warpAffine(ones, m, (CANON, CANON), flags=cv2.INTER_LINEAR, borderValue=0.0)
    valid = cv2.erode((valid > 0.99).astype(np.float32), np.ones((5, 5), np.uint8))
    lm_c = (np.c_[lm, np.ones(68)] @ m.T).astype(np.float32)
    return FaceSource(key=key, texture=texture, mask=_face_mask(lm_c, valid), landmarks=lm_c, colour=colour,
                      gender=facts["gender"], age=facts["age"])


def _morph(key: str) -> FaceSource:
    """A look-alike: two canonical faces blended (both are aligned to the same template, so texture,
    landmarks and mask blend point for point). Not anyone in the world: a different person who
    resembles face A as much as ``W`` says."""
    try:
        a_key, b_key, w_text = key[len(MORPH_PREFIX):].split("|")
        w = float(w_text)
    except ValueError:
        raise ConfigError(f"bad look-alike face key {key!r} (morph:KEY_A|KEY_B|WEIGHT)") from None
    if not 0.0 < w < 1.0 or a_key == b_key:
        raise ConfigError(f"bad look-alike face key {key!r}: two different faces and 0 < weight < 1")
    a, b = load_face(a_key), load_face(b_key)
    ta, tb = a.texture.astype(np.float32), b.texture.astype(np.float32)
    if a.colour != b.colour:  # a colour face and a grey one: blend in grey
        ta, tb = (np.repeat(cv2.cvtColor(t.astype(np.uint8), cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2).astype(np.float32)
                  for t in (ta, tb))
    texture = np.clip(w * ta + (1 - w) * tb, 0, 255).round().astype(np.uint8)
    return FaceSource(key=key, texture=texture, mask=np.minimum(a.mask, b.mask),
                      landmarks=(w * a.landmarks + (1 - w) * b.landmarks).astype(np.float32),
                      colour=a.colour and b.colour, gender=None, age=None)
