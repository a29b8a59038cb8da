"""pvchat ablate: the study registry, config/data mutations, the results table, one tiny study end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pvchat.errors import ConfigError, InputError
from pvchat.eval.ablate import STUDIES, Variant, _set, results_markdown, run_study, write_results
from pvchat.eval.recipe import BenchmarkRecipe
from pvchat.model.presets import get_preset

RECIPE = Path(__file__).parent / "web_recipe.yaml"  # tiny synthesis, a few steps per stage


def test_registry_and_config_mutations():
    assert set(STUDIES) == {"attention", "losses", "data", "queries"}
    seen = {}
    for study, variants in STUDIES.items():
        assert len({v.name for v in variants}) == len(variants)
        for v in variants:
            cfg = get_preset("tiny")
            v.configure(cfg)
            seen[(study, v.name)] = cfg
    assert [seen[("attention", m)].qformer.routing for m in ("mha", "moh", "remoh")] == ["mha", "moh", "remoh"]
    assert (seen[("losses", "no SPR")].loss.spr, seen[("losses", "no SPR")].loss.hae) == ("off", "paper")
    assert seen[("losses", "official HAE")].loss.hae == "official"
    assert [seen[("queries", f"N={n}")].qformer.num_subject_queries for n in (0, 4, 8, 12, 16, 20)] == [0, 4, 8, 12, 16, 20]
    with pytest.raises(ConfigError):
        _set("qformer", routing="nope")(get_preset("tiny"))


def test_data_filters():
    recs = [SimpleNamespace(kind="positive", clip="clips/pos_0000.mp4", people=["A"]),
            SimpleNamespace(kind="negative", clip="clips/neg_hard_0000.mp4", people=[]),
            SimpleNamespace(kind="negative", clip="clips/neg_random_0000.mp4", people=[]),
            SimpleNamespace(kind="random", clip="clips/r.mp4", people=[])]
    kept = {v.name: [r.clip for r in recs if v.keep(r)] for v in STUDIES["data"]}
    assert kept["positives only"] == ["clips/pos_0000.mp4"]
    assert kept["+ hard negatives"] == ["clips/pos_0000.mp4", "clips/neg_hard_0000.mp4"]
    assert len(kept["all (+ random negatives)"]) == 4


def test_a_variant_is_config_overrides_to_the_learn_pipeline(tmp_path, monkeypatch):
    import torch

    from pvchat import learn
    from pvchat.data import ClipRecord, read_manifest, write_manifest
    from pvchat.eval.ablate import train_variant
    from pvchat.model.pvchat import PVChat

    variant = next(v for v in STUDIES["queries"] if v.name == "N=0")
    a = learn.start_model(None, "tiny", ["Kris"], seed=1, configure=variant.configure)
    again = learn.start_model(None, "tiny", ["Kris"], seed=1, configure=variant.configure)
    other = learn.start_model(None, "tiny", ["Kris"], seed=2, configure=variant.configure)
    assert a.config.qformer.num_subject_queries == 0 and a.subjects == ["Kris"]
    assert a.config.preset is None  # no longer the preset's config: no shipped alignment applies
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in a.state_dict().items())  # seeded
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in a.state_dict().items())
    assert get_preset("tiny").qformer.num_subject_queries != 0  # the preset itself is unchanged
    with pytest.raises(ValueError, match="in memory"):  # never saved where the preset's base lies
        learn.start_model(tmp_path / "base", "tiny", ["Kris"], configure=variant.configure)
    assert not (tmp_path / "base").exists()

    # train_variant: the pipeline's start_model (the variant's overrides, the seed) and train, no model of its own
    calls = []
    monkeypatch.setattr(PVChat, "from_config", classmethod(lambda cls, cfg: pytest.fail("ablate built a model")))
    monkeypatch.setattr(learn, "start_model", lambda *a, **k: calls.append(("start_model", a, k)) or "model")
    monkeypatch.setattr(learn, "train", lambda *a, **k: calls.append(("train", a, k)))
    manifest = tmp_path / "data" / "manifest.jsonl"
    write_manifest(manifest, [ClipRecord("clips/pos_0000.mp4", ["Kris"], [], kind="positive"),
                              ClipRecord("clips/neg_random_0000.mp4", [], [], kind="negative")])
    only = next(v for v in STUDIES["data"] if v.name == "positives only")
    run = tmp_path / "run"
    assert train_variant(only, manifest, "Kris", run, "tiny", RECIPE, seed=2, analysis=tmp_path / "analysis") == "model"
    (_, start_args, start_kw), (_, train_args, train_kw) = calls
    assert start_args == (None, "tiny", ["Kris"], [tmp_path / "analysis"])
    assert start_kw == {"seed": 2, "configure": only.configure}
    assert train_args[0] == "model" and train_args[2:] == (run, RECIPE, ["Kris"]) and train_kw == {"resume": False}
    assert [r.clip for r in read_manifest(train_args[1])] == ["clips/pos_0000.mp4"]


def test_write_results(tmp_path):
    rows = [{"variant": "face baseline (training-free)", "Acc": 0.75, "Acc+": 0.5, "Acc-": 1.0, "BLEU": 0.01,
             "BS": 0.3, "n_questions": 36, "train_seconds": None},
            {"variant": "mha", "Acc": 0.5, "Acc+": None, "Acc-": 0.5, "BLEU": 0.0, "BS": 0.2, "n_questions": 36,
             "train_seconds": 12.5}]
    settings = {"preset": "tiny", "recipe": "ablate", "subjects": ["Kris"], "bench": "b"}
    paths = write_results(tmp_path, "attention", rows, settings)
    assert [p.name for p in paths] == ["results.json", "results.md", "results.png"]
    md = (tmp_path / "results.md").read_text()
    assert "| mha | 0.500 | — | 0.500 | — | — | — | — | 0.000 | 0.200 | 36 | 12.500 |" in md
    assert json.loads((tmp_path / "results.json").read_text())["rows"][1]["variant"] == "mha"
    assert results_markdown("attention", rows, settings).startswith("# Ablation: attention")
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_seeds_intervals_and_which_differences_exceed_them(tmp_path):
    from pvchat.eval.ablate import differences, interval, seed_summary

    mean, half = interval([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and half == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-5)
    assert interval([0.4]) == (0.4, None) and interval([]) == (None, None)

    def seed_rows(accs):
        return [{"Acc": a, "Acc+": a, "Acc-": a, "look-alikes": a, "clothing": 0.0, "action": 0.0, "location": 0.0,
                 "BLEU": 0.1, "BS": 0.2, "n_questions": 10} for a in accs]

    rows = [seed_summary("remoh", seed_rows([0.90, 0.92, 0.91])), seed_summary("mha", seed_rows([0.60, 0.62, 0.61])),
            seed_summary("moh", seed_rows([0.80, 0.99, 0.85]))]
    assert rows[0]["seeds"] == 3 and rows[0]["Acc_ci"] > 0 and rows[0]["n_questions"] == 30
    diffs = {d["variant"]: d for d in differences(rows)}
    assert set(diffs) == {"mha", "moh"} and diffs["mha"]["exceeds"] and not diffs["moh"]["exceeds"]
    paths = write_results(tmp_path, "attention", rows, {"preset": "tiny", "recipe": "ablate", "subjects": ["Kris"],
                                                         "bench": "b"})
    md = paths[1].read_text()
    assert "| remoh | 0.910 ± 0.025 |" in md and "remoh − mha: +0.300" in md and "larger than the interval" in md
    assert "within the interval" in md and paths[2].read_bytes()[:4] == b"\x89PNG"


def test_unknown_study(tmp_path):
    with pytest.raises(InputError, match="unknown study"):
        run_study("nope", tmp_path, tmp_path)


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    from pvchat.eval.benchmark import build_benchmark

    recipe = BenchmarkRecipe(world_people=6, pool_people=1, subjects=1, clips_per_group=2, hard_negatives=2,
                             num_frames=8)
    return build_benchmark(tmp_path_factory.mktemp("bench") / "b", recipe, progress=False)


@pytest.mark.slow
def test_tiny_study_end_to_end(tiny_bench, tmp_path):
    variants = [v for v in STUDIES["queries"] if v.name in ("N=0", "N=4")]
    rows = run_study("queries", tmp_path, tiny_bench, subjects=1, preset="tiny", recipe=RECIPE, variants=variants,
                     questions=6, progress=False, seeds=2)
    assert [r["variant"] for r in rows] == ["face baseline (training-free)", "N=0", "N=4"]
    assert rows[0]["n_questions"] == 6
    for name in ("results.md", "results.json", "results.png"):
        assert (tmp_path / "queries" / name).is_file()
    assert "| N=0 |" in (tmp_path / "queries" / "results.md").read_text()
    assert all(r["seeds"] == 2 and r["n_questions"] == 12 for r in rows[1:])
    again = run_study("queries", tmp_path, tiny_bench, subjects=1, preset="tiny", recipe=RECIPE, variants=variants,
                      questions=6, progress=False, seeds=2)  # finished variants are reused
    assert again == rows
    assert isinstance(Variant("x").keep(object()), bool)
