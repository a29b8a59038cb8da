"""LivePortrait and PhotoMaker backends that call the user's own installs (paper §3.2, Table 4).

Neither tool is a pip package (research/generators.md §3), and the official PVChat release runs each
in its own conda environment through subprocesses. We do the same: a backend runs the user's
interpreter on the user's checkout and reads back what it wrote.

**LivePortrait contract** (``liveportrait`` backend, and stage 2 of ``photomaker``):

- command: ``{python} {repo_dir}/inference.py -s SOURCE.png -d DRIVING -o OUT_DIR [--flag-force-cpu]
  [extra_args…]`` run in ``repo_dir`` (LivePortrait's own CLI);
- driving motions: the paper's five, files ``{driving_dir}/{yes,no,query,angry,smile}.{mp4,pkl}``
  (nod, head shake, questioning look, anger, smile; ``ClipRequest.motion`` also accepts the
  aliases nod/shake/question/frown/anger);
- ``GeneratedClip.info``: ``motion`` in pvchat's vocabulary (nod, shake, question, frown, smile),
  ``driving`` the clip's stem, ``output`` the file;
- output: ``OUT_DIR/{SOURCE stem}--{DRIVING stem}.mp4`` (LivePortrait's naming; the side-by-side
  ``…_concat.mp4`` is ignored); read back resampled to ``ClipRequest.fps``, the first
  ``num_frames`` frames;
- errors (all :class:`ConfigError`, one line): missing checkout, interpreter or driving file; a
  non-zero exit (its last stderr line is quoted); a timeout; no output file.

**PhotoMaker contract** (``photomaker`` backend): PhotoMaker has no CLI, so the user provides a small
wrapper script around ``PhotoMakerStableDiffusionXLPipeline`` that accepts::

    {python} {script} --ref-dir DIR --prompt TEXT --negative-prompt TEXT --out OUT.png
                      --seed N --steps 50 --guidance 5.0 --width W --height H

reads the subject's face images (``*.png``) from ``DIR`` and writes one RGB still to ``OUT.png``.
Prompts are supp. Fig. 7's ("{age} {gender} img, …": the trigger word ``img`` follows the class
word). Each still is then animated by LivePortrait with a driving motion, as in the official
pipeline (HQ face + PhotoMaker stills × 5 motions).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pvchat.errors import ConfigError
from pvchat.synth.base import ClipRequest, GeneratedClip, Identity
from pvchat.synth.prompts import PromptLibrary
from pvchat.video import iter_frames

PAPER_MOTIONS = ("yes", "no", "query", "angry", "smile")
MOTION_ALIASES = {"yes": "yes", "nod": "yes", "no": "no", "shake": "no", "query": "query", "question": "query",
                  "questioning": "query", "angry": "angry", "anger": "angry", "frown": "angry", "smile": "smile"}
# LivePortrait's driving clips in pvchat's motion vocabulary (synth/motion.py, pipeline MOTION_WORDS)
PVCHAT_MOTION = {"yes": "nod", "no": "shake", "query": "question", "angry": "frown", "smile": "smile"}
PHOTOMAKER_NEGATIVE = ("nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, cropped, "
                       "worst quality, low quality, jpeg artifacts, blurry")


def driving_motion(motion: str | None, seed: int = 0) -> str:
    """The driving clip name for a requested motion (None → one of the five, by seed)."""
    if motion is None:
        return PAPER_MOTIONS[seed % len(PAPER_MOTIONS)]
    key = motion.strip().lower()
    if key not in MOTION_ALIASES:
        raise ConfigError(f"unknown LivePortrait motion {motion!r}; choose one of: {', '.join(sorted(MOTION_ALIASES))}")
    return MOTION_ALIASES[key]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def _run(cmd: list[str], cwd: Path | None, timeout_s: float, what: str) -> None:
    """Run an external tool; any failure becomes a one-line ConfigError."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise ConfigError(f"{what}: cannot execute {cmd[0]!r} (set python to your {what} environment's interpreter)") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{what}: timed out after {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        raise ConfigError(f"{what} failed (exit {proc.returncode}): {_last_line(proc.stderr or proc.stdout)}")


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
        raise ConfigError(f"cannot write {path}")


def _read_png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ConfigError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass
class LivePortraitConfig:
    """Where the user's LivePortrait lives and how to call it.

    Attributes:
        repo_dir: the LivePortrait checkout (``inference.py`` and ``pretrained_weights/`` inside).
        python: the interpreter of LivePortrait's environment (default: this one).
        driving_dir: the five driving clips (default ``repo_dir/assets/examples/driving``).
        force_cpu: pass ``--flag-force-cpu``.
        extra_args: more arguments for ``inference.py``.
        timeout_s: per-call time limit.
        workdir: where sources and outputs go (default: a temporary directory).
    """

    repo_dir: str | None = None
    python: str = sys.executable
    driving_dir: str | None = None
    force_cpu: bool = False
    extra_args: tuple[str, ...] = ()
    timeout_s: float = 900.0
    workdir: str | None = None


class LivePortrait:
    """One call of LivePortrait per (source image, motion); see the module docstring for the contract."""

    def __init__(self, config: LivePortraitConfig):
        self.config = config
        if not config.repo_dir or not (Path(config.repo_dir).expanduser() / "inference.py").is_file():
            raise ConfigError(
                f"liveportrait: no inference.py in {config.repo_dir!r}; clone https://github.com/KwaiVGI/LivePortrait, "
                "download its weights (huggingface-cli download KwaiVGI/LivePortrait --local-dir pretrained_weights) "
                "and set repo_dir")
        self.repo = Path(config.repo_dir).expanduser().resolve()
        self.driving_dir = Path(config.driving_dir).expanduser() if config.driving_dir else self.repo / "assets/examples/driving"
        self.work = Path(config.workdir) if config.workdir else Path(tempfile.mkdtemp(prefix="pvchat-liveportrait-"))

    def driving(self, motion: str) -> Path:
        for ext in (".mp4", ".pkl"):
            path = self.driving_dir / f"{motion}{ext}"
            if path.is_file():
                return path
        raise ConfigError(f"liveportrait: no driving clip {motion}.mp4 or {motion}.pkl in {self.driving_dir} "
                          f"(the paper's five: {', '.join(PAPER_MOTIONS)})")

    def animate(self, source: np.ndarray, motion: str, num_frames: int, fps: float, tag: str = "src") -> tuple[np.ndarray, Path]:
        """(T, H, W, 3) uint8 frames of ``source`` driven by ``motion``, and the output file."""
        drv = self.driving(motion)
        digest = hashlib.sha1(np.ascontiguousarray(source).tobytes()).hexdigest()[:10]
        src = self.work / "sources" / f"{tag}_{digest}.png"
        if not src.is_file():
            _write_png(src, source)
        out_dir = self.work / "animations"
        out = out_dir / f"{src.stem}--{drv.stem}.mp4"
        if not out.is_file():
            cmd = [self.config.python, str(self.repo / "inference.py"), "-s", str(src.resolve()), "-d", str(drv.resolve()),
                   "-o", str(out_dir.resolve())]
            cmd += ["--flag-force-cpu"] if self.config.force_cpu else []
            cmd += list(self.config.extra_args)
            _run(cmd, self.repo, self.config.timeout_s, "liveportrait")
            if not out.is_file():
                raise ConfigError(f"liveportrait wrote no {out.name} in {out_dir} (expected SOURCE--DRIVING.mp4)")
        frames = [f for _, (_, _, f) in zip(range(num_frames), iter_frames(out, fps=fps))]
        if not frames:
            raise ConfigError(f"liveportrait: {out} has no frames")
        return np.stack(frames), out


class LivePortraitGenerator:
    """The ``liveportrait`` backend: the subject's best face driven by the paper's five motions."""

    name = "liveportrait"

    def __init__(self, **options: Any):
        self.config = LivePortraitConfig(**options)
        self.tool: LivePortrait | None = None
        self.identity: Identity | None = None

    def prepare(self, identity: Identity, workdir: Path | None = None) -> None:
        """Check the install; sources and outputs go to ``workdir/liveportrait/<name>`` (reused on rerun)."""
        if workdir is not None and self.config.workdir is None:
            self.config.workdir = str(Path(workdir) / "liveportrait" / identity.name)
        self.tool = LivePortrait(self.config)
        for m in PAPER_MOTIONS:
            self.tool.driving(m)
        self.identity = identity

    def generate(self, request: ClipRequest) -> GeneratedClip:
        """The best face (``identity.faces[0]``) driven by ``request.motion`` (None → by seed)."""
        if self.tool is None:
            raise ConfigError("liveportrait: call prepare(identity) before generate()")
        motion = driving_motion(request.motion, request.seed)
        frames, out = self.tool.animate(self.identity.faces[0], motion, request.num_frames, request.fps, tag="face")
        return GeneratedClip(frames=frames, fps=request.fps, request=request, backend=self.name,
                             info={"motion": PVCHAT_MOTION[motion], "driving": motion, "source": "face",
                                   "output": str(out)})


def photomaker_prompt(prompt: str) -> str:
    """Make sure the trigger word ``img`` follows the class word ("a man img …")."""
    if re.search(r"\bimg\b", prompt):
        return prompt
    m = re.search(r"\b(man|woman|person|boy|girl|male|female)\b", prompt)
    return prompt[: m.end()] + " img" + prompt[m.end():] if m else f"{prompt}, img"


class PhotoMakerLivePortraitGenerator:
    """The ``photomaker`` backend: PhotoMaker stills from the prompt library, animated by LivePortrait.

    Options: ``script`` (the PhotoMaker wrapper, see the module docstring), ``photomaker_python``
    (its interpreter), ``steps`` (50), ``guidance`` (5.0), ``still_size`` (1024), plus every
    :class:`LivePortraitConfig` field. Each still is cached per (prompt, seed).
    """

    name = "photomaker"

    def __init__(self, script: str | None = None, photomaker_python: str = sys.executable, steps: int = 50,
                 guidance: float = 5.0, still_size: int = 1024, **liveportrait: Any):
        self.script = script
        self.photomaker_python = photomaker_python
        self.steps, self.guidance, self.still_size = steps, guidance, still_size
        self.lp = LivePortraitGenerator(**liveportrait)
        self.identity: Identity | None = None
        self.work: Path | None = None

    def prepare(self, identity: Identity, workdir: Path | None = None) -> None:
        """Check both installs and write the subject's faces as PhotoMaker references."""
        if not self.script or not Path(self.script).expanduser().is_file():
            raise ConfigError(f"photomaker: no wrapper script at {self.script!r}; write one around "
                              "PhotoMakerStableDiffusionXLPipeline that follows the contract in pvchat.synth.external")
        self.lp.prepare(identity, workdir)
        self.work = Path(self.lp.tool.work)
        refs = self.work / "photomaker_refs"
        shutil.rmtree(refs, ignore_errors=True)
        for i, face in enumerate(identity.faces[:4]):
            _write_png(refs / f"ref_{i}.png", face)
        self.identity = identity

    def prompts(self) -> list[str]:
        """Supp. Fig. 7's image prompts for the subject's age and gender."""
        ident = self.identity
        return PromptLibrary.load().image_prompts(ident.gender or "male", ident.age or "young")

    def still(self, prompt: str, seed: int) -> tuple[np.ndarray, Path]:
        """One PhotoMaker still (H, W, 3) uint8 for ``prompt`` (cached)."""
        prompt = photomaker_prompt(prompt)
        key = hashlib.sha1(f"{prompt}|{seed}|{self.steps}|{self.guidance}".encode()).hexdigest()[:12]
        out = self.work / "photomaker" / f"still_{key}.png"
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            cmd = [self.photomaker_python, str(Path(self.script).expanduser()), "--ref-dir", str(self.work / "photomaker_refs"),
                   "--prompt", prompt, "--negative-prompt", PHOTOMAKER_NEGATIVE, "--out", str(out), "--seed", str(seed),
                   "--steps", str(self.steps), "--guidance", str(self.guidance), "--width", str(self.still_size),
                   "--height", str(self.still_size)]
            _run(cmd, None, self.lp.config.timeout_s, "photomaker")
            if not out.is_file():
                raise ConfigError(f"photomaker wrote no {out}")
        return _read_png(out), out

    def generate(self, request: ClipRequest) -> GeneratedClip:
        """A still for ``request.prompt`` (else library prompt number ``seed``), driven by ``request.motion``."""
        if self.identity is None:
            raise ConfigError("photomaker: call prepare(identity) before generate()")
        prompts = self.prompts()
        prompt = request.prompt or prompts[request.seed % len(prompts)]
        still, still_path = self.still(prompt, request.seed)
        motion = driving_motion(request.motion, request.seed // max(1, len(prompts)))
        frames, out = self.lp.tool.animate(still, motion, request.num_frames, request.fps, tag="still")
        return GeneratedClip(frames=frames, fps=request.fps, request=request, backend=self.name,
                             info={"prompt": photomaker_prompt(prompt), "motion": PVCHAT_MOTION[motion],
                                   "driving": motion, "still": str(still_path), "output": str(out)})
