"""``pvchat train`` as two CPU processes (torchrun, gloo): DDP keeps the ranks identical.

The ranks train on different halves of every batch, so identical weights (and SPR β) at the end
show that gradients and the R_s statistics are shared; rank 0 alone writes the log and model.
Two people, one named per question: a rank's shard often leaves a subject's query block unused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pvchat.data import ClipRecord, QARecord, write_manifest
from pvchat.video import write_video
from test_train_kill import RECIPE

pytestmark = pytest.mark.integration  # two processes under torchrun

# `pvchat train` as the CLI runs it, keeping each rank's trained model to compare
RANK_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from accelerate import PartialState
    from pvchat.commands.train import train
    from pvchat.io import save_tensors
    from pvchat.train import stages

    data, out, recipe = sys.argv[1:4]
    models = []
    learn = stages.learn_stages
    stages.learn_stages = lambda model, *a, **k: (models.append(model), learn(model, *a, **{**k, "progress": False}))[1]
    train(Path(data), Path(out), preset="tiny", recipe=recipe, home=Path(out).parent / "home")
    rank = PartialState().process_index
    save_tensors(Path(out).parent / f"rank{rank}.safetensors",
                 {**dict(models[0].named_parameters()), "sparsity.beta": models[0].sparsity.beta})
""")


def make_two_people(root):
    """Six clips: red ones show <sks>, blue ones <bob>; each has an existence and an appearance question."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        who, colour = ("sks", (220, 40, 40)) if i % 2 == 0 else ("bob", (40, 40, 220))
        frames = np.zeros((6, 48, 48, 3), np.uint8) + np.array(colour, np.uint8)
        frames += rng.integers(0, 20, frames.shape, dtype=np.uint8)
        write_video(root / f"c{i}.mp4", frames, fps=8)
        qa = [QARecord("existence", f"Is <{who}> in the video?", "Yes.", True),
              QARecord("appearance", f"What is <{who}> wearing?", "A red coat." if who == "sks" else "A blue hat.")]
        records.append(ClipRecord(f"c{i}.mp4", [who], qa, kind="positive"))
    write_manifest(root / "manifest.jsonl", records)


@pytest.mark.timeout(240)
def test_two_cpu_processes_end_with_identical_weights(tmp_path):
    make_two_people(tmp_path / "data")
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "rank.py"), str(tmp_path / "data"), str(out), str(tmp_path / "recipe.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("stage 1:") == 1  # rank 0 alone reports

    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    saved = load_file(out / "model" / "model.safetensors")
    assert all(torch.equal(saved[n], rank0[n]) for n in saved if n in rank0)
    for stage, steps in (("stage1", 24), ("stage2", 24)):  # every step logged once, by rank 0
        rows = [json.loads(line) for line in (out / stage / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(1, steps + 1)), stage
        assert json.loads((out / stage / "checkpoint" / "state.json").read_text())["step"] == steps


def test_beta_moves_by_the_sparsity_of_all_ranks():
    """Eq. 9 under DDP: R_s is summed over ranks first, so every rank applies the same β update."""
    from pvchat.model.presets import get_preset
    from pvchat.model.pvchat import PVChat

    class TwoRanks:  # reduce() as all_reduce(sum) with a second rank that saw R_s = 0.8 once
        def reduce(self, t, reduction):
            assert reduction == "sum"
            return t + torch.cat([torch.full((len(t) - 1,), 0.8), torch.ones(1)])

    ranks = [PVChat.from_config(get_preset("tiny")) for _ in range(2)]
    sp0, sp1 = ranks[0].sparsity, ranks[1].sparsity
    sp0._rs_sum.fill_(0.0), sp0._rs_count.fill_(1)  # this rank saw R_s = 0
    sp1._rs_sum.fill_(0.8), sp1._rs_count.fill_(2)  # the pooled statistics: mean R_s = 0.4
    sp0.pool(lambda t: TwoRanks().reduce(t, reduction="sum"))
    for m in ranks:
        m.sparsity_step()
    assert torch.equal(sp0.beta, sp1.beta)
