"""Actions over time: each turns (frame, clip length, per-clip parameters) into a body pose.

:data:`ACTIONS` is the registry (name → :class:`Action`); :func:`get_action` looks a name up and
lists the choices when it is unknown. Offsets are in face units (one unit = the width of the
face), angles in degrees, so actions are independent of the rendered size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pvchat.errors import unknown_choice


@dataclass(frozen=True)
class Pose:
    """A person's pose in one frame, relative to where they stand in the scene."""

    dx: float = 0.0  # horizontal offset, face units (+ right)
    dy: float = 0.0  # vertical offset, face units (+ down)
    head_roll: float = 0.0  # degrees, in-plane tilt
    head_yaw: float = 0.0  # degrees, turning left/right (+ = towards image right)
    head_pitch: float = 0.0  # degrees, nodding (+ = chin down)
    mouth: float = 0.0  # 0 closed .. 1 open
    smile: float = 0.0  # 0 .. 1
    brows: float = 0.0  # 0 .. 1 raised
    blink: float = 0.0  # 0 open .. 1 closed (set by the renderer, not by actions)
    left_arm: tuple[float, float] = (8.0, 8.0)  # image-left arm: shoulder, elbow angles (0 = hanging down)
    right_arm: tuple[float, float] = (8.0, 8.0)  # image-right arm
    sit: float = 0.0  # 0 standing .. 1 seated
    stride: float = 0.0  # -1 .. 1 leg/arm swing while walking


ParamsFn = Callable[[np.random.Generator], dict]
PoseFn = Callable[[int, int, dict], Pose]


@dataclass(frozen=True)
class Action:
    """One action: its answer phrase, how it moves, and what it needs from the scene."""

    name: str
    phrase: str  # "<name> is ..." completion, e.g. "waving a hand"
    params: ParamsFn
    pose: PoseFn
    travels: bool = False  # moves across the frame (needs room; one per clip)


def _phase(rng: np.random.Generator) -> float:
    return float(rng.uniform(0, 2 * math.pi))


def _idle(t: int, p: dict) -> dict:
    """Small breathing sway and head tilt shared by the still actions."""
    return {"dx": 0.03 * math.sin(0.35 * t + p["phase"]), "head_roll": 2.0 * math.sin(0.21 * t + p["phase"])}


def _standing(t: int, n: int, p: dict) -> Pose:
    return Pose(**_idle(t, p), smile=p["smile"])


def _walking(direction: float) -> PoseFn:
    def pose(t: int, n: int, p: dict) -> Pose:
        frac = t / max(1, n - 1)
        step = math.sin(2 * math.pi * p["steps"] * frac + p["phase"])
        swing = 25.0 * step
        return Pose(dx=direction * p["distance"] * (frac - 0.5), dy=-0.04 * abs(step),
                    head_yaw=direction * 12.0, head_roll=1.5 * step,
                    left_arm=(8.0 + swing, 10.0), right_arm=(8.0 - swing, 10.0), stride=step, smile=p["smile"])
    return pose


def _walk_params(rng: np.random.Generator) -> dict:
    return {"phase": _phase(rng), "steps": float(rng.uniform(2.0, 3.0)), "distance": float(rng.uniform(3.6, 4.2)),
            "smile": float(rng.uniform(0, 0.5))}


def _waving(t: int, n: int, p: dict) -> Pose:
    wave = math.sin(2 * math.pi * t / p["period"] + p["phase"])
    arm = (150.0 + 10 * wave, 40.0 * wave)
    left, right = (arm, (8.0, 8.0)) if p["hand"] == "left" else ((8.0, 8.0), arm)
    return Pose(**_idle(t, p), left_arm=left, right_arm=right, smile=0.7)


def _nodding(t: int, n: int, p: dict) -> Pose:
    return Pose(dx=0.0, head_pitch=14.0 * math.sin(2 * math.pi * t / p["period"] + p["phase"]), smile=p["smile"])


def _shaking(t: int, n: int, p: dict) -> Pose:
    return Pose(head_yaw=20.0 * math.sin(2 * math.pi * t / p["period"] + p["phase"]), smile=0.0, brows=0.3)


def _jumping(t: int, n: int, p: dict) -> Pose:
    u = ((t + p["offset"]) % p["period"]) / p["period"]  # 0..1 within one jump
    height = 0.6 * 4 * u * (1 - u)
    arms = 10.0 + 120.0 * 4 * u * (1 - u)
    return Pose(dy=-height, left_arm=(arms, 20.0), right_arm=(arms, 20.0), smile=0.8, brows=0.6 * height)


def _sitting_down(t: int, n: int, p: dict) -> Pose:
    frac = t / max(1, n - 1)
    s = float(np.clip((frac - p["start"]) / 0.45, 0.0, 1.0))
    s = s * s * (3 - 2 * s)  # smoothstep
    return Pose(**_idle(t, p), sit=s, head_pitch=6.0 * math.sin(math.pi * s), left_arm=(12.0 + 20 * s, 30 * s),
                right_arm=(12.0 + 20 * s, 30 * s))


def _talking(t: int, n: int, p: dict) -> Pose:
    mouth = max(0.0, math.sin(2 * math.pi * t / p["period"] + p["phase"])) * p["loud"]
    gesture = 20.0 + 15.0 * math.sin(0.5 * t + p["phase"])
    return Pose(**_idle(t, p), mouth=mouth, brows=0.4 * mouth, head_pitch=3.0 * mouth,
                right_arm=(gesture, 80.0), smile=0.2)


def _periodic(lo: float, hi: float) -> ParamsFn:
    def params(rng: np.random.Generator) -> dict:
        return {"phase": _phase(rng), "period": float(rng.uniform(lo, hi)), "smile": float(rng.uniform(0, 0.6)),
                "hand": str(rng.choice(["left", "right"])), "loud": float(rng.uniform(0.7, 1.0)),
                "offset": int(rng.integers(0, 8))}
    return params


def _still(rng: np.random.Generator) -> dict:
    return {"phase": _phase(rng), "smile": float(rng.uniform(0, 0.7))}


def _sit_params(rng: np.random.Generator) -> dict:
    return {"phase": _phase(rng), "start": float(rng.uniform(0.1, 0.3))}


ACTIONS: dict[str, Action] = {
    "standing": Action("standing", "standing still", _still, _standing),
    "walking_left": Action("walking_left", "walking to the left", _walk_params, _walking(-1.0), travels=True),
    "walking_right": Action("walking_right", "walking to the right", _walk_params, _walking(1.0), travels=True),
    "waving": Action("waving", "waving a hand", _periodic(3.0, 5.0), _waving),
    "nodding": Action("nodding", "nodding", _periodic(4.0, 6.0), _nodding),
    "shaking_head": Action("shaking_head", "shaking the head", _periodic(4.0, 6.0), _shaking),
    "jumping": Action("jumping", "jumping", _periodic(7.0, 9.0), _jumping),
    "sitting_down": Action("sitting_down", "sitting down on a chair", _sit_params, _sitting_down),
    "talking": Action("talking", "talking", _periodic(2.5, 3.5), _talking),
}


def get_action(name: str) -> Action:
    """The registered action ``name``; a ConfigError listing the choices otherwise."""
    try:
        return ACTIONS[name]
    except KeyError:
        raise unknown_choice("action", name, ACTIONS) from None
