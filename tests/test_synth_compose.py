"""pvchat compose: 2–3 subjects per clip, each from their own reference, checked with dlib."""

import re

import numpy as np
import pytest

from pvchat import cli
from pvchat.data import QADataset, read_manifest
from pvchat.errors import InputError
from pvchat.qa.facts import position_word
from pvchat.synth.compose import compose_dataset, pattern_for, presence_patterns

W = 384
SMALL = dict(num_frames=4, width=W, height=224, qa="tiny")


@pytest.fixture(scope="module")
def world_people(tmp_path_factory):
    """Analyses of three offline-world people (12-frame references) and a pool of two others."""
    from pvchat.faces.analysis_dir import load_embedding, write_analysis
    from pvchat.faces.analyze import analyze_video
    from pvchat.faces.records import AnalyzeSettings
    from pvchat.offline.pool import save_pool
    from pvchat.offline.world.api import make_world
    from pvchat.video import write_video

    root = tmp_path_factory.mktemp("compose_world")
    world = make_world(people=5, seed=0)
    people = []
    for p in world.people[:3]:
        write_video(root / f"{p.id}.mp4", world.render_clip(world.reference_spec(p.id, num_frames=12)).frames,
                    fps=world.fps)
        analysis = write_analysis(analyze_video(root / f"{p.id}.mp4", settings=AnalyzeSettings(workers=1),
                                                progress=False), root / f"an_{p.id}")
        people.append((p.name, analysis, load_embedding(analysis)))
    save_pool(world, world.people[3:], root / "pool")
    return root, people


@pytest.fixture(scope="module")
def two(world_people, tmp_path_factory):
    root, people = world_people
    out = tmp_path_factory.mktemp("compose2") / "data"
    subjects = [(n, a) for n, a, _ in people[:2]]
    return compose_dataset(subjects, out, clips=4, seed=0, progress=False, pool=root / "pool", **SMALL), subjects, root / "pool"


@pytest.fixture(scope="module")
def three(world_people, tmp_path_factory):
    _, people = world_people
    out = tmp_path_factory.mktemp("compose3") / "data"
    return compose_dataset([(n, a) for n, a, _ in people], out, clips=3, seed=1, progress=False, **SMALL)


def records(two, three):
    return [(m, r) for m in (two[0], three) for r in read_manifest(m)]


def test_presence_patterns_are_balanced():
    assert presence_patterns(2, False) == [(True, True), (True, False), (False, True)]
    assert len(presence_patterns(3, True)) == 8
    first_round = {pattern_for(i, 3, True, seed=5) for i in range(8)}
    assert len(first_round) == 8  # every pattern once per round: each subject present in half the clips


def test_frames_layout_and_records(two, three):
    from pvchat.video import read_frames_uniform

    for manifest, r in records(two, three):
        frames = read_frames_uniform(manifest.parent / r.clip, 4)
        assert frames.shape == (4, 224, W, 3)
        layout = r.provenance["layout"]
        assert r.kind == "composed" and r.people == [e["name"] for e in layout if e["name"]]
        assert len({e["slot"] for e in layout}) == len(layout)  # distinct slots
        assert all(position_word(e["x"]) == e["slot"] for e in layout)
    for manifest in (two[0], three):  # what the trainer reads
        assert len(QADataset(manifest, stage=1, image_size=32)) and len(QADataset(manifest, stage=2, image_size=32))
    # with a pool: 4 clips = every pattern once, the absent subjects' places taken by strangers
    recs = read_manifest(two[0])
    assert sorted(len(r.people) for r in recs) == [0, 1, 1, 2]
    assert all(len(r.provenance["layout"]) == 2 for r in recs)
    assert sum(e["name"] is None for r in recs for e in r.provenance["layout"]) == 4


