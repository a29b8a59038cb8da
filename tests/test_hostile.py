"""pvchat as a hostile user tries it (issue 15): bad inputs, damaged packs and bases, kill -9, races.

The command-line part runs ``pvchat analyze``, ``learn``, ``ask`` and ``eval`` over a generated
corpus of bad and awkward inputs and asserts what a user must see: a non-zero exit, one line on
stderr, no traceback, and nothing left behind in the workspace; the inputs that are valid videos
(no face, five faces, a 4000×3000 frame, a ten-minute clip) get their one-line refusal or their
answer. Everything is tiny (a random-init ``tiny`` base, packs written without training) so the
module runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pvchat import cli
from pvchat.errors import InputError
from pvchat.io import file_sha256, load_tensors, write_json
from pvchat.pack import CARD, TENSORS, base_info, write_pack
from pvchat.video import write_video

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Is <Ann> in this video?"


# --- the corpus -----------------------------------------------------------------------------------

def _plain(n: int, h: int, w: int) -> np.ndarray:
    """(n, h, w, 3) uint8 smooth frames without faces (a moving gradient)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.dstack([(x * 255 // max(w - 1, 1) + 9 * i) % 256, y * 255 // max(h - 1, 1),
                                np.full_like(x, 90)]).astype(np.uint8) for i in range(n)])


