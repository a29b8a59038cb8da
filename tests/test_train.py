"""The training loop on a tiny manifest: it learns, logs, plots, and resumes bit-exactly."""

import json

import numpy as np
import pytest
import torch

from pvchat.data import QADataset, QARecord, read_manifest
from pvchat.errors import ConfigError, InputError
from pvchat.model.presets import get_preset
from pvchat.model.pvchat import PVChat
from pvchat.train.loop import TrainingError, autocast_dtype, parameter_groups, read_log, train
from pvchat.train.recipe import StageRecipe, stage2


@pytest.fixture(scope="module")
def manifest(red_blue_data):
    return red_blue_data / "manifest.jsonl"


def _model(preset="tiny"):
    torch.manual_seed(0)
    cfg = get_preset(preset)
    cfg.subjects = ["sks"]
    return PVChat.from_config(cfg)


def _recipe(**kw):
    # the tiny preset is random-init: it needs larger rates than the paper's (which tune a pretrained model)
    kw = {"lr_subject": 1e-2, "lr_qformer": 1e-2, "lr_lora": 1e-2, "epochs": 10, **kw}
    return stage2(num_frames=4, checkpoint_every=100, **kw)


def test_manifest_round_trip_and_errors(manifest, tmp_path):
    recs = read_manifest(manifest)
    assert len(recs) == 4 and recs[0].qa[0].label is True
    assert len(QADataset(manifest, stage=1, image_size=32)) == 6  # existence + appearance
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match="not valid JSON"):
        read_manifest(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="QA type"):
        QARecord("smell", "q", "a")


def test_parameter_groups_follow_the_paper():
    m = _model()
    groups = {g["name"]: g for g in parameter_groups(m, StageRecipe(stage=2), ["sks"])}
    assert groups["subject"]["lr"] == 1e-4 and groups["qformer"]["lr"] == 1e-5 and groups["lora"]["lr"] == 1e-5
    assert "vision" not in groups and not any(p.requires_grad for p in m.vision.parameters())
    groups = {g["name"]: g for g in parameter_groups(m, StageRecipe(stage=2, train_last_k=1), ["sks"])}
    assert len(groups["vision"]["params"]) > 0
    m.add_subject("Anna")
    groups = {g["name"]: g for g in parameter_groups(m, StageRecipe(stage=2), ["Anna"])}
    assert not m.qformer.subject_queries[0].requires_grad  # the earlier person stays frozen
    assert m.qformer.subject_queries[1].requires_grad


def test_training_learns_logs_and_plots(manifest, tmp_path):
    # the demo preset (whole LLM trained): LoRA on a random-init LLM (tiny) learns red/blue in 20
    # steps for 2 of 6 seeds, and which ones flipped with the heap layout left by earlier tests;
    # the demo preset learns it for 6 of 6 seeds
    m = _model("demo")
    ds = QADataset(manifest, stage=2, num_frames=4, image_size=32, types=("existence",))
    assert len(ds) == 4
    result = train(m, ds, _recipe(lr_subject=3e-3, lr_qformer=3e-3, lr_lora=3e-3), tmp_path / "run", progress=False)
    rows = read_log(result.log)
    assert result.steps == len(rows) == 10 * 2
    assert np.mean([r["lm"] for r in rows[-3:]]) < 0.5 * np.mean([r["lm"] for r in rows[:3]])
    assert rows[-1]["beta"] != rows[0]["beta"] and len(rows[0]["head_active"]) == 3
    assert rows[-1]["lm"] < 1.5
    assert result.plot is not None and result.plot.stat().st_size > 10_000
    m.eval()
    red = ds.frames(ds.clips[0]).unsqueeze(0)
    blue = ds.frames(ds.clips[1]).unsqueeze(0)
    assert m.generate(["Is <sks> in the video?"], pixel_values=red, max_new_tokens=4)[0].startswith("Yes")
    assert m.generate(["Is <sks> in the video?"], pixel_values=blue, max_new_tokens=4)[0].startswith("No")


