"""Run the heavy :mod:`pvchat.api` calls (finding people, learning) in child processes.

Why: face analysis forks a pool of worker processes, and a process forked from the web server
inherits its open sockets: the browser's connections then never close, its per-host connection
slots run out and the page stops getting answers. A child started with ``subprocess`` (exec, a
fresh interpreter, no inherited sockets) can fork whatever it likes. It also keeps a crash in
native code (dlib, FFmpeg, torch) and the memory of a training run out of the server, and, unlike
``multiprocessing``'s spawn, never re-runs the caller's ``__main__``.

Protocol: the parent writes one JSON request per line to the child's stdin
(``{"target": "module:function", "kwargs": {...}, "progress": bool}`` or ``{"cancel": true}``);
the child answers on a separate pipe (its stdout stays free for library output) with JSON lines
``{"progress": [stage, fraction, info]}`` and finally ``{"done": [kind, payload]}``. A
:class:`~pvchat.errors.PVChatError` in the child is raised again in the parent with its message;
anything else becomes a :class:`ChildCrashed` carrying the child's traceback. When the parent
goes away (stdin closes) a running call is cancelled and the child exits.
"""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import threading
import traceback
from typing import Any, Callable

from pvchat.choices import load_target
from pvchat.errors import PVChatError

POLL_S = 0.2
Progress = Callable[[str, float, dict], None]


class ChildCrashed(RuntimeError):
    """The child failed with a bug (its traceback is the message) or died."""


class Child:
    """One child process serving calls one at a time; started on first use, restarted if it died."""

    def __init__(self, name: str = "pvchat-worker"):
        self.name = name
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._fd = -1
        self._buffer = b""

    def call(self, target: str, kwargs: dict, progress: Progress | None = None,
             cancel: threading.Event | None = None) -> Any:
        """``target(**kwargs)`` in the child; with ``progress``, also ``progress=`` and ``cancel=``.

        ``progress`` is called in this thread for every report of the child; setting ``cancel``
        cancels the child's call (the target stops at its next step).
        """
        with self._lock:
            self._start()
            request = {"target": target, "kwargs": kwargs, "progress": progress is not None}
            self._send(request)
            cancelled = False
            while True:
                if cancel is not None and cancel.is_set() and not cancelled:
                    self._send({"cancel": True})
                    cancelled = True
                message = self._receive(target)
                if message is None:
                    continue
                if "progress" in message:
                    if progress is not None:
                        progress(*message["progress"])
                    continue
                kind, payload = message["done"]
                if kind == "ok":
                    return payload
                if kind == "error":
                    raise PVChatError(payload)
                raise ChildCrashed(f"{target} failed in its worker process:\n{payload}")

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child (its running call, if any, is cancelled first)."""
        with self._lock:
            self._stop(timeout)

    # --- parent side ----------------------------------------------------------------------------

    def _start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._stop(0)
        read_fd, write_fd = os.pipe()
        code = f"from pvchat.web.worker import serve_child; serve_child({write_fd})"
        self._proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, pass_fds=(write_fd,),
                                      close_fds=True)
        os.close(write_fd)
        self._fd, self._buffer = read_fd, b""

    def _send(self, message: dict) -> None:
        try:
            self._proc.stdin.write((json.dumps(message, default=str) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the child died; _receive reports it

    def _receive(self, target: str) -> dict | None:
        """The next message, or None after POLL_S without one; ChildCrashed if the child died."""
        if b"\n" not in self._buffer:
            ready, _, _ = select.select([self._fd], [], [], POLL_S)
            chunk = os.read(self._fd, 1 << 16) if ready else None
            if chunk:
                self._buffer += chunk
            elif chunk == b"" or self._proc.poll() is not None:  # EOF: the child is gone
                code = self._proc.wait()
                self._stop(0)
                raise ChildCrashed(f"{target}: its worker process died (exit code {code})")
        if b"\n" not in self._buffer:
            return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _stop(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.close()  # the child cancels what it runs and exits
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# --- child side ---------------------------------------------------------------------------------


def serve_child(fd: int) -> None:
    """The child's main loop: run requests from stdin one at a time, answer on ``fd``.

    Requests are read from a duplicate of fd 0 with ``os.read`` and fd 0 itself is pointed at
    /dev/null: the code run here forks worker processes, and a fork while a thread holds
    ``sys.stdin``'s lock would leave those workers stuck closing it.
    """
    out = os.fdopen(fd, "wb", buffering=0)
    write_lock = threading.Lock()
    requests: queue.Queue[dict | None] = queue.Queue()
    cancel = threading.Event()
    request_fd = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    def send(message: dict) -> None:
        data = (json.dumps(message, default=str) + "\n").encode()
        with write_lock:
            out.write(data)

    def read_stdin() -> None:
        buffer = b""
        while chunk := os.read(request_fd, 1 << 16):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                if message.get("cancel"):
                    cancel.set()
                else:
                    requests.put(message)
        cancel.set()  # the parent is gone: stop what runs and exit
        requests.put(None)

    threading.Thread(target=read_stdin, name="pvchat-worker-stdin", daemon=True).start()
    while (request := requests.get()) is not None:
        cancel.clear()
        kwargs = dict(request["kwargs"])
        if request.get("progress"):
            kwargs["progress"] = lambda stage, fraction, info=None: send(
                {"progress": [stage, float(fraction), dict(info or {})]})
            kwargs["cancel"] = cancel
        try:
            result = ("ok", load_target(request["target"])(**kwargs))
        except PVChatError as e:
            result = ("error", str(e))
        except Exception:
            result = ("crash", traceback.format_exc())
        send({"done": list(result)})
