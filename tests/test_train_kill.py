"""``pvchat train`` killed with SIGKILL at any moment resumes to bit-identical weights and log.

Every run is a subprocess of the real CLI on the tiny preset; the reference is an uninterrupted
run in the same way (same thread count), so CPU results are deterministic and must match exactly.
The kill-twice and kill-at-a-random-moment variants are marked slow (``pytest -m slow``); set
``PVCHAT_KILL_SEED`` to replay a random one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pvchat.data import QADataset
from pvchat.model.presets import get_preset
from pvchat.model.pvchat import PVChat
from pvchat.train.loop import read_log, train
from pvchat.train.recipe import stage2

pytestmark = pytest.mark.integration  # real CLI processes killed with SIGKILL

RECIPE = """\
stage1: {epochs: 4, batch_size: 2, lr_subject: 1.0e-2, lr_qformer: 1.0e-2, lr_lora: 1.0e-2, checkpoint_every: 3}
stage2: {epochs: 4, batch_size: 2, num_frames: 4, lr_subject: 1.0e-2, lr_qformer: 1.0e-2, lr_lora: 1.0e-2,
         checkpoint_every: 3}
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # same threads in every run


@pytest.fixture(scope="module")
def setup(tmp_path_factory, red_blue_data):
    root = tmp_path_factory.mktemp("kill")
    shutil.copytree(red_blue_data, root / "data")
    (root / "recipe.yaml").write_text(RECIPE)
    reference = root / "reference"
    subprocess.run(_cmd(root, reference), env=ENV, check=True, capture_output=True, timeout=120)
    return root, reference


def _cmd(root: Path, out: Path, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "pvchat.cli", "train", str(root / "data"), str(out), "--preset", "tiny",
           "--recipe", str(root / "recipe.yaml"), "--home", str(root / "home")]
    return cmd + ["--resume"] if resume else cmd


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _run_and_kill(root: Path, out: Path, resume: bool, until) -> None:
    """Start ``pvchat train`` and SIGKILL it as soon as ``until()`` holds (it must not finish first)."""
    proc = subprocess.Popen(_cmd(root, out, resume), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not until():
            assert proc.poll() is None, "training finished before the kill"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def _assert_same_run(reference: Path, out: Path) -> None:
    subprocess.run(_cmd(out.parent, out, resume=True), env=ENV, check=True, capture_output=True, timeout=120)
    want, got = load_file(reference / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    for stage in ("stage1", "stage2"):  # the log too: every step once, the same numbers
        assert (out / stage / "log.jsonl").read_text() == (reference / stage / "log.jsonl").read_text(), stage
        assert not list((out / stage).glob(".checkpoint.*")), "stale checkpoint temporaries left behind"


def test_kill_mid_stage2_then_resume_is_bit_exact(setup):
    """Killed between two stage-2 checkpoints (steps 3 and 6): stage 1 reloads its last checkpoint,
    stage 2 replays steps 4–5; weights and log match the uninterrupted run."""
    root, reference = setup
    out = root / "stage2"
    _run_and_kill(root, out, False, lambda: _lines(out / "stage2" / "log.jsonl") >= 5)
    _assert_same_run(reference, out)


@pytest.mark.slow
def test_killed_twice_then_resume_is_bit_exact(setup):
    """Killed mid stage 1 (between checkpoints), then killed again mid stage 2, then run to the end."""
    root, reference = setup
    out = root / "twice"
    _run_and_kill(root, out, False, lambda: _lines(out / "stage1" / "log.jsonl") >= 4)
    assert json.loads((out / "stage1" / "checkpoint" / "state.json").read_text())["step"] == 3
    _run_and_kill(root, out, True, lambda: _lines(out / "stage2" / "log.jsonl") >= 5)
    _assert_same_run(reference, out)


@pytest.mark.slow
def test_kill_at_a_random_moment_then_resume_is_bit_exact(setup):
    """A kill at a random moment of training (seed printed on failure) leaves a resumable run."""
    root, reference = setup
    seed = int(os.environ.get("PVCHAT_KILL_SEED", random.randrange(10**6)))
    delay = random.Random(seed).uniform(0.0, 1.5)
    out = root / f"random{seed}"
    started: list[float] = []

    def until() -> bool:
        if not started and _lines(out / "stage1" / "log.jsonl") >= 1:
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] >= delay

    _run_and_kill(root, out, False, until)
    try:
        _assert_same_run(reference, out)
    except AssertionError as e:
        raise AssertionError(f"PVCHAT_KILL_SEED={seed} (kill {delay:.3f} s after the first step): {e}") from None


def _model():
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    cfg.subjects = ["sks"]
    return PVChat.from_config(cfg)


def test_resume_after_a_kill_inside_a_checkpoint_write_and_a_torn_log_line(tmp_path, red_blue_data):
    """The states a kill can leave, built by hand: the new checkpoint half-written in its temporary
    directory, the old one moved aside (a kill between atomic_dir's two renames), a log with a step
    past the checkpoint and a torn last line. Resume uses the old checkpoint and matches a clean run."""
    ds = QADataset(red_blue_data / "manifest.jsonl", stage=2, num_frames=4, image_size=32)
    recipe = stage2(epochs=2, num_frames=4, lr_subject=1e-2, lr_qformer=1e-2, lr_lora=1e-2, checkpoint_every=2)
    full = _model()
    train(full, ds, recipe, tmp_path / "full", progress=False)

    run = tmp_path / "run"
    train(_model(), ds, recipe, run, progress=False, stop_after_steps=4)
    (run / "checkpoint").rename(run / ".checkpoint.old")
    half = run / ".checkpoint.x1y2.tmp"
    half.mkdir()
    (half / "state.safetensors").write_bytes(b"\x80\x00\x00")
    log = run / "log.jsonl"
    log.write_text(log.read_text() + '{"step": 5, "loss": 1.0}\n{"step": 6, "lo')
    assert [r["step"] for r in read_log(log)] == [1, 2, 3, 4, 5]  # the torn line is skipped

    resumed, ran = _model(), []
    assert train(resumed, ds, recipe, run, progress=False, resume=True, on_step=lambda s, *_: ran.append(s)).steps == 6
    assert ran == [5, 6]  # from the step-4 checkpoint that was moved aside
    for (name, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name
    assert torch.equal(full.sparsity.beta, resumed.sparsity.beta)
    assert log.read_text() == (tmp_path / "full" / "log.jsonl").read_text()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
