"""The prompt library (PVChat Fig. 6 hierarchy, supp. Fig. 7 image prompts)."""

from __future__ import annotations

import json
import random
import re

import pytest

from pvchat.errors import ConfigError, InputError
from pvchat.synth.prompts import AGES, GENDERS, PromptLibrary, subject_words

_CAMERA = re.compile(r"\b(shot|camera|close-up|tracking|dolly|pan|zoom|tilt|orbit|arc|tripod|handheld)\b")


@pytest.fixture(scope="module")
def lib() -> PromptLibrary:
    return PromptLibrary.load()


def test_size_uniqueness_and_coverage(lib):
    texts = [e.text for e in lib.entries]
    assert len(texts) >= 300 and len(set(texts)) == len(texts)
    assert {"gym", "restaurant", "school", "office", "park"} <= set(lib.scenarios())
    for g in GENDERS:
        for a in AGES:
            cell = lib.select(gender=g, age=a)
            assert {e.scenario for e in cell} == set(lib.scenarios()), (g, a)
            assert len(cell) >= 40


def test_descriptions_are_usable_prompts(lib):
    for e in lib.entries:
        assert e.text.count("{subject}") == 1 and e.text.startswith("{subject} "), e.text
        assert _CAMERA.search(e.text), f"no camera words: {e.text}"
        assert 10 <= len(e.text.split()) <= 45, e.text
        pronoun_other = r"\b(her|she)\b" if e.gender == "male" else r"\b(his|he|him)\b"
        assert not re.search(pronoun_other, e.text), f"pronoun does not match {e.gender}: {e.text}"


def test_sampling_respects_filters_and_seed(lib):
    for g, a, s in [("female", "elderly", "gym"), ("male", None, "beach"), (None, "young", None)]:
        for seed in range(20):
            e = lib.sample(gender=g, age=a, scenario=s, rng=seed)
            assert (g is None or e.gender == g) and (a is None or e.age == a) and (s is None or e.scenario == s)
    assert lib.sample(rng=5) == lib.sample(rng=random.Random(5))
    drawn = {lib.sample(rng=k) for k in range(200)}
    assert {e.gender for e in drawn} == set(GENDERS) and {e.age for e in drawn} == set(AGES)
    many = lib.sample_many(10, gender="male", age="middle_aged", rng=1)  # official key spelling accepted
    assert len(set(many)) == 10 and all(e.age == "middle-aged" for e in many)
    assert many == lib.sample_many(10, gender="male", age="middle-aged", rng=1)
    assert len(lib.sample_many(7, gender="female", age="young", scenario="gym", rng=0)) == 7  # 5 distinct, then repeats
    assert lib.sample("", "", rng=2) == lib.sample(rng=2)  # unknown demographics ("" in the official data) → any


def test_render_and_fig7(lib):
    e = lib.sample(gender="female", age="elderly", scenario="park", rng=0)
    out = lib.render(e, subject_words("female", "elderly"))
    assert out.startswith("An elderly woman ") and "{subject}" not in out
    assert lib.render(e, "<Anna>", identity_suffix=True).endswith(
        "She has the same facial structure and skin color as the reference image.")
    assert lib.render("On a rainy day, {subject} waves; static shot.", "a young man") == \
        "On a rainy day, a young man waves; static shot."
    assert subject_words() == "a person" and subject_words("male", "young") == "a young man"
    fig7 = lib.image_prompts("male", "young")
    assert len(fig7) == 6 and fig7[0].startswith("young male img sitting at a clean desk in a modern office")
    with pytest.raises(InputError):
        lib.render("no slot here", "a man")


def test_errors(lib, tmp_path):
    with pytest.raises(ConfigError, match="female, male"):
        lib.sample(gender="robot")
    with pytest.raises(ConfigError, match="gym"):
        lib.sample(scenario="moon")
    with pytest.raises(ConfigError):
        lib.sample(age="ancient")
    with pytest.raises(InputError):
        PromptLibrary.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError):
        PromptLibrary.load(bad)
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"scenarios": {"gym": "sport"},
                                 "library": {"male": {"young": {"gym": ["{subject} lifts; wide shot."]}}}}))
    one = PromptLibrary.load(small)
    assert len(one) == 1 and one.sample(rng=3).text == "{subject} lifts; wide shot."
    with pytest.raises(InputError):
        one.sample(gender="female")
