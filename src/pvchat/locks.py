"""One process at a time per person: an exclusive lock file, released by the kernel on any exit.

``learn`` holds ``people/<name>/.lock`` while it works, ``forget`` takes it before deleting, so a
second ``learn`` of the same name (another terminal, the web app) or a ``forget`` in the middle of
learning is refused with one line instead of doing the same work twice or deleting under a
running job. ``flock`` locks die with the process that holds them, so ``kill -9`` leaves no stale
lock; a child that inherits the descriptor (the synthesis child) keeps the lock until it ends
too, so a re-run cannot race a child its killed predecessor left behind. Forked helpers (the
face-analysis pool) close their inherited copies at once and never hold it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from pvchat.errors import InputError

_HELD: set[int] = set()  # descriptors of locks this process holds


def _close_in_child() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f" (pid {pid})" if pid.isdigit() else ""


@contextlib.contextmanager
def hold(path: str | os.PathLike, busy: str, wait: float = 3.0) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` (created, with its directory) for the block; yields its fd.

    Waits up to ``wait`` seconds (a killed holder's child needs a moment to go), then raises
    :class:`InputError` with ``busy`` and the holder's pid. The file is removed on release.
    """
    path = Path(path)
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # the directory went away in between (a forget, a failed learn's cleanup)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                raise InputError(busy + _holder(path)) from None
            time.sleep(0.1)
            continue
        try:  # the file may have been removed (or replaced) by its last holder before we got it
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    _HELD.add(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        _HELD.discard(fd)
        try:
            if os.fstat(fd).st_nlink and os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)  # while still locked: a waiter then sees the inode change and retries
        except OSError:
            pass
        os.close(fd)
