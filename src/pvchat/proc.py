"""Child processes that die with their parent.

A ``kill -9`` of a pvchat process gives it no chance to stop its children: the face-analysis
pool workers and the synthesis child would keep running (and keep writing) for as long as their
work lasts. Each such child calls :func:`die_with_parent` with the pid of the process that
started it; a daemon thread then watches ``os.getppid()`` and ends the child at once (SIGKILL
to itself) when the parent is gone, i.e. when the child has been handed to init or a subreaper.
The check runs every :data:`POLL_S` seconds, so an orphan lives at most that long.

A watchdog rather than Linux's ``PR_SET_PDEATHSIG``: that signal fires when the *thread* that
forked the child ends, and the analysis pool is kept for the life of the process although the
thread that first used it may be a short-lived one (a web request's thread).
"""

from __future__ import annotations

import os
import signal
import threading
import time

POLL_S = 0.2


def _watch(parent: int, interval: float) -> None:
    while True:
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(interval)


def die_with_parent(parent: int | None, interval: float = POLL_S) -> None:
    """End this process as soon as ``parent`` (the pid that started it) is no longer its parent.

    ``parent`` must be the pid recorded by the parent itself (passed to the child), not
    ``os.getppid()`` read here: a parent that died before this call would go unnoticed.
    ``None`` does nothing (a process started by something else, e.g. a user).
    """
    if parent is None:
        return
    if os.getppid() != int(parent):  # already orphaned
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=_watch, args=(int(parent), interval), name="pvchat-die-with-parent",
                     daemon=True).start()

