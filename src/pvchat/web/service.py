"""What one ``pvchat serve`` shares across tabs, and every action the page calls.

:class:`WebService` wraps :mod:`pvchat.api` (or any object with the same functions, for tests):
the enrolment queue, a small cache of loaded :class:`pvchat.api.Chat` objects, and the checks on
uploads and names. Actions raise :class:`pvchat.errors.PVChatError` for anything a user got
wrong; the page shows the message and carries on.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import threading
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pvchat.choices import PRESET, default_recipe
from pvchat.errors import InputError
from pvchat.io import file_sha256
from pvchat.model.prompt import names_in, validate_name
from pvchat.web.jobs import EnrollJob, EnrollQueue, Progress
from pvchat.web.uploads import VIDEO_SUFFIXES, UploadLimits, check_video, keep_upload
from pvchat.web.views import card_name, card_names
from pvchat.web.worker import Child

MAX_PEOPLE_PER_CHAT = 3
WORK_DIR = ".web"  # under the home: kept uploads and people-finding results
GRADIO_DIR = "gradio"  # under WORK_DIR: Gradio's temporary files (GRADIO_TEMP_DIR; pvchat serve empties it)


class WebService:
    """The server-wide state of the web app.

    Args:
        home: the pvchat home (concept packs live there).
        preset: model preset new people are learned on.
        recipe: training recipe (a name or a YAML path).
        limits: upload limits.
        api: the module the app is a client of (default :mod:`pvchat.api`).
        max_chats: loaded chats kept in memory (one per set of people).
        base: a local video LLM directory new people are learned on (``learn(..., base=)``), or None.
        isolate: find people and learn in child processes (:mod:`pvchat.web.worker`);
            default: when ``api`` is a module. An object standing in for the API (tests) runs
            in this process.
    """

    def __init__(self, home: Path, preset: str = PRESET, recipe: str | None = None, limits: UploadLimits | None = None,
                 api: Any = None, max_chats: int = 2, isolate: bool | None = None, base: Path | None = None):
        self.home = Path(home)
        self.base = None if base is None else str(base)
        self.preset, self.recipe = preset, default_recipe(preset) if recipe is None else recipe
        self.limits = limits or UploadLimits()
        self.api = api if api is not None else importlib.import_module("pvchat.api")
        self.isolate = isinstance(self.api, types.ModuleType) if isolate is None else bool(isolate)
        self._finder = Child()  # long-lived: its face models and workers stay loaded between uploads
        self.work = self.home / WORK_DIR
        self.gradio_dir = self.work / GRADIO_DIR  # where Gradio puts uploads and copies of what the page shows
        self.queue = EnrollQueue(self._learn, on_finish=self._finished)
        self._chats: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._chats_lock = threading.Lock()
        self._max_chats = max(1, int(max_chats))
        self._version = 0  # bumped when the people change through this server

    @property
    def people_version(self) -> int:
        """Changes whenever a person is learned or forgotten through this server."""
        return self._version + self.queue.version

    # --- enrolment ------------------------------------------------------------------------------

    def find_people(self, upload: str | Path | None) -> dict:
        """Check an uploaded reference video, keep it, and find the people in it.

        Returns ``{"reference": kept path, "people": [...], "contact_sheet": png}`` as
        :func:`pvchat.api.find_people` (plus the kept path).
        """
        try:
            check_video(upload, self.limits)
            reference = keep_upload(upload, self.work / "uploads")
        finally:
            self._discard_upload(upload)  # Gradio's copy, accepted or not: pvchat keeps its own
        out = self.work / "people" / reference.parent.name
        if self.isolate:
            found = self._finder.call(f"{self.api.__name__}:find_people", {"reference": reference, "out": out})
        else:
            found = self.api.find_people(reference, out)
        if not found.get("people"):
            raise InputError(f"{Path(upload).name}: no face found; upload a video where the person's face is visible")
        return {**found, "reference": reference}

    def enroll(self, reference: Path | None, name: str, person: int | None, num_found: int) -> EnrollJob:
        """Queue learning ``name`` from a kept reference video (``person``: which one, if several)."""
        if not reference:
            raise InputError("upload a reference video first")
        name = validate_name((name or "").strip())
        if num_found > 1 and person is None:
            raise InputError(f"{num_found} people are in this video: pick the one to learn")
        return self.queue.submit(name, Path(reference), person)

    def _learn(self, job: EnrollJob, progress: Progress) -> dict:
        kwargs = {"reference": job.reference, "name": job.name, "home": self.home, "preset": self.preset,
                  "recipe": self.recipe, "person": job.person}
        if self.base is not None:
            kwargs["base"] = self.base
        if not self.isolate:
            return self.api.learn(**kwargs, progress=progress, cancel=job.cancel)
        child = Child()  # one per enrolment: the memory of training goes with it
        try:
            return child.call(f"{self.api.__name__}:learn", kwargs, progress=progress, cancel=job.cancel)
        finally:
            child.close()

    def _finished(self, job: EnrollJob) -> None:
        if job.state == "done":
            self._drop_chats(job.name)

    # --- people ---------------------------------------------------------------------------------

    def people(self) -> list[dict]:
        """Every pack card in the home, sorted by name."""
        if not self.home.is_dir():
            return []
        return sorted(self.api.list_people(self.home), key=card_name)

    def card(self, name: str | None) -> dict | None:
        """The card of the pack called ``name`` (None if there is none)."""
        return next((c for c in self.people() if card_name(c) == name), None) if name else None

    def forget(self, name: str | None) -> list[Path]:
        """Delete everything derived from a person; returns what was removed.

        Besides what :func:`pvchat.api.forget` deletes (analysis, data, runs, pack): the person's
        faces found in their upload (``.web/people/<upload>/person_K``) and the contact sheet of
        that upload; once no other person or queued enrolment uses the upload, the kept video and
        all its people-finding results; and Gradio's copies of any of these files.
        """
        if not name:
            raise InputError("select a person to forget")
        if any(j.active and j.name == name for j in self.queue.jobs()):
            raise InputError(f"{name} is being learned right now; cancel that first")
        reference, person = self._reference_of(name)
        removed = list(self.api.forget(name, home=self.home))
        self._drop_chats(name)
        self._version += 1
        return removed + self._forget_upload(reference, person)

    # --- what the web app keeps of an upload ------------------------------------------------------

    def _discard_upload(self, upload: str | Path | None) -> None:
        """Delete Gradio's temporary copy of an upload (only a file inside :attr:`gradio_dir`)."""
        if upload and _inside(Path(upload), self.gradio_dir):
            Path(upload).unlink(missing_ok=True)
            _prune_empty(Path(upload).parent, self.gradio_dir)

    def _settings(self, name: str) -> dict:
        """A person's learn.json (empty if there is none or it is unreadable)."""
        try:
            data = json.loads((self.home / "people" / name / "learn.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _reference_of(self, name: str) -> tuple[Path | None, int | None]:
        """The reference video a person was (or is being) learned from, and which person of it."""
        card = self.card(name) or {}
        settings = self._settings(name)
        reference = card.get("reference") or settings.get("reference")
        person = card.get("person") if isinstance(card.get("person"), int) else settings.get("person")
        return (Path(reference) if isinstance(reference, str) else None,
                person if isinstance(person, int) and not isinstance(person, bool) else None)

    def _upload_users(self, reference: Path) -> list[str]:
        """Who else needs a kept upload: learned people, people being learned, queued enrolments."""
        target = reference.resolve()
        names = {card_name(c) for c in self.people()} | {
            d.name for d in (self.home / "people").glob("*") if (d / "learn.json").is_file()}
        users = [n for n in sorted(names) if (ref := self._reference_of(n)[0]) is not None and ref.resolve() == target]
        users += [j.name for j in self.queue.jobs() if j.active and Path(j.reference).resolve() == target]
        return users

    def _forget_upload(self, reference: Path | None, person: int | None) -> list[Path]:
        """Remove what the web app derived from a forgotten person's upload (see :meth:`forget`)."""
        uploads = (self.work / "uploads").resolve()
        if reference is None or not _inside(reference, uploads) or reference.resolve().parent == uploads:
            return []  # not a web upload (learned with the CLI from the user's own file)
        upload = reference.resolve().parent  # uploads/<content hash>/
        found = self.work / "people" / upload.name
        if not self._upload_users(reference):
            doomed = [upload, found]
        else:
            if person is None:
                try:
                    person = int(json.loads((found / "summary.json").read_text())["subject"])
                except (OSError, ValueError, KeyError, TypeError):
                    person = 0
            doomed = [found / f"person_{person}", found / "contact_sheet.png"]  # the sheet shows everyone
        files = [f for d in doomed for f in ([d] if d.is_file() else d.rglob("*") if d.is_dir() else [])
                 if f.is_file()]
        copies = self._gradio_copies(files)
        removed = []
        for path in [*doomed, *copies]:
            if path.is_dir():
                shutil.rmtree(path)
                removed.append(path)
            elif path.exists():
                path.unlink()
                removed.append(path)
        for path in copies:
            _prune_empty(path.parent, self.gradio_dir)
        return removed

    def _gradio_copies(self, files: list[Path]) -> list[Path]:
        """Files in :attr:`gradio_dir` with the same bytes as one of ``files`` (Gradio caches what the
        page showed, e.g. the reference video, contact sheet and best faces, under content hashes)."""
        if not files or not self.gradio_dir.is_dir():
            return []
        sizes = {f.stat().st_size for f in files}
        digests = {file_sha256(f) for f in files}
        return [c for c in self.gradio_dir.rglob("*")
                if c.is_file() and c.stat().st_size in sizes and file_sha256(c) in digests]

    # --- chat -----------------------------------------------------------------------------------

    def query_video(self, upload: str | Path | None) -> Path:
        """Check an uploaded query video and keep it (it then shows among the recent videos)."""
        try:
            check_video(upload, self.limits)
            return keep_upload(upload, self.work / "uploads")
        finally:
            self._discard_upload(upload)

    def recent_videos(self, limit: int = 30) -> list[Path]:
        """Kept uploads, newest first: the videos a user can pick instead of uploading again."""
        folder = self.work / "uploads"
        if not folder.is_dir():
            return []
        files = [p for p in folder.glob("*/*") if p.suffix in VIDEO_SUFFIXES and p.is_file()]
        return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]

    def check_question(self, people: list[str], question: str) -> None:
        """InputError unless 1–3 people are chosen and the question names only them."""
        if not people:
            raise InputError("choose who to ask about (1 to 3 people)")
        if len(people) > MAX_PEOPLE_PER_CHAT:
            raise InputError(f"choose at most {MAX_PEOPLE_PER_CHAT} people, got {len(people)}")
        if not (question or "").strip():
            raise InputError("type a question (click a person's button to insert their <Name>)")
        known = {n for c in self.people() if card_name(c) in people for n in card_names(c)} | set(people)
        unknown = [n for n in names_in(question) if n not in known]
        if unknown:
            raise InputError(f"the question names {', '.join('<' + n + '>' for n in unknown)}, "
                             f"who is not chosen; chosen: {', '.join(people)}")

    def stream(self, video: Path, people: list[str], question: str,
               history: list[tuple[str, str]] | None = None) -> Iterator[str]:
        """Growing partial answers to ``question`` about ``video`` (:meth:`pvchat.api.Chat.stream`)."""
        self.check_question(people, question)
        check_video(video, self.limits)
        chat = self._chat(people)
        with contextlib.closing(chat.stream(Path(video), question.strip(), history=list(history or []))) as parts:
            yield from parts  # closed even when the page goes away mid-answer (the chat's lock is released)

    def ask(self, video: Path, people: list[str], question: str,
            history: list[tuple[str, str]] | None = None):
        """The whole answer at once (:meth:`pvchat.api.Chat.ask`): text, frames seen, people."""
        self.check_question(people, question)
        check_video(video, self.limits)
        return self._chat(people).ask(Path(video), question.strip(), history=list(history or []))

    def frames_seen(self, video: Path, people: list[str]) -> np.ndarray:
        """(T, H, W, 3) uint8: the frames a chat with ``people`` reads from ``video`` (shown under the answer)."""
        return self._chat(people).frames(Path(video))

    def head_activation(self, video: Path, people: list[str], question: str) -> dict:
        """Per-head activation with and without the person for one question (paper Fig. 7)."""
        self.check_question(people, question)
        return self._chat(people).head_activation(Path(video), question.strip())

    def _chat(self, people: list[str]):
        """The loaded chat for a set of people (cached; a Chat serialises its own questions)."""
        key = tuple(sorted(people))
        with self._chats_lock:
            if key in self._chats:
                self._chats.move_to_end(key)
                return self._chats[key]
        chat = self.api.Chat(list(key), home=self.home)  # slow: loads the base and the packs
        with self._chats_lock:
            chat = self._chats.setdefault(key, chat)
            while len(self._chats) > self._max_chats:
                self._chats.popitem(last=False)
            return chat

    def _drop_chats(self, name: str) -> None:
        with self._chats_lock:
            for key in [k for k in self._chats if name in k]:
                del self._chats[key]

    def close(self, wait: float = 0.0) -> None:
        """Cancel enrolments and stop the workers (waiting up to ``wait`` s for a running one to stop)."""
        self.queue.close(wait)
        self._finder.close()


def _inside(path: Path, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return False


def _prune_empty(directory: Path, top: Path) -> None:
    """Remove ``directory`` and its parents up to (not including) ``top`` while they are empty."""
    directory, top = Path(directory).resolve(), Path(top).resolve()
    while directory != top and directory.is_relative_to(top):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
