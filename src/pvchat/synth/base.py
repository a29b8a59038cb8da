"""The generator interface every positive-clip backend implements (DESIGN "synthesize").

A backend prepares an identity once (face crops, embedding, demographics, name; a generative
backend may tune an adapter here) and then turns :class:`ClipRequest` s into clips::

    gen = get_generator("classic")
    gen.prepare(identity, workdir)          # once per person; may be slow, must be resumable
    clip = gen.generate(ClipRequest(prompt="...", motion="nod", num_frames=16, seed=3))

Backends are listed in :data:`GENERATORS` as ``"module:Class"`` and imported on first use, so a
CPU-only install never imports diffusers for the ``classic`` backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pvchat.choices import load_target
from pvchat.errors import ConfigError, unknown_choice


@dataclass
class Identity:
    """What a backend knows of the person to generate.

    Attributes:
        name: the subject's name (its token is ``<name>``).
        faces: face crops, RGB uint8 (H, W, 3), best first.
        embedding: mean identity embedding (dlib, (128,) float32).
        frames: reference frames that show the person, RGB uint8 (H, W, 3) (may be empty).
        boxes: the person's face box (x0, y0, x1, y1) in each of ``frames``.
        gender: "male" | "female" | None.
        age: "young" | "middle-aged" | "elderly" | None.
    """

    name: str
    faces: list[np.ndarray]
    embedding: np.ndarray | None = None
    frames: list[np.ndarray] = field(default_factory=list)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    gender: str | None = None
    age: str | None = None

    def __post_init__(self):
        if not self.faces:
            raise ConfigError(f"identity {self.name!r} has no face crops")
        if self.frames and len(self.boxes) != len(self.frames):
            raise ConfigError("identity frames and boxes must have the same length")


@dataclass
class ClipRequest:
    """One clip to generate. ``prompt`` drives text-to-video backends, ``scene`` the classic one."""

    prompt: str | None = None
    scene: str | None = None
    motion: str | None = None
    num_frames: int = 16
    fps: float = 8.0
    width: int = 320
    height: int = 256
    seed: int = 0

    def __post_init__(self):
        if self.num_frames < 1 or self.width < 16 or self.height < 16 or self.fps <= 0:
            raise ConfigError(f"bad clip request: {self.num_frames} frames, {self.width}x{self.height}, {self.fps} fps")


@dataclass
class GeneratedClip:
    """Frames (T, H, W, 3) uint8 RGB and where they came from."""

    frames: np.ndarray
    fps: float
    request: ClipRequest
    backend: str
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Generator(Protocol):
    """A positive-clip backend."""

    name: str

    def prepare(self, identity: Identity, workdir: Path | None = None) -> None:
        """Learn or load what the backend needs for this identity (resumable through ``workdir``)."""

    def generate(self, request: ClipRequest) -> GeneratedClip:
        """One clip of the prepared identity."""


# name -> "module:Class"; each backend's constructor takes keyword options only.
GENERATORS: dict[str, str] = {
    "classic": "pvchat.synth.classic:ClassicGenerator",
    "personalvideo": "pvchat.synth.personalvideo:PersonalVideoGenerator",
    "consisid": "pvchat.synth.consisid:ConsisIDGenerator",
    "liveportrait": "pvchat.synth.external:LivePortraitGenerator",
    "photomaker": "pvchat.synth.external:PhotoMakerLivePortraitGenerator",
}


def list_generators() -> list[str]:
    return sorted(GENERATORS)


def get_generator(name: str, **options: Any) -> Generator:
    """Instantiate backend ``name``; unknown names list the registered ones."""
    if name not in GENERATORS:
        raise unknown_choice("generator backend", name, GENERATORS)
    return load_target(GENERATORS[name])(**options)
