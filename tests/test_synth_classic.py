"""The classic CPU backend: determinism, shapes, identity kept, motions, augmentation ranges."""

import numpy as np
import pytest

from pvchat.errors import ConfigError, InputError
from pvchat.faces import FaceEngine
from pvchat.synth.augment import AugmentParams, apply
from pvchat.synth.base import ClipRequest, get_generator, list_generators
from pvchat.synth.identity import identity_from_analysis
from pvchat.synth.motion import MOTIONS, animate


@pytest.fixture(scope="module")
def identity(two_people_analysis):
    return identity_from_analysis(two_people_analysis, "astro", max_frames=12)


@pytest.fixture(scope="module")
def generator(identity):
    g = get_generator("classic")
    g.prepare(identity)
    return g


def test_identity_from_analysis(identity, two_people_analysis):
    assert len(identity.frames) == len(identity.boxes) > 0 and identity.embedding.shape == (128,)
    with pytest.raises(InputError, match="not an analysis directory"):
        identity_from_analysis(two_people_analysis / "person_0", "x")


def test_registry():
    assert "classic" in list_generators()
    with pytest.raises(ConfigError, match="choose one of"):
        get_generator("sora")


def test_deterministic_and_shaped(generator):
    req = ClipRequest(num_frames=6, width=160, height=128, seed=7)
    a, b = generator.generate(req), generator.generate(req)
    assert a.frames.shape == (6, 128, 160, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames) and a.info == b.info
    assert not np.array_equal(a.frames, generator.generate(ClipRequest(num_frames=6, width=160, height=128, seed=8)).frames)


def test_clips_keep_the_identity(generator, identity):
    engine, dists = FaceEngine(), []
    for seed in range(4):
        clip = generator.generate(ClipRequest(num_frames=4, width=256, height=208, seed=seed))
        for frame in clip.frames[::3]:
            faces = engine.detect(frame)
            if faces:
                dists.append(min(float(np.linalg.norm(f.embedding - identity.embedding)) for f in faces))
    assert len(dists) >= 5
    assert np.median(dists) < 0.45 and np.mean(np.array(dists) < 0.6) >= 0.8  # dlib: same person < 0.6


def test_composite_places_the_person(generator):
    clip = generator.generate(ClipRequest(scene="outdoor", motion="nod", num_frames=3, seed=1))
    assert clip.info["composite"] and clip.info["background"] == "outdoor"
    assert clip.info["position"] in ("left", "centre", "right") and clip.info["motion"] == "nod"
    with pytest.raises(ConfigError, match="unknown motion"):
        generator.generate(ClipRequest(motion="moonwalk"))


@pytest.mark.parametrize("motion", [m for m in MOTIONS if m != "still"])
def test_motions_move_the_face_not_the_corners(identity, generator, motion):
    frame, lm = identity.frames[0], generator.landmarks[0]
    moved = animate(frame, lm, motion, 0.5 if motion in ("tilt", "question", "smile", "frown") else 0.125)
    x0, y0, x1, y1 = identity.boxes[0]
    face = (slice(y0, y1), slice(x0, x1))
    assert np.abs(moved[face].astype(int) - frame[face]).mean() > 0.5
    assert np.array_equal(moved[:4, :4], frame[:4, :4])
    assert np.array_equal(animate(frame, lm, motion, 0.0), frame) or motion in ("nod", "shake")


def test_augmentation_follows_table_4():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = AugmentParams.sample(rng, 240, 320, strength=1.0)
        assert 112 / 320 <= p.downscale <= 1 and 0.9 <= p.brightness <= 1.1 and -20 <= p.rotation <= 20
        assert 0.67 <= p.crop_scale <= 1 and all(abs(c) <= 0.05 for c in p.colour) and all(abs(s) <= 0.05 for s in p.shear)
    frame = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert apply(frame, p).shape == frame.shape
    still = AugmentParams.sample(rng, 240, 320, strength=0.0)
    assert still.rotation == 0 and still.crop_scale == 1
