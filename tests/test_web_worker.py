"""pvchat.web.worker: API calls in child processes (progress back, cancel in, errors, crashes)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from pvchat.errors import PVChatError
from pvchat.web.worker import Child, ChildCrashed

HERE = Path(__file__).parent


def steps(count: int, progress=None, cancel=None) -> dict:
    """A stand-in for api.learn run in the child: reports each step, stops when cancelled."""
    for i in range(count):
        if cancel.is_set():
            raise PVChatError("cancelled")
        progress("stage1", (i + 1) / count, {"loss": 1.0 / (i + 1)})
        time.sleep(0.01)
    return {"steps": count}


@pytest.fixture()
def child(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    worker = Child()
    yield worker
    worker.close()


def test_child_runs_elsewhere_and_is_reused(child):
    pid = child.call("os:getpid", {})
    assert pid != os.getpid() and child.call("os:getpid", {}) == pid  # one long-lived process
    assert child.call("json:dumps", {"obj": {"a": [1, 2]}}) == '{"a": [1, 2]}'


def test_child_errors_and_crashes(child):
    with pytest.raises(PVChatError, match="invalid subject name"):
        child.call("pvchat.model.prompt:validate_name", {"name": "4 bad"})
    with pytest.raises(ChildCrashed, match="JSONDecodeError"):  # a bug: its traceback comes back
        child.call("json:loads", {"s": "{"})
    pid = child.call("os:getpid", {})
    with pytest.raises(ChildCrashed, match=r"died \(exit code 3\)"):
        child.call("os:_exit", {"status": 3})
    assert child.call("os:getpid", {}) != pid  # a dead child is replaced on the next call


def test_child_progress_and_cancel(child):
    seen = []
    out = child.call(f"{Path(__file__).stem}:steps", {"count": 3}, progress=lambda *a: seen.append(a),
                     cancel=threading.Event())
    assert out == {"steps": 3}
    assert [s[1] for s in seen] == pytest.approx([1 / 3, 2 / 3, 1.0]) and seen[0][2] == {"loss": 1.0}
    cancel = threading.Event()
    with pytest.raises(PVChatError, match="cancelled"):
        child.call(f"{Path(__file__).stem}:steps", {"count": 100_000}, progress=lambda *a: cancel.set(),
                   cancel=cancel)