def test_each_subject_keeps_their_identity_at_their_slot(two, three, world_people):
    """In the first and the middle frame dlib finds a face at each present subject's recorded slot
    (in one of them at least), nearest to that subject's own reference embedding (the median over
    the frames); strangers match nobody."""
    from pvchat.faces import FaceEngine
    from pvchat.video import read_frames_uniform

    _, people = world_people
    embeddings = {n: e for n, _, e in people}
    engine = FaceEngine()
    checked = 0
    for manifest, r in records(two, three):
        frames = read_frames_uniform(manifest.parent / r.clip, 4)[::2]
        found = {k: [] for k in range(len(r.provenance["layout"]))}
        for frame in frames:
            faces = engine.detect(frame)
            for k, e in enumerate(r.provenance["layout"]):
                cx, cy = e["face_centre"]
                near = [f for f in faces if abs((f.box[0] + f.box[2]) / 2 - cx) < W / 6]
                if near:
                    f = min(near, key=lambda f: abs((f.box[0] + f.box[2]) / 2 - cx) + abs((f.box[1] + f.box[3]) / 2 - cy))
                    assert position_word((f.box[0] + f.box[2]) / 2 / W) == e["slot"]
                    found[k].append({n: float(np.linalg.norm(f.embedding - v)) for n, v in embeddings.items()})
        for k, e in enumerate(r.provenance["layout"]):
            if e["name"] is None:  # a stranger: nobody's twin
                assert all(min(d.values()) > 0.35 for d in found[k])
                continue
            assert 2 * len(found[k]) >= len(frames), f"{r.clip}: {e['name']}'s face is missing at {e['slot']}"
            median = {n: float(np.median([d[n] for d in found[k]])) for n in embeddings}
            assert min(median, key=median.get) == e["name"] and median[e["name"]] < 0.6, (r.clip, median)
            checked += 1
        assert set(r.quality) == {f"face_distance:{n}" for n in r.people}
    assert checked >= 5


def test_augmentation_is_drawn_per_subject(two, three):
    pairs = 0
    for _, r in records(two, three):
        layout = r.provenance["layout"]
        for i in range(len(layout)):
            for j in range(i + 1, len(layout)):
                assert layout[i]["augment"] != layout[j]["augment"]
                assert layout[i]["source"] != layout[j]["source"]  # each from their own reference
                pairs += 1
    assert pairs >= 4


def test_qa_labels_match_who_is_present(two, three):
    labels = set()
    for _, r in records(two, three):
        assert {q.type for q in r.qa} >= {"existence"}
        for q in r.qa:
            named = re.findall(r"<([A-Za-z][\w-]*)>", q.question)
            if q.type == "existence":
                assert q.label == any(n in r.people for n in named), (q.question, r.people)
                labels.add(q.label)
            else:  # descriptive questions only about people in the clip
                assert q.label is None and all(n in r.people for n in named)
    assert labels == {True, False}


def test_relative_location_answers_follow_the_slots(two, three):
    asked = 0
    for _, r in records(two, three):
        x = {e["name"]: e["x"] for e in r.provenance["layout"] if e["name"]}
        for q in r.qa:
            m = re.fullmatch(r"(?:Where|How) is <(\w+)> .*relative to <(\w+)>\?", q.question)
            if m:
                a, b = m.groups()
                side = "left" if x[a] < x[b] else "right"
                assert f"to the {side} of <{b}>" in q.answer, (q.question, q.answer, x)
                asked += 1
    assert asked >= 4


def test_one_subject_beside_strangers(world_people, tmp_path):
    """One person with a pool and 2 people per clip: the person beside a stranger, and two strangers."""
    root, people = world_people
    name, analysis, _ = people[0]
    manifest = compose_dataset([(name, analysis)], tmp_path / "data", clips=2, seed=0, progress=False,
                               pool=root / "pool", people_per_clip=2, **SMALL)
    recs = read_manifest(manifest)
    assert sorted(r.people for r in recs) == [[], [name]]
    for r in recs:
        assert len(r.provenance["layout"]) == 2  # two people in every clip
        labels = {q.label for q in r.qa if q.type == "existence"}
        assert labels == {bool(r.people)}
    with pytest.raises(InputError, match="needs a pool"):
        compose_dataset([(name, analysis)], tmp_path / "x", clips=1, progress=False, people_per_clip=2, **SMALL)
    with pytest.raises(InputError, match="from 2 .* to 3"):
        compose_dataset([(people[0][0], people[0][1]), (people[1][0], people[1][1])], tmp_path / "y", clips=1,
                        progress=False, pool=root / "pool", people_per_clip=4, **SMALL)


