"""``pvchat forget``: delete everything derived from a person."""

from __future__ import annotations

from pathlib import Path


def forget(name: str, home: Path | None = None) -> int:
    """Delete everything learned about a person: analysis, synthesized data, training runs and pack.

    The reference video itself is yours and stays.

    Args:
        name: the learned person.
        home: the workspace (default: $PVCHAT_HOME or ./workspace).
    """
    # lazy, so that `pvchat --help` stays fast: torch (pvchat.api loads the model code)
    from pvchat.api import DEFAULT_HOME, forget as forget_person

    deleted = forget_person(name, home=DEFAULT_HOME if home is None else home)
    for path in deleted:
        print(f"deleted {path}")
    print(f"forgot <{name}>")
    return 0