def test_resume_is_bit_exact(manifest, tmp_path):
    ds = QADataset(manifest, stage=2, num_frames=4, image_size=32)
    recipe = _recipe(epochs=2, schedule="cosine")  # the schedule follows the step, so it resumes too
    full = _model()
    train(full, ds, recipe, tmp_path / "full", progress=False)

    part = _model()
    r = train(part, ds, recipe, tmp_path / "part", progress=False, stop_after_steps=4)
    assert r.steps == 4
    resumed = _model()  # a new process would rebuild the base the same way
    r = train(resumed, ds, recipe, tmp_path / "part", progress=False, resume=True)
    assert r.steps == 6
    for (n, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), n
    assert torch.equal(full.sparsity.beta, resumed.sparsity.beta)
    assert len(read_log(tmp_path / "part" / "log.jsonl")) == 6


def test_cosine_schedule_goes_from_lr_to_a_tenth():
    r = stage2(schedule="cosine")
    f = [r.lr_factor(s, 100) for s in range(101)]
    assert f[0] == 1.0 and f[-1] == pytest.approx(0.1) and f[50] == pytest.approx(0.55)
    assert all(a >= b for a, b in zip(f, f[1:]))
    assert stage2().lr_factor(50, 100) == 1.0  # constant by default


def test_recipe_numbers_are_checked(manifest, tmp_path):
    from pvchat.train.recipe import load_recipes

    p = tmp_path / "r.yaml"
    p.write_text("stage2:\n  lr_lora: 1e-4\n")  # YAML 1.1 reads this as a string
    assert load_recipes(p)["stage2"].lr_lora == 1e-4
    p.write_text("stage2:\n  lr_lora: fast\n")
    with pytest.raises(ConfigError, match="lr_lora must be a number"):
        load_recipes(p)
    p.write_text("stage2:\n  schedule: linear\n")
    with pytest.raises(ConfigError, match="schedule"):
        load_recipes(p)
    from pvchat.commands.train import train as train_command

    with pytest.raises(ConfigError, match="schedule"):  # before anything is written to the run dir
        train_command(manifest.parent, tmp_path / "run", recipe=str(p))
    assert not (tmp_path / "run").exists()
    p.write_text("stage2:\n  batch_size: 2.5\n")
    with pytest.raises(ConfigError, match="batch_size must be an integer"):
        load_recipes(p)


def test_bf16_autocast_runs_on_cpu_with_fp32_master_weights(manifest, tmp_path):
    ds = QADataset(manifest, stage=2, num_frames=4, image_size=32, types=("existence",))
    losses = {}
    for precision in ("no", "bf16"):
        m = _model()
        r = train(m, ds, _recipe(epochs=2, mixed_precision=precision), tmp_path / precision, progress=False)
        losses[precision] = [row["loss"] for row in read_log(r.log)]
        assert r.steps == 4 and np.isfinite(losses[precision]).all()
        assert all(p.dtype == torch.float32 for p in m.parameters())  # master weights stay fp32
    first = losses["no"][0], losses["bf16"][0]
    assert first[0] != first[1] and abs(first[0] - first[1]) < 0.05 * first[0]  # bf16 really ran, close to fp32
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="fp16 needs a GPU"):
            train(_model(), ds, _recipe(epochs=1, mixed_precision="fp16"), tmp_path / "fp16", progress=False)


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(manifest, tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    assert autocast_dtype("no", cpu) is None and autocast_dtype("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert autocast_dtype("auto", cpu) is None  # emulated bf16 would be slower than fp32
    ds = QADataset(manifest, stage=2, num_frames=4, image_size=32, types=("existence",))
    train(_model(), ds, _recipe(epochs=1, mixed_precision="auto"), tmp_path / "fp32", progress=False)
    assert json.loads((tmp_path / "fp32" / "summary.json").read_text())["precision"] == "float32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert autocast_dtype("auto", cpu) is torch.bfloat16
    train(_model(), ds, _recipe(epochs=1, mixed_precision="auto"), tmp_path / "bf16", progress=False)
    assert json.loads((tmp_path / "bf16" / "summary.json").read_text())["precision"] == "bfloat16"
    with pytest.raises(ConfigError, match="no, bf16, fp16, auto"):
        stage2(mixed_precision="fp8")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_with_loss_scaling_trains_on_a_gpu(manifest, tmp_path):
    ds = QADataset(manifest, stage=2, num_frames=4, image_size=32, types=("existence",))
    m = _model()
    r = train(m, ds, _recipe(epochs=2, mixed_precision="fp16"), tmp_path / "fp16", progress=False)
    losses = [row["loss"] for row in read_log(r.log)]
    assert r.steps == 4 and np.isfinite(losses).all()
    assert all(p.dtype == torch.float32 for p in m.parameters())  # master weights stay fp32
