"""Base pretraining on the offline world (train/pretrain.py): people split, balanced data, a base."""

import json

from pvchat.data import read_manifest
from pvchat.model.presets import get_preset
from pvchat.model.pvchat import PVChat
from pvchat.offline.world.people import make_people
from pvchat.train.pretrain import pretrain_base, pretrain_people, write_pretrain_data


def test_pretraining_people_never_include_the_excluded_faces():
    exclude = {p.face for p in make_people(12, 0)}
    people = pretrain_people(exclude)
    assert people and not {p.face for p in people} & exclude
    assert [p.name for p in people[:2]] == ["w00", "w01"] and len({p.id for p in people}) == len(people)


def test_data_is_balanced_and_resumable(tmp_path):
    people = pretrain_people(set())[:10]
    manifest = write_pretrain_data(tmp_path, people, clips=3, progress=False)
    records = read_manifest(manifest)
    assert len(records) == 3
    for r in records:
        labels = [q.label for q in r.qa]
        assert r.people and labels.count(True) == labels.count(False) == 2 * len(r.people)
        for q in r.qa:  # a "yes" names someone in the clip, a "no" someone who is not
            named = q.question.split("<")[1].split(">")[0]
            assert (named in r.people) == q.label
    stamp = (tmp_path / records[0].clip).stat().st_mtime_ns
    write_pretrain_data(tmp_path, people, clips=3, progress=False)
    assert (tmp_path / records[0].clip).stat().st_mtime_ns == stamp  # not rendered again


def test_pretrain_base_saves_a_base_with_its_people(tmp_path):
    base = pretrain_base(tmp_path / "base", tmp_path / "work", preset="tiny", clips=3, epochs=1, progress=False)
    model = PVChat.from_pretrained(base)
    assert model.subjects[0] == "w00" and len(model.subjects) == len(pretrain_people(set()))
    meta = json.loads((tmp_path / "work" / "pretrain.json").read_text())
    assert meta["steps"] > 0 and meta["clips"] == 3
    assert pretrain_base(tmp_path / "base", tmp_path / "work", preset="tiny") == base  # built once
    assert get_preset("face").vision.face_tokens == 2