def test_clips_of_strangers_only_show_a_hard_negative(world_people, tmp_path):
    """hard_strangers: a clip without the person casts one of the pool people nearest its face."""
    from pvchat.faces.analysis_dir import load_embedding
    from pvchat.synth.negatives import build_face_bank, rank_by_similarity

    root, people = world_people
    name, analysis, _ = people[0]
    nearest = rank_by_similarity(build_face_bank(root / "pool", progress=False), load_embedding(analysis))[0][1]
    manifest = compose_dataset([(name, analysis)], tmp_path / "data", clips=2, seed=0, progress=False,
                               pool=root / "pool", people_per_clip=2, hard_strangers=1, **SMALL)
    strangers_only = [r for r in read_manifest(manifest) if not r.people]
    assert len(strangers_only) == 1
    assert nearest.source in {e["source"] for e in strangers_only[0].provenance["layout"]}


def test_rerun_resumes_without_rewriting(two):
    manifest, subjects, pool = two
    clips = sorted((manifest.parent / "clips").glob("*.mp4"))
    stamps = [p.stat().st_mtime_ns for p in clips]
    assert compose_dataset(subjects, manifest.parent, clips=4, seed=0, progress=False, pool=pool, **SMALL) == manifest
    assert [p.stat().st_mtime_ns for p in clips] == stamps
    with pytest.raises(InputError, match="other settings"):
        compose_dataset(subjects, manifest.parent, clips=4, seed=1, progress=False, pool=pool, **SMALL)


@pytest.mark.parametrize("case, message", [
    ("one", "2 or 3 subjects"), ("four", "2 or 3 subjects"), ("repeat", "names repeat"),
    ("bad_name", "invalid subject name"), ("missing", "not an analysis directory"),
    ("same_person", "same person"), ("small", "too small"), ("odd", "must be even"),
])
def test_bad_inputs_are_one_clear_error(world_people, tmp_path, case, message):
    _, people = world_people
    (a, da, _), (b, db, _), (c, dc, _) = people
    subjects, size = {
        "one": ([(a, da)], SMALL), "four": ([(a, da), (b, db), (c, dc), ("Extra", da)], SMALL),
        "repeat": ([(a, da), (a, db)], SMALL), "bad_name": ([(a, da), ("x/y", db)], SMALL),
        "missing": ([(a, da), (b, tmp_path / "nope")], SMALL), "same_person": ([(a, da), (b, da)], SMALL),
        "small": ([(a, da), (b, db)], {**SMALL, "width": 200}), "odd": ([(a, da), (b, db)], {**SMALL, "height": 225}),
    }[case]
    with pytest.raises(InputError, match=message) as err:
        compose_dataset(subjects, tmp_path / "out", clips=1, progress=False, **size)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_cli(world_people, tmp_path, capsys):
    _, people = world_people
    (a, da, _), (b, db, _) = people[:2]
    assert cli.main(["compose", str(da), str(db), "--name", a, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 analysis directories but 1 names" in err[0]
    out = tmp_path / "ok"
    argv = ["compose", str(da), str(db), "--name", a, "--name", b, "--out", str(out), "--clips", "1",
            "--frames", "2", "--width", "320", "--height", "208", "--seed", "3"]
    assert cli.main(argv) == 0
    assert "1 clips" in capsys.readouterr().out
    assert len(read_manifest(out / "manifest.jsonl")) == 1
