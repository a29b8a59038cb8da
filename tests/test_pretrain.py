"""Base pretraining on the offline world (train/pretrain.py): people split, balanced data, a base."""

import json

import pytest

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


def test_the_body_reader_trains_on_garment_crops_and_reloads(tmp_path):
    """Step 0 of alignment: body crops of world people (cut as the tower cuts them) train the reader,
    scored on held-out people; the saved reader loads instead of training again."""
    import torch

    from pvchat.model.person_tower import PersonTower
    from pvchat.offline.world.people import TOP_KINDS
    from pvchat.train.pretrain import garment_data, train_reader

    torch.manual_seed(0)
    tower = PersonTower(None, image_size=288, max_people=1, body_reader=True)
    people = make_people(8, seed=3)
    maps, clip_of, labels = garment_data(tower, people, clips=3, progress=False)
    assert maps.dtype == torch.float16 and maps.shape[1:] == (112, 10, 10) and len(clip_of) == len(maps)
    assert set(clip_of.tolist()) == set(range(len(labels))) and all(lab["kind"] in TOP_KINDS for lab in labels)
    card = train_reader(tower, people, tmp_path / "body_reader.safetensors", clips=4, steps=2, progress=False)
    assert (tmp_path / "body_reader.safetensors").is_file() and set(card["held_out_clip_accuracy"]) == {"kind", "colour", "all"}
    again = PersonTower(None, image_size=288, max_people=1, body_reader=True)
    assert train_reader(again, people, tmp_path / "body_reader.safetensors", clips=4, steps=2, progress=False) == card
    assert all(torch.equal(a, b) for a, b in zip(again.reader.state_dict().values(), tower.reader.state_dict().values()))
    from safetensors.torch import save_file

    from pvchat.errors import InputError
    from pvchat.train.pretrain import load_reader

    save_file({"vision.reader.other": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(InputError, match="not a body reader"):
        load_reader(again, tmp_path / "foreign.safetensors")
