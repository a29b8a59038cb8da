"""Identity that varies, user photo folders, ground-truth scoring, the official metrics and layout,
baselines beside the answerer, and a report directory that is swapped in whole."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from pvchat.cli import main
from pvchat.errors import ConfigError, InputError
from pvchat.eval.official import (
    bleu,
    category,
    dc_heuristic,
    es_heuristic,
    official_metrics,
    read_official,
    to_official,
)
from pvchat.eval.recipe import BenchmarkRecipe, load_recipe
from pvchat.eval.truth import correct
from pvchat.offline.world import Cast, ClipSpec, make_world, plan_clip, render_clip
from pvchat.offline.world.faces import folder_faces, other_photos
from pvchat.offline.world.figure import FaceLook

TINY = BenchmarkRecipe(world_people=10, pool_people=1, subjects=1, pairs=1, clips_per_group=1, hard_negatives=2,
                       num_frames=6, variation=1.0, lookalikes=1)


# --- the world ------------------------------------------------------------------------------------


def test_variation_changes_only_the_faces_and_is_recorded():
    w = make_world(people=8, seed=0, num_frames=4)
    looks, photos = [], 0
    for seed in range(40):
        still = plan_clip(w.people, "c", seed, variation=0.0, num_frames=4)
        varied = plan_clip(w.people, "c", seed, variation=1.0, num_frames=4)
        assert all(c.face == FaceLook() for c in still.cast)
        assert [(c.person, c.action, c.slot, c.outfit) for c in still.cast] == \
               [(c.person, c.action, c.slot, c.outfit) for c in varied.cast]
        looks += [c.face for c in varied.cast]
        assert ClipSpec.from_dict(varied.to_dict()) == varied
    assert sum(lk.occlusion is not None for lk in looks) >= 5 and sum(lk.jpeg > 0 for lk in looks) >= 5
    assert len({lk.yaw for lk in looks}) > 0.9 * len(looks)  # (a few sit at the ±55° clip)
    assert other_photos("lfw-000") == ("lfw-036", "lfw-090")  # the LFW subset repeats George W. Bush
    bush = next((p for p in make_world(people=63, seed=0).people if p.face == "lfw-000"), None)
    if bush is not None:
        photos = {plan_clip([bush], "c", s, variation=1.0).cast[0].face.photo for s in range(6)}
        assert photos <= {"lfw-036", "lfw-090"} and photos


def test_a_hidden_face_is_in_the_ground_truth():
    w = make_world(people=2, seed=0, num_frames=3)
    p = w.people[0]
    base = ClipSpec(clip_id="h", seed=1, cast=(Cast(person=p.id, action="standing"),), num_frames=3)
    hidden = replace(base, cast=(Cast(person=p.id, action="standing", face=FaceLook(occlusion="turned_away")),))
    masked = replace(base, cast=(Cast(person=p.id, action="standing", face=FaceLook(occlusion="mask")),))
    a, b, c = (render_clip(s, w.by_id) for s in (base, hidden, masked))
    fa, fb, fc = (r.truth["people"][0]["face"] for r in (a, b, c))
    assert not fa["hardly_visible"] and fa["face_visible_mean"] > 0.9
    assert fb["hardly_visible"] and fb["face_visible_mean"] == 0.0 and b.truth["person_ids"] == [p.id]
    assert 0.3 < fc["face_visible_mean"] < 0.8 and not fc["hardly_visible"]
    assert not np.array_equal(a.frames, b.frames)
    assert np.array_equal(render_clip(hidden, w.by_id).frames, b.frames)  # deterministic


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("faces")
    (root / "Eileen").mkdir()
    (root / "Mirror").mkdir()
    astronaut = data.astronaut()
    Image.fromarray(astronaut).save(root / "Eileen" / "a.jpg")
    Image.fromarray(astronaut[:, ::-1].copy()).resize((400, 400)).save(root / "Eileen" / "b.jpg")
    Image.fromarray(astronaut[:, ::-1].copy()).save(root / "Mirror" / "m.png")
    (root / "notes.txt").write_text("not a person")
    return root


def test_world_from_a_photo_folder(photo_folder, tmp_path):
    from pvchat.offline.world import load_world

    people = folder_faces(photo_folder)
    assert list(people) == ["Eileen", "Mirror"] and len(people["Eileen"]) == 2
    assert main(["world", str(tmp_path / "w"), "--faces", str(photo_folder), "--clips", "2"]) == 0
    w = load_world(tmp_path / "w")
    assert [p.name for p in w.people] == ["Eileen", "Mirror"] and w.variation == 0.5
    eileen = w.person("Eileen")
    assert eileen.face.endswith("a.jpg") and eileen.photos[0].endswith("b.jpg")
    assert (tmp_path / "w" / "references" / f"{eileen.id}.mp4").is_file()


def test_bad_photo_folders_fail_in_one_line(tmp_path, capsys):
    with pytest.raises(InputError, match="no such directory"):
        folder_faces(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no person folders"):
        folder_faces(tmp_path / "empty")
    (tmp_path / "bad" / "9lives").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "bad" / "9lives" / "x.jpg")
    with pytest.raises(InputError, match="not usable as a person's name"):
        folder_faces(tmp_path / "bad")
    (tmp_path / "blank" / "Nobody").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "blank" / "Nobody" / "x.jpg")
    assert main(["world", str(tmp_path / "w"), "--faces", str(tmp_path / "blank"), "--clips", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finds no face" in err[0]
    assert main(["world", str(tmp_path / "w2"), "--faces", str(tmp_path / "missing")]) == 2


# --- recipes and scoring --------------------------------------------------------------------------


def test_default_size_and_shrink():
    r = load_recipe()
    assert r.subjects >= 12 and r.pairs >= 4 and r.triples >= 2 and r.variation > 0 and r.hard_negatives >= 1
    assert r.units == [1] * r.subjects + [2] * r.pairs + [3] * r.triples
    small = r.shrink(6)
    assert (small.subjects, small.pairs, small.triples) == (6, 2, 1) and r.shrink(2).pairs == 0
    with pytest.raises(ConfigError, match="--subjects"):
        r.shrink(0)
    with pytest.raises(ConfigError, match="max_people_per_clip"):
        BenchmarkRecipe(triples=1, max_people_per_clip=2)
    with pytest.raises(ConfigError, match="variation"):
        BenchmarkRecipe(variation=2.0)


def test_ground_truth_scores():
    outfit = {"top": "t-shirt", "top_colour": "red"}
    row = {"type": "appearance", "truth": {"outfit": outfit}}
    assert correct(row, "<A> wears a red t-shirt.") and not correct(row, "<A> wears a red shirt.")
    assert not correct(row, "Yes, <A> is in this video.")
    assert correct({"type": "action", "truth": {"action": "waving"}}, "<A> is waving a hand.")
    assert not correct({"type": "action", "truth": {"action": "waving"}}, "<A> is waving and jumping.")
    rel = {"type": "location", "truth": {"position": "left", "moves": False,
                                         "relations": [{"other_name": "Ben", "horizontal": "to the left of"}]}}
    assert correct(rel, "<A> is on the left, to the left of <Ben>.")
    assert not correct(rel, "<A> is to the right of <Ben>.") and not correct(rel, "<A> is on the left.")
    alone = {"type": "location", "truth": {"position": "centre", "moves": False, "relations": []}}
    assert correct(alone, "<A> is in the middle of the frame.") and not correct(alone, "<A> is on the left.")
    ex = {"type": "existence", "label": False}
    assert correct(ex, "No, <A> is not here.") and not correct(ex, "Yes.") and not correct(ex, "Hmm.")


def test_official_metrics_the_official_way():
    assert category("Is <A> in this video?", is_special=True) == "identity"
    assert category("What is <A> wearing?") == "clothing" and category("Where is <A>?") == "location"
    assert category("What emotion does <A> display?") == "emotion" and category("What is <A> doing?") == "action"
    assert category("Can you find <A> in this clip?") == "identity" and category("Tell me more.") == "other"
    assert bleu(["a red coat"], ["the red coat"], 1) == pytest.approx(2 / 3)
    assert bleu(["a red coat"], ["the red coat"], 4) < bleu(["a red coat"], ["the red coat"], 1)
    assert es_heuristic("<A> wears red.", "<A>") == 5 and es_heuristic("The person wears red.", "<A>") == 2
    assert es_heuristic("<B> wears red.", "<A>") == 0 and es_heuristic("", "<A>") == 0
    assert dc_heuristic("<A> wears a red coat.", "<A> wears a red coat.", "<A>") == pytest.approx(5.0)
    assert dc_heuristic("No, <A> is absent.", "Yes, <A> is here.", "<A>") < 1.0
    rows = [{"question": "Is <A> in this video?", "reference": "Yes.", "answer": "Yes, <A> is.", "subject": "A",
             "is_special": True, "is_positive": True, "clip": "c1.mp4", "type": "existence", "label": True},
            {"question": "Is <A> in this video?", "reference": "No.", "answer": "Yes, <A> is.", "subject": "A",
             "is_special": True, "is_positive": False, "clip": "c2.mp4", "type": "existence", "label": False}]
    m = official_metrics(rows)
    assert m["accuracy"]["present_accuracy"] == 1.0 and m["accuracy"]["absent_accuracy"] == 0.0
    assert "es" not in m and m["es_heuristic"] is not None and "heuristic" in m["es_dc"]
    entries = to_official([{**r, "id": str(i)} for i, r in enumerate(rows)])
    assert {"video_path", "qa_pairs"} == set(entries[0]) and entries[1]["qa_pairs"][0]["is_positive"] is False
    back = read_official({"results": entries})
    assert [(r["answer"], r["is_positive"], r["clip"]) for r in back] == [("Yes, <A> is.", True, "c1.mp4"),
                                                                         ("Yes, <A> is.", False, "c2.mp4")]
    with pytest.raises(InputError, match="official result layout"):
        read_official({"rows": []})
    with pytest.raises(InputError, match="qa_pairs"):
        read_official([{"video_path": "x"}])


# --- the benchmark, baselines, interop ------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from pvchat.eval.benchmark import build_benchmark, load_benchmark

    return load_benchmark(build_benchmark(tmp_path_factory.mktemp("b") / "b", TINY))


def test_pairs_are_asked_together(bench):
    pair = next(s for s in bench.subjects if s["unit"] == "pair")
    ids = {m["id"] for m in pair["members"]}
    qs = [q for q in bench.questions if q["subject"] == pair["name"]]
    for q in qs:
        if q["group"] == "positive":
            assert ids <= set(q["people"])
        else:
            assert not ids & set(q["people"]) and q["label"] in (False, None)
        if q["type"] != "existence":
            assert q["truth"]["about"] in q["subjects"] and "outfit" in q["truth"]
    assert any(q["type"] == "location" for q in qs)


def test_baselines_beside_the_answerer_and_the_official_json_round_trip(bench, tmp_path):
    from pvchat.eval.baselines import always_no, always_yes
    from pvchat.eval.runner import evaluate

    r = evaluate(always_yes, bench.root, out=tmp_path / "yes", baselines=[always_no])
    ex = r.truth["existence"]
    assert ex["present"]["accuracy"] == 1.0 and ex["absent"]["accuracy"] == 0.0
    no = r.baselines["always-no"]["truth"]["existence"]
    assert no["present"]["accuracy"] == 0.0 and no["absent"]["accuracy"] == 1.0
    assert r.truth["appearance"]["accuracy"] == 0.0  # "Yes, <A> is in this video." names no clothing
    md = (tmp_path / "yes" / "report.md").read_text()
    assert "## Baselines on the same questions" in md and "| always-no |" in md and "ES heuristic" in md
    assert (tmp_path / "yes" / "truth.png").read_bytes()[:4] == b"\x89PNG"
    official = json.loads((tmp_path / "yes" / "official.json").read_text())
    assert sum(len(e["qa_pairs"]) for e in official) == len(bench.questions)
    rc = main(["eval", str(bench.root), "--answers", str(tmp_path / "yes" / "official.json"), "--out",
               str(tmp_path / "again")])
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert rc == 0 and again["truth"]["existence"] == json.loads(json.dumps(ex))
    assert again["official"]["bleu1"] == pytest.approx(r.official["bleu1"])


def test_a_report_killed_while_written_leaves_the_last_good_one(bench, tmp_path, monkeypatch):
    from pvchat.eval import plots
    from pvchat.eval.baselines import always_no
    from pvchat.eval.runner import evaluate

    out = tmp_path / "r"
    evaluate(always_no, bench.root, out=out, limit=3)
    before = (out / "report.json").read_text()

    def boom(report, where):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_report", boom)
    with pytest.raises(KeyboardInterrupt):
        evaluate(always_no, bench.root, out=out, limit=5)
    assert (out / "report.json").read_text() == before and json.loads(before)["n_questions"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.") and p.suffix == ".tmp"]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    assert main(["eval", str(tmp_path / "junk"), "--baseline", "yes"]) == 2


def test_made_lookalikes_are_the_nearest_hard_negatives(bench):
    from pvchat.offline.world.faces import load_face, morph_key

    single = next(s for s in bench.subjects if s["unit"] == "single")
    made = single["made_lookalikes"]
    assert len(made) == 1 and bench.meta["people"][made[0]]["face"].startswith("morph:")
    assert single["hard_negatives"][0]["id"] == made[0]  # blended from the subject's face: nearest of all
    hard_clip = next(q for q in bench.questions if q["subject"] == single["name"] and q["group"] == "hard_negative")
    assert made[0] in hard_clip["people"] and hard_clip["label"] is False
    face = load_face(morph_key("lfw-000", "lfw-001", 0.5))
    a, b = load_face("lfw-000"), load_face("lfw-001")
    assert np.allclose(face.landmarks, (a.landmarks + b.landmarks) / 2, atol=1e-4)
    with pytest.raises(ConfigError):
        morph_key("lfw-000", "lfw-001", 1.0)
    with pytest.raises(ConfigError, match="look-alike"):
        load_face("morph:lfw-000|lfw-000|0.5")


def test_the_base_is_asked_about_the_person(tmp_path, bench):
    from pvchat.eval.baselines import base_answerer, the_person

    assert the_person("Is <Anna> to the left of <Ben>?") == "Is the person to the left of the person?"
    answer = base_answerer("tiny", home=tmp_path / "home")
    q = next(q for q in bench.questions if q["type"] == "appearance")
    said = answer(str(bench.root / q["clip"]), q["question"], q["subject"])
    assert isinstance(said, str) and answer.name == "base-tiny" and answer.describe()["asked_about"] == "the person"
    assert (tmp_path / "home" / "base" / "tiny").is_dir()


def test_subjects_shrinks_and_a_mismatch_is_refused(bench, tmp_path):
    from pvchat.eval.benchmark import ensure_benchmark

    with pytest.raises(InputError, match="another recipe"):
        ensure_benchmark(bench.root, subjects=1)
    assert main(["eval", str(tmp_path / "new"), "--baseline", "yes", "--subjects", "0"]) == 2
    assert not (tmp_path / "new").exists()
    assert main(["eval", str(bench.root), "--baseline", "yes", "--baselines", "face,maybe"]) == 2
