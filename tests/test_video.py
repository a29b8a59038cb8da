"""pvchat.video: PyAV decode/sample/encode, streaming, and one-line errors for bad files."""

import inspect
import tracemalloc
import wave

import numpy as np
import pytest
import torch

from pvchat import video as V
from pvchat.errors import InputError


def _frames(n=30, h=48, w=64):
    """Frame i is flat grey level 8*i (plus a gradient): identifiable after lossy coding."""
    x = np.linspace(0, 40, w, dtype=np.float32)[None, :, None]
    return np.stack([np.clip(8 * i + x + np.zeros((h, w, 3), np.float32), 0, 255).astype(np.uint8) for i in range(n)])


def _level(frame):
    return (frame[:, :8].mean() - 2.5) / 8  # left columns: gradient ~0..5


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "ramp.mp4"
    V.write_video(path, _frames(), fps=10, crf=12)
    return path


def test_round_trip_and_probe(clip):
    info = V.probe(clip)
    assert (info.width, info.height, info.fps, info.num_frames) == (64, 48, 10.0, 30)
    assert info.duration_s == pytest.approx(3.0, abs=0.15)
    frames = np.stack([f for _, _, f in V.iter_frames(clip, fps=0)])
    assert frames.shape == (30, 48, 64, 3) and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - _frames().astype(int)).mean() < 3


def test_snippets_follow_each_step_with_its_next_frames_as_read_and_as_the_dataset_gives_them(clip):
    from pvchat.data import ClipRecord, QADataset, QARecord

    assert V.snippet_indices(30, 8) == V.uniform_indices(30, 8)
    assert V.snippet_indices(30, 4, 2) == [i + d for i in V.uniform_indices(30, 4) for d in (0, 1)]
    assert V.snippet_indices(3, 8, 2)[-2:] == [2, 2]  # the last frame has no next: clamped
    with pytest.raises(ValueError, match="snippet"):
        V.snippet_indices(30, 4, 0)
    frames = V.read_frames_uniform(clip, 4, snippet=2)
    assert [round(_level(f)) for f in frames] == V.snippet_indices(30, 4, 2)
    record = ClipRecord(clip.name, ["Ann"], [QARecord("existence", "Is <Ann> here?", "Yes.")], stage=[1, 2])
    still = QADataset([record], stage=1, image_size=32, root=clip.parent, snippet=2).frames(clip)
    assert still.shape == (2, 3, 32, 32) and torch.equal(still[0], still[1])  # a still: the same frame twice
    moving = QADataset([record], stage=2, num_frames=4, image_size=32, root=clip.parent, snippet=2).frames(clip)
    assert moving.shape == (8, 3, 32, 32) and not torch.equal(moving[0], moving[1])


def test_odd_size_is_padded_to_even(tmp_path):
    src = _frames(n=5, h=33, w=51)
    V.write_video(tmp_path / "odd.mp4", src, fps=5)
    out = V.read_first_frame(tmp_path / "odd.mp4")
    assert out.shape == (34, 52, 3)
    assert np.abs(out[:33, :51].astype(int) - src[0].astype(int)).mean() < 4


def test_uniform_indices_follow_the_official_formula():
    assert V.uniform_indices(30, 8) == [1, 5, 8, 12, 15, 19, 23, 26]
    for n, t in [(8, 8), (100, 8), (3, 8), (1000, 16)]:
        seg = (n - 1) / t
        expect = [min(int(seg / 2) + round(seg * i), n - 1) for i in range(t)]
        assert V.uniform_indices(n, t) == expect


def test_read_frames_uniform_returns_those_frames(clip, tmp_path):
    mkv = tmp_path / "ramp.mkv"  # matroska stores no frame count: counted from packets
    V.write_video(mkv, _frames(), fps=10, crf=12)
    assert [round(_level(f)) for f in V.read_frames_uniform(mkv, 8)] == V.uniform_indices(30, 8)
    frames = V.read_frames_uniform(clip, 8)
    assert frames.shape == (8, 48, 64, 3)
    levels = [round(_level(f)) for f in frames]
    assert levels == V.uniform_indices(30, 8)


