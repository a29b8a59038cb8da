"""The enrolment queue: learning runs in one background worker, one person at a time.

Every tab of every user shares one :class:`EnrollQueue`. ``submit`` returns at once; the worker
calls ``learn(job, progress)`` for each job in order, and ``learn`` reports
through the ``progress`` callback it is handed (that of :func:`pvchat.api.learn`). Readers get copies (:meth:`snapshot`),
so the page never sees a job half-updated. A failing or cancelled job never stops the worker.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pvchat.choices import STAGES
from pvchat.errors import InputError, PVChatError

log = logging.getLogger(__name__)

TRAIN_STAGES = ("stage1", "stage2")
ACTIVE = ("queued", "running")
MAX_RECORDS = 5000  # training log records kept per job for the curves
Progress = Callable[[str, float, dict], None]


@dataclass
class EnrollJob:
    """One enrolment: who, from what, and how far it got."""

    id: int
    name: str
    reference: Path
    person: int | None = None
    state: str = "queued"  # queued | running | done | failed | cancelled
    stage: str | None = None
    stage_fraction: dict[str, float] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)  # {"stage", "index", **train log record}
    message: str = ""
    card: dict | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def copy(self, records: bool = True) -> "EnrollJob":
        """A copy the worker will not touch (sharing only the cancel event)."""
        return dataclasses.replace(self, stage_fraction=dict(self.stage_fraction),
                                   records=[dict(r) for r in self.records] if records else [],
                                   card=copy.deepcopy(self.card))

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def report(self, stage: str, fraction: float, info: dict | None = None) -> None:
        """Record progress: ``stage`` is ``fraction`` done; ``info`` is the latest training record.

        Stages before ``stage`` count as finished. The numbers of a training stage's record are
        kept for the curves; one equal to the previous record of the same stage (the same log
        line reported again) is not stored twice.
        """
        self.stage = stage
        if stage in STAGES:
            for earlier in STAGES[: STAGES.index(stage)]:
                self.stage_fraction[earlier] = 1.0
        self.stage_fraction[stage] = max(0.0, min(1.0, float(fraction)))
        numbers = {k: float(v) for k, v in (info or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if stage not in TRAIN_STAGES or not numbers:  # curves are of training steps only
            return
        last = next((r for r in reversed(self.records) if r["stage"] == stage), None)
        if last is not None and {k: last.get(k) for k in numbers} == numbers:
            return
        self.records.append({"stage": stage, "index": len(self.records), **numbers})
        del self.records[:-MAX_RECORDS]


class EnrollQueue:
    """A FIFO of enrolments served by one daemon worker thread.

    Args:
        learn: ``learn(job, progress)`` runs one job to completion and returns the pack card;
            it passes ``progress`` (``progress(stage, fraction, info)``) and ``job.cancel`` on to
            :func:`pvchat.api.learn`.
        on_finish: called with a copy of every job that ends (done, failed or cancelled).
    """

    def __init__(self, learn: Callable[[EnrollJob, Progress], dict],
                 on_finish: Callable[[EnrollJob], None] | None = None):
        self._learn = learn
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._jobs: dict[int, EnrollJob] = {}
        self._ids = itertools.count(1)
        self._todo: queue.Queue[int | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self.version = 0  # bumped whenever a job ends

    def submit(self, name: str, reference: Path, person: int | None = None) -> EnrollJob:
        """Queue an enrolment; InputError if the same name is already queued or running."""
        with self._lock:
            if any(j.active and j.name == name for j in self._jobs.values()):
                raise InputError(f"{name} is already being learned; wait for it or cancel it")
            job = EnrollJob(id=next(self._ids), name=name, reference=Path(reference), person=person)
            self._jobs[job.id] = job
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="pvchat-enrol", daemon=True)
                self._worker.start()
        self._todo.put(job.id)
        return job.copy()

    def cancel(self, job_id: int) -> EnrollJob | None:
        """Cancel a job: a queued one never starts, a running one stops at its next step."""
        ended = None
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.active:
                job.cancel.set()
                if job.state == "queued":
                    ended = self._end(job, "cancelled", "cancelled before it started")
                else:
                    job.message = "cancelling…"
            out = job.copy()
        self._finished(ended)
        return out

    def snapshot(self, job_id: int | None) -> EnrollJob | None:
        """A copy of one job (None if there is no such job)."""
        with self._lock:
            job = self._jobs.get(job_id) if job_id is not None else None
            return job.copy() if job else None

    def jobs(self) -> list[EnrollJob]:
        """Copies of every job, oldest first, without their training records."""
        with self._lock:
            return [job.copy(records=False) for job in self._jobs.values()]

    def position(self, job_id: int) -> int:
        """1 for the running job or the next to run, 2 after that, …; 0 if not active."""
        with self._lock:
            active = [j.id for j in self._jobs.values() if j.active]
        return active.index(job_id) + 1 if job_id in active else 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running (True) or ``timeout`` seconds pass (False)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if not any(j.active for j in self._jobs.values()):
                    return True
            if end is not None and time.monotonic() > end:
                return False
            time.sleep(0.05)

    def close(self, wait: float = 0.0) -> None:
        """Cancel every job and stop the worker; wait up to ``wait`` s for a running job to stop."""
        ended = []
        with self._lock:
            for job in self._jobs.values():
                if job.active:
                    job.cancel.set()
                    if job.state == "queued":
                        ended.append(self._end(job, "cancelled", "server stopping"))
        for job in ended:
            self._finished(job)
        self._todo.put(None)
        if wait > 0 and self._worker is not None:
            self._worker.join(wait)

    # --- worker ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job_id = self._todo.get()
            if job_id is None:
                return
            with self._lock:
                job = self._jobs[job_id]
                if job.state != "queued":
                    continue
                job.state, job.started, job.message = "running", time.time(), ""
            try:
                card = self._learn(job, self._progress(job))
            except PVChatError as e:
                cancelled = job.cancel.is_set()
                with self._lock:
                    ended = self._end(job, "cancelled" if cancelled else "failed",
                                      "cancelled" if cancelled else str(e))
            except Exception as e:  # a bug in learning must not kill the worker or the server
                log.exception("enrolment %s (%s) failed", job.id, job.name)
                with self._lock:
                    last = (str(e).strip().splitlines() or [""])[-1]  # the full traceback is in the log
                    ended = self._end(job, "failed", f"internal error: {type(e).__name__}: {last}")
            else:
                with self._lock:
                    job.card = card
                    for stage in STAGES:
                        job.stage_fraction[stage] = 1.0
                    ended = self._end(job, "done", "")
            self._finished(ended)

    def _progress(self, job: EnrollJob) -> Progress:
        def progress(stage: str, fraction: float, info: dict | None = None) -> None:
            with self._lock:
                job.report(stage, fraction, info)
        return progress

    def _end(self, job: EnrollJob, state: str, message: str) -> EnrollJob:
        """Mark a job ended (call with the lock held); returns a copy for :meth:`_finished`."""
        job.state, job.message, job.finished = state, message, time.time()
        self.version += 1
        return job.copy()

    def _finished(self, job: EnrollJob | None) -> None:
        """Run the on_finish hook (without the lock: the hook may call back into the queue)."""
        if job is None or self._on_finish is None:
            return
        try:
            self._on_finish(job)
        except Exception:  # a hook must not stop the queue
            log.exception("on_finish hook failed for job %s", job.id)
