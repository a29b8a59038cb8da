"""pvchat synthesize: positives + hard negatives + QA -> manifest; resumable; clear errors."""

import shutil

import numpy as np
import pytest
from PIL import Image

from pvchat.data import QADataset, read_manifest
from pvchat.errors import InputError
from pvchat.synth.negatives import build_face_bank, pick_negatives
from pvchat.synth.pipeline import SynthRecipe, synthesize_dataset

RECIPE = SynthRecipe(positives=2, hard_negatives=2, random_negatives=1, num_frames=4, width=160, height=128, qa="tiny")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    from pvchat.faces.samples import lfw_faces

    d = tmp_path_factory.mktemp("pool")
    for i, img in enumerate(lfw_faces(scale=6, pad=60)[:8]):
        Image.fromarray(img).save(d / f"person{i}.png")
    return d


@pytest.fixture(scope="module")
def data(two_people_analysis, pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    return synthesize_dataset(two_people_analysis, "astro", out, pool=pool, recipe=RECIPE, progress=False)


def test_manifest_has_positives_negatives_and_consistent_labels(data):
    recs = read_manifest(data)
    assert sum(r.kind == "positive" for r in recs) == 2 and sum(r.kind == "negative" for r in recs) == 3
    for r in recs:
        assert (data.parent / r.clip).is_file()
        for q in r.qa:
            if q.type == "existence":
                assert q.label == (r.kind == "positive")
            else:
                assert r.kind == "positive" and "<astro>" in q.answer + q.question
        if r.kind == "positive":
            assert r.quality["face_distance"] < r.quality["face_threshold"]
            assert {q.type for q in r.qa} == {"existence", "appearance", "action", "location"}
    assert len(QADataset(data, stage=1, image_size=32)) > 0 and len(QADataset(data, stage=2, image_size=32)) > 0


def test_rerun_resumes_without_redoing(data, two_people_analysis, pool):
    clips = sorted((data.parent / "clips").glob("*.mp4"))
    stamps = [p.stat().st_mtime_ns for p in clips]
    synthesize_dataset(two_people_analysis, "astro", data.parent, pool=pool, recipe=RECIPE, progress=False)
    assert [p.stat().st_mtime_ns for p in clips] == stamps
    with pytest.raises(InputError, match="other settings"):
        synthesize_dataset(two_people_analysis, "astro", data.parent, pool=pool, recipe="tiny", progress=False)


def test_hard_negatives_are_nearer_than_random(pool):
    from pvchat.faces import FaceEngine
    from pvchat.faces.samples import astronaut

    bank = build_face_bank(pool, progress=False)
    subject = FaceEngine().detect(astronaut())[0].embedding
    hard, rand = pick_negatives(bank, subject, k=3, r=3)
    assert max(d for d, _ in hard) <= min(d for d, _ in rand)


@pytest.mark.parametrize("name", ["", "a/b", "PERSON]", "x" * 40])
def test_bad_name(two_people_analysis, tmp_path, name):
    with pytest.raises(InputError, match="invalid subject name"):
        synthesize_dataset(two_people_analysis, name, tmp_path / "d", recipe=RECIPE, progress=False)
    assert not (tmp_path / "d").exists()


def test_missing_analysis_and_empty_pool(two_people_analysis, tmp_path):
    with pytest.raises(InputError, match="not an analysis directory"):
        synthesize_dataset(tmp_path / "nope", "astro", tmp_path / "d", recipe=RECIPE, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images or videos"):
        synthesize_dataset(two_people_analysis, "astro", tmp_path / "d2", pool=tmp_path / "empty", recipe=RECIPE,
                           progress=False)
    assert not (tmp_path / "d2").exists()


def test_text_driven_clip_without_motion_gets_no_action_question():
    from pvchat.synth.base import ClipRequest, GeneratedClip
    from pvchat.synth.pipeline import _action, _person_facts

    clip = GeneratedClip(np.zeros((2, 64, 64, 3), np.uint8), 8.0, ClipRequest(), "consisid", {"prompt": "a walk"})
    assert _action(clip) is None
    facts = _person_facts("astro", clip, (20, 10, 40, 30), _action(clip))
    assert facts.action is None and facts.position == "centre"


def test_pairs_join_two_person_clips_to_the_manifest(data, two_people_analysis, pool, tmp_path):
    """learn.synthesize(pairs=N): N composed clips of two people (the person beside a stranger, two
    strangers) join the person's own in one manifest; a re-run redoes nothing."""
    from pvchat.learn import synthesize

    out = tmp_path / "data"
    shutil.copytree(data.parent, out)
    summary = synthesize(two_people_analysis, "astro", out, RECIPE, pool=pool, pairs=2)
    recs = read_manifest(out / "manifest.jsonl")
    composed = [r for r in recs if r.kind == "composed"]
    assert summary["pair_clips"] == 2 and summary["clips"] == len(recs) == 5 + 2
    assert sorted(r.people for r in composed) == [[], ["astro"]]
    for r in composed:
        assert (out / r.clip).is_file() and len(r.provenance["layout"]) == 2
        assert {q.label for q in r.qa if q.type == "existence"} == {bool(r.people)}
    stamps = [p.stat().st_mtime_ns for p in sorted(out.rglob("*.mp4"))]
    assert synthesize(two_people_analysis, "astro", out, RECIPE, pool=pool, pairs=2) == summary
    assert [p.stat().st_mtime_ns for p in sorted(out.rglob("*.mp4"))] == stamps
