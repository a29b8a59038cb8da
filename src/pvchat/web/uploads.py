"""Checks on an uploaded video: size and duration limits, and that it really decodes.

The type of a file is decided by decoding it with PyAV (:func:`pvchat.video.check_video`, the rule
the command line follows too), never by its name: a text file called ``clip.mp4`` is refused, and
so is a still image (one frame).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pvchat.errors import InputError
from pvchat.io import atomic_path, file_sha256
from pvchat.video import VideoInfo, check_video as is_video, probe

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be: at most ``max_mb`` megabytes and ``max_seconds`` long."""

    max_mb: float = 200.0
    max_seconds: float = 600.0

    def __post_init__(self):
        if self.max_mb <= 0 or self.max_seconds <= 0:
            raise InputError(f"upload limits must be > 0, got {self.max_mb} MB and {self.max_seconds} s")

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1e6)


def check_video(path: str | Path | None, limits: UploadLimits) -> VideoInfo:
    """The video's header info if ``path`` is a decodable video within ``limits``; InputError otherwise."""
    if not path:
        raise InputError("no video: upload one first")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.name}: the upload is gone (upload it again)")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise InputError(f"{path.name}: {size / 1e6:.1f} MB is over the upload limit of {limits.max_mb:g} MB")
    try:
        info = probe(path)  # InputError when PyAV cannot open it as a video
        if info.duration_s > limits.max_seconds:
            raise InputError(f"{path.name}: {info.duration_s:.0f} s is over the limit of {limits.max_seconds:g} s")
        is_video(path)  # the rule every pvchat command follows: decodes, at least two frames
    except InputError as e:  # name the file as the user knows it, not by its temporary path
        raise InputError(str(e).replace(str(path), path.name)) from None
    return info


def safe_name(name: str) -> str:
    """A file name made of letters, digits, ``.``, ``_`` and ``-`` only, with a video suffix."""
    stem, suffix = Path(name).stem, Path(name).suffix.lower()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._")[:60] or "video"
    return stem + (suffix if suffix in VIDEO_SUFFIXES else ".mp4")


def keep_upload(path: str | Path, folder: Path) -> Path:
    """Copy a checked upload to ``folder/<content hash>/<its name>`` (idempotent).

    Gradio's temporary upload files are not ours to keep; the copy outlives the request, so a
    queued enrolment or a later chat can still read it, and it keeps the name the user gave it.
    """
    path = Path(path)
    dest = folder / file_sha256(path)[:16] / safe_name(path.name)
    if not dest.is_file():
        with atomic_path(dest) as tmp:
            shutil.copyfile(path, tmp)
    return dest
