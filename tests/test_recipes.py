"""The one recipe loader (pvchat.recipes): names, YAML paths, nested sections, unknown keys."""

from __future__ import annotations

import pytest

from pvchat import recipes
from pvchat.errors import ConfigError
from pvchat.eval.recipe import BenchmarkRecipe, load_recipe
from pvchat.qa.generate import QARecipe, get_recipe
from pvchat.synth.pipeline import SynthRecipe, get_synth_recipe
from pvchat.train.recipe import TrainRecipe, load_train_recipe


def test_shipped_recipes_keep_their_values():
    """The synthesis and QA recipes were Python dicts before they were YAML files: the same values."""
    assert get_synth_recipe("paper") == SynthRecipe()
    assert get_synth_recipe("demo") == SynthRecipe(positives=12, hard_negatives=6, random_negatives=6, num_frames=8,
                                                   width=192, height=160, qa="demo")
    assert get_synth_recipe("tiny") == SynthRecipe(positives=3, hard_negatives=2, random_negatives=1, num_frames=4,
                                                   width=160, height=128, qa="tiny")
    assert get_recipe("paper") == QARecipe()
    assert get_recipe("demo") == QARecipe(existence=6, existence_each=2, appearance=2, action=2, location=2,
                                          decision_first=True)
    assert get_recipe("tiny") == QARecipe(existence=2, existence_each=1, appearance=1, action=1, location=1)


def test_every_shipped_recipe_loads_and_is_headed_by_its_command():
    kinds = {"train": TrainRecipe, "synth": SynthRecipe, "qa": QARecipe, "benchmark": BenchmarkRecipe}
    for kind, cls in kinds.items():
        assert recipes.names(kind), kind
        for name in recipes.names(kind):
            assert isinstance(recipes.load(kind, name, cls), cls)
            assert recipes.path(kind, name).read_text().startswith("# pvchat "), (kind, name)
    assert recipes.names("benchmark") == ("default",) and load_recipe() == load_recipe("default")


def test_a_yaml_path_works_where_a_name_does(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("positives: 5\nqa: tiny\n")
    assert get_synth_recipe(str(p)) == SynthRecipe(positives=5, qa="tiny")
    assert get_synth_recipe(p) == SynthRecipe(positives=5, qa="tiny")
    p.write_text("existence: 3\n")
    assert get_recipe(p) == QARecipe(existence=3)
    p.write_text("")  # an empty file: the defaults
    assert get_recipe(p) == QARecipe()


def test_nested_sections_override_their_default(tmp_path):
    p = tmp_path / "train.yaml"
    p.write_text("synthesize: tiny\nstage2: {lr_lora: 1e-3, num_frames: 4}\n")
    r = load_train_recipe(p)
    assert r.stage1.stage == 1 and r.stage1.epochs == 1  # left out: stage 1's defaults
    assert r.stage2.stage == 2 and r.stage2.lr_lora == 1e-3 and r.stage2.num_frames == 4 and r.synthesize == "tiny"
    p.write_text("stage1: 3\n")
    with pytest.raises(ConfigError, match="section stage1 must be a mapping"):
        load_train_recipe(p)


def test_unknown_keys_are_one_line_errors_naming_the_allowed_ones(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("positivs: 3\n")
    with pytest.raises(ConfigError, match=r"unknown field 'positivs'; allowed: positives, ") as e:
        get_synth_recipe(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)
    p.write_text("stage2:\n  lr_lorra: 1.0e-3\n")
    with pytest.raises(ConfigError, match=r"unknown field 'stage2.lr_lorra'; allowed in stage2: stage, epochs"):
        load_train_recipe(p)
    p.write_text("stage3: {}\n")
    with pytest.raises(ConfigError, match=r"unknown field 'stage3'; allowed: stage1, stage2, synthesize"):
        load_train_recipe(p)
    with pytest.raises(ConfigError, match="benchmark recipe: unknown fields 'a', 'b'; allowed: seed, "):
        load_recipe({"a": 1, "b": 2})


def test_values_are_checked_by_the_dataclass(tmp_path):
    p = tmp_path / "r.yaml"
    for text, message in (("num_frames: 0\n", "num_frames must be an integer >= 1"),
                          ("qa: 3\n", "qa must be a QA recipe"), ("fps: fast\n", "fps must be a number")):
        p.write_text(text)
        with pytest.raises(ConfigError, match=message):
            get_synth_recipe(p)
    p.write_text("captioner: bse\n")
    with pytest.raises(ConfigError, match="captioner must be base"):
        load_train_recipe(p)
    for text in ("pair_clips: -1\n", "pair_clips: many\n", "pair_clips: true\n"):
        p.write_text(text)
        with pytest.raises(ConfigError, match="pair_clips must be an integer >= 0"):
            load_train_recipe(p)
    assert load_train_recipe("small").pair_clips == 8 and load_train_recipe("face").pair_clips == 0
    p.write_text("stage1: {stage: 2}\n")
    with pytest.raises(ConfigError, match="stage1.stage must be 1"):
        load_train_recipe(p)
    p.write_text("decision_first: maybe\n")
    with pytest.raises(ConfigError, match="decision_first must be true or false"):
        get_recipe(p)
    p.write_text("fps: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(p)


def test_unknown_names_list_the_shipped_ones():
    with pytest.raises(ConfigError, match="unknown synthesis recipe 'huge'; choose one of: demo, paper, quick, tiny, or a YAML"):
        get_synth_recipe("huge")
    with pytest.raises(ConfigError, match="unknown training recipe 'huge'; choose one of: ablate, demo, face"):
        load_train_recipe("huge")
    with pytest.raises(ConfigError, match="choose one of: default, or a YAML path"):
        load_recipe("huge")
