"""Video decode, sampling and encode with PyAV (its bundled FFmpeg; no torchvision/decord).

Everything streams: frames are decoded one at a time and only the frames asked for are kept,
so memory stays bounded for an hour of 1080p. Any file PyAV cannot read (not a video, corrupt,
truncated, empty) raises :class:`pvchat.errors.InputError` with a one-line message.

Sampling follows the official PVChat loader (research/pvchat-official.md §2.7): ``T`` frames at
``start + round(seg * i)`` with ``seg = (N - 1) / T`` and ``start = int(seg / 2)``.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import av
import av.error
import cv2
import numpy as np
import torch

from pvchat.errors import InputError
from pvchat.io import atomic_path

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Container format per output suffix (the temporary file has no telling suffix).
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` reads from the container header (``num_frames`` may be an estimate)."""

    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


@contextlib.contextmanager
def _open(path: str | os.PathLike) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` for reading and yield (container, first video stream); errors → InputError."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: a directory, not a video file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not a video")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable video ({_one_line(e)})") from None
    try:
        if not container.streams.video:
            raise InputError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads in the decoder
        yield container, stream
    finally:
        container.close()


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _stream_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read size, frame rate, frame count (header value, else duration × fps) and duration."""
    with _open(path) as (container, stream):
        fps = _stream_fps(stream)
        duration = _stream_duration(container, stream)
        n = int(stream.frames or 0)
        if n <= 0 and fps > 0 and duration > 0:
            n = int(round(duration * fps))
        if duration <= 0 and n > 0 and fps > 0:
            duration = n / fps
        w, h = stream.codec_context.width, stream.codec_context.height
        if not w or not h:
            raise InputError(f"{path}: video stream has no frame size")
        return VideoInfo(width=int(w), height=int(h), fps=fps, num_frames=n, duration_s=duration)


def check_video(path: str | os.PathLike) -> VideoInfo:
    """The one rule for what a video is, for every command, the Python API and the web app alike.

    A video is a file that PyAV opens as one and that decodes to at least two frames: the type is
    decided by decoding, never by the file's name, so a text file or a PNG called ``clip.mp4`` is
    refused, and so is a still image (one frame), and a file cut short of the frames its header
    lists (a truncated download). Returns :func:`probe`'s info; anything else is an
    :class:`InputError` with a one-line message. Only the first two frames are decoded here; the
    rest is demuxed (read, not decoded) to count the frames that are there.
    """
    info = probe(path)
    decoded = 0
    for _ in _decode(path):
        decoded += 1
        if decoded >= 2:
            break
    if decoded < 2:
        raise InputError(f"{path}: a single frame (a still image?), not a video")
    expected = _header_frames(path)  # exact in mp4/mov headers; 0 when unknown
    if expected:
        present = _count_packets(path)
        if present + max(2, expected // 50) < expected:
            raise InputError(f"{path}: truncated video ({present} of the {expected} frames its header lists)")
    return info


def _decode(path: str | os.PathLike) -> Iterator[tuple[int, float, av.VideoFrame, float]]:
    """Yield (index, time s, frame, stream fps) for every decoded frame, streaming.

    Raises InputError if decoding fails, the stream holds no frame at all, or it ends well short
    of the frame count in its header (a truncated file; raised after the last frame).
    """
    with _open(path) as (container, stream):
        fps = _stream_fps(stream)
        t0 = stream.start_time if stream.start_time is not None else 0
        count = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is not None and frame.time_base is not None:
                    t = float((frame.pts - t0) * frame.time_base)
                else:
                    t = count / fps if fps else 0.0
                yield count, t, frame, fps
                count += 1
        except (av.error.FFmpegError, EOFError) as e:
            raise InputError(f"{path}: corrupt or truncated video ({_one_line(e)})") from None
        if count == 0:
            raise InputError(f"{path}: no decodable video frames")
        expected = int(stream.frames or 0)  # exact in mp4/mov headers; 0 when unknown
        if expected and count + max(2, expected // 50) < expected:
            raise InputError(f"{path}: truncated video (decoded {count} of {expected} frames)")


def _to_rgb(frame: av.VideoFrame, max_side: int | None = None) -> np.ndarray:
    """Frame → (H, W, 3) uint8 RGB, downscaled (area) so that max(H, W) <= max_side."""
    w, h = frame.width, frame.height
    if max_side is not None and max(w, h) > max_side:
        s = max_side / max(w, h)
        w, h = max(1, round(w * s)), max(1, round(h * s))
        return frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
    return frame.to_ndarray(format="rgb24")


def uniform_indices(num_total: int, num_frames: int = 8) -> list[int]:
    """The official PVChat frame indices: ``start + round(seg * i)``, ``seg = (N-1)/T``, ``start = int(seg/2)``."""
    if num_total <= 0 or num_frames <= 0:
        raise ValueError(f"need num_total > 0 and num_frames > 0 (got {num_total}, {num_frames})")
    seg = (num_total - 1) / num_frames
    start = int(seg / 2)
    return [min(start + int(round(seg * i)), num_total - 1) for i in range(num_frames)]


def _pick(path: str | os.PathLike, indices: Sequence[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode once, keeping only the wanted indices; returns ({index: rgb}, frames decoded)."""
    wanted, last = set(indices), max(indices)
    kept: dict[int, np.ndarray] = {}
    n = 0
    for i, _, frame, _ in _decode(path):
        n = i + 1
        if i in wanted:
            kept[i] = _to_rgb(frame)
        if i >= last:
            break
    return kept, n


def _header_frames(path: str | os.PathLike) -> int:
    """The exact frame count some containers (mp4, mov) store; 0 when absent."""
    with _open(path) as (_, stream):
        return int(stream.frames or 0)


def _count_packets(path: str | os.PathLike) -> int:
    """Frame count by demuxing (no decoding): one packet per frame for video streams."""
    with _open(path) as (container, stream):
        try:
            return sum(1 for pkt in container.demux(stream) if pkt.size)
        except (av.error.FFmpegError, EOFError) as e:
            raise InputError(f"{path}: corrupt or truncated video ({_one_line(e)})") from None


def snippet_indices(num_total: int, num_frames: int = 8, snippet: int = 1) -> list[int]:
    """:func:`uniform_indices`, each followed by the ``snippet - 1`` frames after it (clamped to the
    last): T snippets of consecutive frames, as Temporal Segment Networks sample (Wang et al., 2016),
    so motion faster than the gap between the T steps is still seen (a wave, a mouth that talks)."""
    if snippet < 1:
        raise ValueError(f"snippet must be >= 1 (got {snippet})")
    return [min(i + d, num_total - 1) for i in uniform_indices(num_total, num_frames) for d in range(snippet)]


def read_frames_uniform(path: str | os.PathLike, num_frames: int = 8, snippet: int = 1) -> np.ndarray:
    """``num_frames`` frames spread over the video as the official loader does (paper §4.1: T = 8),
    each with the ``snippet - 1`` frames after it (:func:`snippet_indices`).

    Returns (T·snippet, H, W, 3) uint8 RGB, step-major. ``N`` is the header's frame count (mp4/mov)
    or else a count of packets (mkv, webm; no decoding). One streaming decode pass; if ``N``
    overstates the frames that decode, a second pass uses the decoded count.
    """
    total = _header_frames(path) or _count_packets(path)
    indices = snippet_indices(total, num_frames, snippet)
    kept, decoded = _pick(path, indices)
    if len(kept) < len(set(indices)):  # header overstated the length: redo with the true count
        indices = snippet_indices(decoded, num_frames, snippet)
        kept, _ = _pick(path, indices)
    return np.stack([kept[i] for i in indices])  # (T·snippet, H, W, 3)


def iter_frames(
    path: str | os.PathLike, fps: float = 8.0, max_side: int | None = None
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Stream frames resampled to ``fps`` as (frame index, time s, (H, W, 3) uint8 RGB).

    A frame is kept when its timestamp reaches the next point of a ``1/fps`` grid, so variable
    frame rates and sources slower than ``fps`` work (every frame is kept then). ``fps <= 0``
    keeps every frame. ``max_side`` downscales (area filter) so max(H, W) <= max_side. Only one
    decoded frame is alive at a time.
    """
    step = 1.0 / fps if fps and fps > 0 else 0.0
    next_t = -math.inf
    for i, t, frame, _ in _decode(path):
        if t + 1e-6 < next_t:
            continue
        yield i, t, _to_rgb(frame, max_side)
        if step:
            next_t = (math.floor(t / step + 1e-6) + 1) * step


def read_first_frame(path: str | os.PathLike) -> np.ndarray:
    """The first decodable frame as (H, W, 3) uint8 RGB."""
    for _, _, frame in iter_frames(path, fps=0):
        return frame
    raise InputError(f"{path}: no decodable video frames")  # pragma: no cover (_decode raises first)


def _even_pad(frame: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = h - frame.shape[0], w - frame.shape[1]
    if ph or pw:
        frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return frame


def write_video(
    path: str | os.PathLike, frames: Iterable[np.ndarray] | np.ndarray, fps: float = 8.0, crf: int = 23
) -> None:
    """Encode RGB frames to an h264 (libx264, yuv420p) video, atomically.

    ``frames`` is a (T, H, W, 3) uint8 array or any iterable of (H, W, 3) uint8 frames (consumed
    once, streaming). Odd sizes are padded by one edge pixel to even. The file appears at ``path``
    only when complete. Raises ValueError on an empty sequence or frames of differing size.
    """
    path = Path(path)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    fmt = _FORMATS.get(path.suffix.lower(), "mp4")
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        container = av.open(str(tmp), mode="w", format=fmt, options=options)
        try:
            stream = None
            size = None
            for k, frame in enumerate(frames):
                frame = np.asarray(frame)
                if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                    raise ValueError(f"frame {k}: expected (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
                if stream is None:
                    size = frame.shape[:2]
                    h, w = size[0] + size[0] % 2, size[1] + size[1] % 2
                    stream = container.add_stream("libx264", rate=rate)
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    stream.options = {"crf": str(int(crf)), "preset": "veryfast"}
                elif frame.shape[:2] != size:
                    raise ValueError(f"frame {k}: size {frame.shape[:2]} differs from the first frame's {size}")
                vf = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(_even_pad(frame, stream.height, stream.width)), format="rgb24"
                )
                for packet in stream.encode(vf):
                    container.mux(packet)
            if stream is None:
                raise ValueError("write_video: no frames to write")
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()


def to_model_input(
    frames: np.ndarray,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB → (T, 3, size, size) float32, bicubic resize and mean/std normalise.

    This is the per-frame transform of the official loader (§2.7) without its 2:1 HD tiling.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {frames.shape}")
    out = np.empty((frames.shape[0], size, size, 3), dtype=np.float32)
    for t, f in enumerate(frames):
        out[t] = cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC)
    if frames.dtype == np.uint8:
        out /= 255.0
    out = (out - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (T, 3, size, size)
