"""`pvchat demo --quick` end to end: world → reference → analyze → synthesize → train → questions."""

import json

import pytest

from pvchat.cli import main

pytestmark = pytest.mark.integration  # the CLI end to end: world, analyze, synthesize, train, questions


def test_quick_demo_runs_end_to_end_and_reports(tmp_path, capsys):
    assert main(["demo", "--quick", "--preset", "face", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Existence accuracy on" in out and "Transcript:" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["existence"]["n"] >= 10 and set(report["by_group"]) == {"subject", "stranger", "hard negative"}
    assert len(report["transcript"]) == report["existence"]["n"]
    # it learns the person: well above answering every clip "absent" (8 of 12), on each group
    assert report["existence"]["accuracy"] >= 0.83 and min(report["by_group"].values()) > 0.5
    assert all(r["question"] == f"Is <{report['subject']}> in this video?" for r in report["transcript"])
    assert (tmp_path / "eval.png").stat().st_size > 0
    assert (tmp_path / "run" / "stage2" / "training.png").stat().st_size > 0


def test_quick_demo_learns_with_the_presets_quick_recipe_where_it_has_one():
    from pvchat.choices import default_recipe
    from pvchat.train.stages import stage_recipes

    assert default_recipe("small", quick=True) == "small-quick" and default_recipe("small") == "small"
    assert default_recipe("face", quick=True) == "face"  # no face-quick: the quick demo shrinks the world only
    assert default_recipe("tiny") == "demo"  # a preset without a recipe of its name learns with the demo's
    quick, full = stage_recipes("small-quick"), stage_recipes("small")
    assert quick[1].epochs < full[1].epochs