def _five_faces() -> np.ndarray:
    """One frame with five different real faces side by side (LFW subset faces dlib tells apart)."""
    from pvchat.faces.samples import lfw_faces

    faces = lfw_faces(scale=4, pad=30)
    return np.concatenate([faces[i] for i in (0, 7, 18, 46, 52)], axis=1)  # (160, 800, 3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    c = {name: root / f"{name}.mp4" for name in ("empty", "random", "text", "png", "truncated", "directory",
                                                   "missing", "one_frame", "no_face", "five_faces", "huge", "long")}
    c["empty"].write_bytes(b"")
    c["random"].write_bytes(rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    c["text"].write_text("this is not a video\n" * 50)
    Image.fromarray(_plain(1, 48, 64)[0]).save(c["png"], format="PNG")
    whole = root / "whole.mp4"
    write_video(whole, rng.integers(0, 256, (40, 48, 64, 3), dtype=np.uint8), fps=8)
    data = whole.read_bytes()
    c["truncated"].write_bytes(data[: len(data) * 6 // 10])
    c["directory"].mkdir()
    (c["directory"] / "inside.txt").write_text("a directory named like a video")
    write_video(c["one_frame"], _plain(1, 48, 64), fps=8)
    write_video(c["no_face"], _plain(16, 48, 64), fps=8)
    write_video(c["five_faces"], np.stack([_five_faces()] * 8), fps=4)
    write_video(c["huge"], _plain(2, 3000, 4000), fps=2)  # a 4000×3000 frame, twice
    write_video(c["long"], _plain(600, 24, 32), fps=1)  # ten minutes at one frame per second
    return c


BAD = ("empty", "random", "text", "png", "truncated", "directory", "missing", "one_frame")
WHY = {"empty": "empty file", "random": "not a readable video", "text": "not a readable video",
       "png": "single frame", "truncated": "truncated", "directory": "a directory, not a video file",
       "missing": "no such file", "one_frame": "single frame"}


@pytest.fixture(scope="module")
def ann(tmp_path_factory) -> Path:
    """A home with the tiny base and a pack for <Ann> (written from the untrained model: no training)."""
    from pvchat.train.stages import build_base, with_subjects

    home = tmp_path_factory.mktemp("ann") / "home"
    base = build_base(home / "base" / "tiny", "tiny", 0)
    write_pack(with_subjects(base, ["Ann"]), ["Ann"], home / "people" / "Ann" / "pack", base)
    return home


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).exists() else []


def run_cli(capsys, *argv) -> tuple[int, str, list[str]]:
    """``pvchat ARGV`` in this process: (exit code, stdout, stderr lines). A traceback would raise here."""
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, [line for line in out.err.splitlines() if line.strip()]


def one_line_error(result: tuple[int, str, list[str]], *expected: str) -> str:
    """The result of :func:`run_cli` is exit code 2 and one stderr line holding every ``expected`` text."""
    code, _, err = result
    assert code == 2, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and err[0].startswith("pvchat ")
    for text in expected:
        assert text in err[0], err[0]
    return err[0]


# --- 2 and 7. the base's identity is its content, checked on every load ----------------------------

def test_a_rebuilt_base_keeps_its_packs(ann, tmp_path):
    """Same tensors, another file (the metadata in another order, as a rebuild writes it): same base."""
    from safetensors.torch import save_file

    from pvchat.api import Chat

    original = ann / "base" / "tiny"
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(original, rebuilt)
    weights = rebuilt / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata() or {}
    tensors = load_tensors(weights)
    save_file(tensors, str(weights), metadata=dict(reversed(list(metadata.items()))) or {"rebuilt": "yes"})
    assert file_sha256(weights) != file_sha256(original / "model.safetensors")
    assert base_info(rebuilt)["sha256"] == base_info(original)["sha256"]
    assert Chat(["Ann"], home=ann, base=rebuilt).people == ["Ann"]

    tensors[sorted(tensors)[0]].view(-1)[0] += 1.0  # other weights: another base
    save_file(tensors, str(weights), metadata=metadata)
    assert base_info(rebuilt)["sha256"] != base_info(original)["sha256"]
    with pytest.raises(InputError, match="another base model"):
        Chat(["Ann"], home=ann, base=rebuilt)


def test_changed_bytes_are_caught_even_with_size_and_mtime_kept(ann, tmp_path):
    from pvchat.api import Chat

    home = tmp_path / "home"
    shutil.copytree(ann, home)
    base = home / "base" / "tiny"
    card = json.loads((home / "people" / "Ann" / "pack" / CARD).read_text())
    card["base"]["path"] = str(base.resolve())
    write_json(home / "people" / "Ann" / "pack" / CARD, card)
    assert Chat(["Ann"], home=home).people == ["Ann"]
    weights = base / "model.safetensors"
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x40  # the last byte belongs to a tensor
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(InputError, match="another base model"):
        Chat(["Ann"], home=home)


def test_a_corrupt_pack_of_the_right_size_says_its_hash_differs(ann, tmp_path):
    from pvchat.api import Chat

    pack = tmp_path / "pack"
    shutil.copytree(ann / "people" / "Ann" / "pack", pack)
    data = bytearray((pack / TENSORS).read_bytes())
    data[-3] ^= 0x01
    (pack / TENSORS).write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        Chat([str(pack)], home=ann)
    assert "sha256" in str(e.value) and "differs" in str(e.value) and "\n" not in str(e.value)


def test_packs_from_before_content_hashes_still_load(ann, tmp_path):
    from pvchat.api import Chat

    pack = tmp_path / "pack"
    shutil.copytree(ann / "people" / "Ann" / "pack", pack)
    card = json.loads((pack / CARD).read_text())
    assert card["base"]["identity"] == "tensors-sha256"
    del card["base"]["identity"]
    card["base"]["sha256"] = file_sha256(ann / "base" / "tiny" / "model.safetensors")  # the old meaning
    write_json(pack / CARD, card)
    assert Chat([str(pack)], home=ann).people == ["Ann"]


# --- 4. a damaged card or a file for a benchmark: one line ------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("base"), "'base' is missing"),
    (lambda c: c["base"].pop("path"), "'base.path' is missing"),
    (lambda c: c.update(version="two"), "'version' must be a whole number"),
    (lambda c: c.update(names=["Ann", "Ann"]), "'names'"),
    (lambda c: c.update(files={}), "'files.pack.safetensors'"),
    (lambda c: c.update(size_bytes="big"), "'size_bytes'"),
    (lambda c: c["config"].__setitem__("preset", 7), "'config.preset'"),
])
def test_a_damaged_card_is_one_line(edit, message, ann, tmp_path, capsys):
    home = tmp_path / "home"
    shutil.copytree(ann, home)
    card_path = home / "people" / "Ann" / "pack" / CARD
    card = json.loads(card_path.read_text())
    edit(card)
    write_json(card_path, card)
    from pvchat.api import Chat, list_people

    with pytest.raises(InputError, match="damaged card"):
        Chat(["Ann"], home=home)
    assert "damaged card" in list_people(home)[0]["error"]
    video = tmp_path / "v.mp4"
    write_video(video, _plain(4, 48, 64), fps=8)
    one_line_error(run_cli(capsys, "ask", video, QUESTION, "--home", home), "damaged card", message)


def test_eval_on_a_file_is_one_line(corpus, capsys):
    one_line_error(run_cli(capsys, "eval", corpus["no_face"], "--baseline", "face"), "a file, not a benchmark")


# --- 5. names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Zed\n", "unk", "pad", "s", "video", "filename", "Zed\r", "1Zed", "Z" * 33])
def test_names_follow_one_rule(name, corpus, tmp_path, capsys):
    from pvchat.model.prompt import validate_name

    with pytest.raises(InputError, match="invalid subject name"):
        validate_name(name)
    home = tmp_path / "ws"
    err = one_line_error(run_cli(capsys, "learn", corpus["no_face"], "--name", name, "--home", home),
                         "invalid subject name")
    assert "\n" not in err and files_under(home) == []


def test_pack_names_follow_the_name_rule(corpus, ann, tmp_path, capsys):
    bench = tmp_path / "bench"
    for argv in (("ask", corpus["no_face"], QUESTION, "--pack", "../../etc", "--home", ann),
                 ("chat", corpus["no_face"], "--pack", "../../etc", "--home", ann),
                 ("eval", bench, "--pack", "../../etc", "--home", ann)):
        one_line_error(run_cli(capsys, *argv), "invalid subject name '../../etc'")
    assert not bench.exists()  # refused before a benchmark was built