def test_iter_frames_resamples_to_fps_and_downscales(clip):
    got = list(V.iter_frames(clip, fps=4))
    times = [t for _, t, _ in got]
    assert len(got) == 12 and times[0] == 0.0
    assert all(0.19 <= b - a <= 0.31 for a, b in zip(times, times[1:]))
    assert [i for i, _, _ in got] == [round(t * 10) for t in times]
    assert len(list(V.iter_frames(clip, fps=50))) == 30  # faster than the source: every frame
    small = next(V.iter_frames(clip, fps=1, max_side=32))[2]
    assert small.shape == (24, 32, 3)


def test_iter_frames_streams_without_decoding_everything(tmp_path, monkeypatch):
    path = tmp_path / "long.mp4"
    h, w, n = 240, 320, 160
    rng = np.random.default_rng(0)
    V.write_video(path, (rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)), fps=25, crf=35)
    decoded = []
    real = V._decode

    def counting(p):
        for item in real(p):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(V, "_decode", counting)
    it = V.iter_frames(path, fps=0)
    assert inspect.isgenerator(it)
    next(it)
    assert len(decoded) == 1  # the first frame came before the rest were decoded
    it.close()
    # Peak Python-visible memory while walking the whole video stays a few frames, not n frames.
    tracemalloc.start()
    count = sum(1 for _ in V.iter_frames(path, fps=0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == n
    assert peak < 8 * h * w * 3 < n * h * w * 3


def test_to_model_input_shape_and_normalisation():
    mean = np.array(V.IMAGENET_MEAN) * 255
    frames = np.broadcast_to(np.round(mean).astype(np.uint8), (3, 50, 70, 3)).copy()
    x = V.to_model_input(frames, size=32)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert x.abs().max() < 0.02  # the ImageNet mean maps to ~0
    white = V.to_model_input(np.full((1, 10, 10, 3), 255, np.uint8), size=16)
    expect = (1 - torch.tensor(V.IMAGENET_MEAN)) / torch.tensor(V.IMAGENET_STD)
    assert torch.allclose(white[0, :, 0, 0], expect, atol=1e-5)


def _wav(path):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(b"\x00\x01" * 8000)


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "audio_only", "truncated_head", "truncated_tail"])
def test_bad_files_raise_one_line_input_error(tmp_path, clip, kind):
    path = tmp_path / f"{kind}.mp4"
    data = clip.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n" * 50)
    elif kind == "audio_only":
        path = tmp_path / "audio.wav"
        _wav(path)
    elif kind == "truncated_head":  # header cut: cannot even open
        path.write_bytes(data[:200])
    elif kind == "truncated_tail":  # moov at the front (faststart), frames missing at the end
        path.write_bytes(data[: len(data) // 2])
    for fn in (V.read_frames_uniform, lambda p: list(V.iter_frames(p)), V.read_first_frame):
        if kind == "truncated_tail" and fn is V.read_first_frame:
            continue  # the first frame is intact; only reading to the end can tell
        with pytest.raises(InputError) as e:
            fn(path)
        assert "\n" not in str(e.value) and str(path.name) in str(e.value)


def test_write_video_is_atomic(tmp_path):
    def broken():
        yield from _frames(n=3)
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError):
        V.write_video(tmp_path / "out.mp4", broken())
    assert list(tmp_path.iterdir()) == []  # no partial file, no temp left
    with pytest.raises(ValueError):
        V.write_video(tmp_path / "none.mp4", [])
    with pytest.raises(ValueError):
        V.write_video(tmp_path / "mixed.mp4", [np.zeros((8, 8, 3), np.uint8), np.zeros((10, 8, 3), np.uint8)])
    assert list(tmp_path.iterdir()) == []
