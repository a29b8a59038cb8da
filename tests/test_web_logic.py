"""The web app's logic without a browser: uploads, the enrolment queue, views, service, handlers.

A small fake of :mod:`pvchat.api` (same functions, instant) stands in for the model, so these
run in seconds; tests/test_web.py drives the real thing in a browser.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from pvchat.errors import ConfigError, InputError, PVChatError
from pvchat.model.prompt import names_in
from pvchat.video import read_frames_uniform, write_video
from pvchat.web import views
from pvchat.web.jobs import STAGES, EnrollJob, EnrollQueue
from pvchat.web.uploads import UploadLimits, check_video, keep_upload, safe_name

# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 2 s, 8 fps, 64×48 h264 clip."""
    path = tmp_path_factory.mktemp("clips") / "my clip.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (16, 48, 64, 3), dtype=np.uint8)
    write_video(path, frames, fps=8.0)
    return path


@dataclass
class FakeAnswer:
    text: str
    frames: np.ndarray
    people: list


class FakeApi:
    """The functions of pvchat.api the web app calls, instant and on plain files."""

    def __init__(self, found: int = 1, steps: int = 3, delay: float = 0.0):
        self.found, self.steps, self.delay = found, steps, delay
        self.chats_made = 0
        self.learned: list[dict] = []

    def list_people(self, home):
        return [json.loads(p.read_text()) for p in sorted(Path(home).glob("people/*/card.json"))]

    def find_people(self, reference, out):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 20)).save(out / "sheet.png")
        people = []
        for i in range(self.found):
            Image.new("RGB", (20, 20)).save(out / f"face{i}.png")
            people.append({"index": i, "num_faces": 5 - i, "best_face": str(out / f"face{i}.png")})
        return {"people": people, "contact_sheet": str(out / "sheet.png")}

    def learn(self, reference, name, home, preset="demo", recipe="demo", person=None, progress=None, cancel=None):
        self.learned.append({"name": name, "preset": preset, "recipe": recipe, "person": person})
        for stage in STAGES:
            for i in range(self.steps):
                if cancel is not None and cancel.is_set():
                    raise PVChatError("cancelled")
                time.sleep(self.delay)
                info = {"loss": 1.0 / (i + 1), "sparsity": 0.1 * i, "total": self.steps} if "stage" in stage else {}
                progress(stage, (i + 1) / self.steps, info)
        folder = Path(home) / "people" / name
        folder.mkdir(parents=True)
        card = {"name": name, "names": [name], "created": "2025-01-02T03:04:05+0000", "size_bytes": 2048,
                "metrics": {"stage2": {"loss": 0.5, "step": 3}}, "reference": str(reference)}
        (folder / "card.json").write_text(json.dumps(card))
        return card

    def forget(self, name, home):
        folder = Path(home) / "people" / name
        if not folder.is_dir():
            raise InputError(f"no learned person {name!r}")
        shutil.rmtree(folder)
        return [folder]

    def Chat(self, packs, home):
        self.chats_made += 1
        api = self

        class Chat:
            people = list(packs)
            model = SimpleNamespace(config=SimpleNamespace(num_frames=4))

            def frames(self, video):
                return read_frames_uniform(video, self.model.config.num_frames)

            def stream(self, video, question, history=None):
                api.last_history = history
                for text in ("Yes", "Yes, <%s>" % packs[0], "Yes, <%s> is here." % packs[0]):
                    yield text

            def ask(self, video, question, history=None):
                return FakeAnswer("Yes.", np.zeros((4, 8, 8, 3), np.uint8), list(packs))

            def head_activation(self, video, question):
                return {"layers": ["layer 0 self", "layer 1 cross"], "with": [[0.9, 0.1], [0.5, 0.4]],
                        "without": [[0.2, 0.1], [0.5, 0.3]]}

        return Chat()


def make_service(tmp_path, **api_kwargs):
    from pvchat.web.service import WebService

    api = FakeApi(**api_kwargs)
    return WebService(tmp_path / "home", preset="tiny", recipe="fast.yaml", api=api), api


# --- uploads ----------------------------------------------------------------------------------------


def test_check_video_accepts_a_clip(clip):
    info = check_video(clip, UploadLimits())
    assert (info.width, info.height) == (64, 48) and info.duration_s == pytest.approx(2.0, abs=0.2)


@pytest.mark.parametrize("content, message", [(b"not a video at all", "not a readable video"), (b"", "empty file")])
def test_check_video_decides_by_content_not_name(tmp_path, content, message):
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(content)
    with pytest.raises(InputError, match=message):
        check_video(fake, UploadLimits())


def test_check_video_refuses_a_still_image(tmp_path):
    still = tmp_path / "photo.mp4"
    Image.new("RGB", (32, 32)).save(still, format="PNG")
    with pytest.raises(InputError, match="single frame"):
        check_video(still, UploadLimits())


def test_check_video_limits(clip):
    with pytest.raises(InputError, match="upload limit of 0.001 MB"):
        check_video(clip, UploadLimits(max_mb=0.001))
    with pytest.raises(InputError, match="over the limit of 1 s"):
        check_video(clip, UploadLimits(max_seconds=1))
    with pytest.raises(InputError, match="no video"):
        check_video(None, UploadLimits())
    with pytest.raises(InputError, match="must be > 0"):
        UploadLimits(max_mb=0)


def test_keep_upload_is_content_addressed(clip, tmp_path):
    a = keep_upload(clip, tmp_path / "up")
    b = keep_upload(clip, tmp_path / "up")
    assert a == b and a.name == "my_clip.mp4" and a.read_bytes() == clip.read_bytes()
    assert safe_name("../../etc/passwd") == "passwd.mp4"
    assert safe_name("Ünï cödé!.MOV") == "n_c_d.mov"


# --- the enrolment queue ----------------------------------------------------------------------------


def test_job_report_marks_earlier_stages_and_skips_repeated_records():
    job = EnrollJob(id=1, name="Ann", reference=Path("r.mp4"))
    job.report("stage1", 0.5, {"loss": 2.0, "total": 4})
    job.report("stage1", 1.0, {"loss": 2.0})  # the same record reported again at the stage's end
    job.report("stage2", 0.25, {"loss": 1.0, "note": "text is not a curve"})
    job.report("pack", 1.0, {"size_bytes": 100})  # not a training step: no curve point
    assert job.stage_fraction == {"analyze": 1.0, "synthesize": 1.0, "stage1": 1.0, "stage2": 1.0, "pack": 1.0}
    assert [(r["stage"], r["loss"]) for r in job.records] == [("stage1", 2.0), ("stage2", 1.0)]
    assert "note" not in job.records[1]


def test_queue_runs_one_at_a_time_in_order():
    running, order, most = [], [], [0]
    lock = threading.Lock()

    def learn(job, progress):
        with lock:
            running.append(job.name)
            most[0] = max(most[0], len(running))
        progress("stage1", 0.5, {"loss": 1.0})
        time.sleep(0.05)
        with lock:
            running.remove(job.name)
            order.append(job.name)
        return {"name": job.name}

    finished = []
    q = EnrollQueue(learn, on_finish=finished.append)
    jobs = [q.submit(n, Path("r.mp4")) for n in ("A", "B", "C")]
    assert q.position(jobs[2].id) == 3
    assert q.wait_idle(10)
    assert order == ["A", "B", "C"] and most[0] == 1
    assert [j.state for j in q.jobs()] == ["done"] * 3
    assert q.snapshot(jobs[0].id).card == {"name": "A"} and q.snapshot(jobs[0].id).records[0]["loss"] == 1.0
    assert sorted(j.name for j in finished) == ["A", "B", "C"] and q.version == 3
    q.close()


def test_queue_cancel_and_failures_keep_the_worker_alive():
    started = threading.Event()

    def learn(job, progress):
        if job.name == "Bad":
            raise InputError("no face in the reference video")
        if job.name == "Bug":
            raise RuntimeError("boom")
        started.set()
        while not job.cancel.is_set():
            time.sleep(0.01)
        raise PVChatError("cancelled")

    q = EnrollQueue(learn)
    slow = q.submit("Slow", Path("r.mp4"))
    queued = q.submit("Later", Path("r.mp4"))
    q.submit("Bad", Path("r.mp4"))
    q.submit("Bug", Path("r.mp4"))
    with pytest.raises(InputError, match="already being learned"):
        q.submit("Slow", Path("r.mp4"))
    assert started.wait(10)
    assert q.cancel(queued.id).state == "cancelled"
    assert q.cancel(slow.id).message == "cancelling…"
    assert q.wait_idle(10)
    states = {j.name: (j.state, j.message) for j in q.jobs()}
    assert states["Slow"] == ("cancelled", "cancelled")
    assert states["Later"] == ("cancelled", "cancelled before it started")
    assert states["Bad"] == ("failed", "no face in the reference video")
    assert states["Bug"][0] == "failed" and "RuntimeError: boom" in states["Bug"][1]
    assert q.cancel(999) is None
    q.close()


# --- views ------------------------------------------------------------------------------------------


def test_people_rows_and_card():
    card = {"name": "Ann", "names": ["Ann"], "created": 0, "size_bytes": 284952, "reference": "/x/ref.mp4",
            "base": {"preset": "tiny", "sha256": "c5f0fa8cd9f4f0ba2c2c"}, "learn_seconds": 47.2,
            "metrics": {"stage1": {"loss": 6.0, "step": 3}, "stage2": {"loss": 5.5123, "step": 4}}}
    row = views.people_rows([card])[0]
    assert row[0] == "Ann" and row[2] == "ref.mp4" and row[4] == "285.0 kB"
    assert row[3] == "stage1 loss 6 (3 steps), stage2 loss 5.51 (4 steps)"
    text = views.card_markdown(card)
    assert "### Ann" in text and "285.0 kB" in text and "ref.mp4" in text
    assert "`tiny` (sha256 c5f0fa8cd9f4…)" in text and "47 s" in text
    assert views.card_markdown(None).startswith("Select")
    assert views.card_name({"names": ["B", "C"]}) == "B"
    assert views.format_time("2025-01-02T03:04:05") == "2025-01-02 03:04" and views.format_time("soon") == "soon"
    assert views.format_size(512) == "512 B" and views.format_size(3.2e9) == "3.2 GB"


def test_progress_and_queue_markdown():
    assert "No enrolment" in views.progress_markdown(None)
    job = EnrollJob(id=3, name="Ann", reference=Path("r.mp4"))
    assert "number 2 in the queue" in views.progress_markdown(job, position=2)
    job.state, job.started = "running", time.time()
    job.report("stage2", 0.5, {})
    text = views.progress_markdown(job)
    assert "stage 2 (video)" in text and "50.0%" in text and "100.0%" in text
    job.state, job.message = "failed", "no <face>"
    assert "failed" in views.progress_markdown(job) and "no &lt;face&gt;" in views.progress_markdown(job)
    assert "| 3 | Ann | failed |" in views.queue_markdown([job])
    assert "empty" in views.queue_markdown([])


def test_curves_and_head_activation_images():
    empty = views.curves_image([])
    records = [{"stage": "stage1", "index": 0, "loss": 2.0, "sparsity": 0.1},
               {"stage": "stage2", "index": 1, "loss": 1.0, "sparsity": 0.2, "hae": 0.0}]
    full = views.curves_image(records)
    assert empty.dtype == np.uint8 and empty.ndim == 3 and full.shape == empty.shape
    assert not np.array_equal(empty, full)
    img = views.head_activation_image({"layers": ["a", "b"], "with": [[0.9, 0.1, 0.3], [0.5]],
                                       "without": [[0.1, 0.1, 0.3], [0.2]]}, title="Is <Ann> here?")
    assert img.dtype == np.uint8 and img.shape[2] == 3 and img.shape[1] > img.shape[0]
    with pytest.raises(ValueError, match="equal non-empty"):
        views.head_activation_image({"with": [[1.0]], "without": []})


def test_chat_text_helpers():
    assert views.insert_name("", "Ann") == "<Ann> "
    assert views.insert_name("Is", "<Ann>") == "Is <Ann> "
    assert views.insert_name("Is ", "Ann") == "Is <Ann> "
    assert names_in("Where is <A> relative to <B>? <A>") == ["A", "B"]
    assert views.shown("Is <Ann> & co here?") == "Is &lt;Ann&gt; &amp; co here?"
    msgs = views.chat_messages([("Is <Ann> here?", "Yes.")], pending=("And now?", ""))
    assert views.chat_messages([("Hm?", "")])[1]["content"] == "(no answer)"
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[0]["content"] == "Is &lt;Ann&gt; here?" and msgs[3]["content"] == "…"
    gallery = views.frame_gallery(np.zeros((3, 4, 4, 3), np.uint8))
    assert len(gallery) == 3 and gallery[2][1] == "frame 3" and views.frame_gallery(None) == []


# --- the service (over the fake api) ----------------------------------------------------------------


def test_service_enroll_list_chat_forget(tmp_path, clip):
    service, api = make_service(tmp_path)
    found = service.find_people(clip)
    assert found["reference"].is_file() and found["reference"].is_relative_to(service.work)
    job = service.enroll(found["reference"], " Ann ", 0, len(found["people"]))
    assert service.queue.wait_idle(10)
    assert service.queue.snapshot(job.id).state == "done"
    assert api.learned == [{"name": "Ann", "preset": "tiny", "recipe": "fast.yaml", "person": 0}]
    assert [views.card_name(c) for c in service.people()] == ["Ann"] and service.card("Ann")["size_bytes"] == 2048
    version = service.people_version

    video = service.query_video(clip)
    assert service.recent_videos() == [video]
    parts = list(service.stream(video, ["Ann"], "Is <Ann> here?", history=[("Hi", "Hello")]))
    assert parts[-1] == "Yes, <Ann> is here." and api.last_history == [("Hi", "Hello")]
    assert service.frames_seen(video, ["Ann"]).shape[0] == 4
    assert service.ask(video, ["Ann"], "Is <Ann> here?").text == "Yes."
    assert service.head_activation(video, ["Ann"], "Is <Ann> here?")["layers"][0] == "layer 0 self"
    assert api.chats_made == 1  # one loaded chat serves every question about Ann

    assert service.forget("Ann") and service.people() == [] and service.people_version > version
    with pytest.raises(InputError, match="no learned person"):
        service.forget("Ann")
    service.close()


def test_chat_is_served_while_enrolments_queue(tmp_path, clip):
    """Two tabs enrol at once (they queue); questions are answered while learning runs."""
    service, api = make_service(tmp_path, steps=20, delay=0.02)
    ref = service.find_people(clip)["reference"]
    service.enroll(ref, "Ann", 0, 1)
    assert service.queue.wait_idle(30)
    bob, cy = service.enroll(ref, "Bob", 0, 1), service.enroll(ref, "Cy", 0, 1)  # from two tabs
    assert service.queue.position(cy.id) == 2
    video = service.query_video(clip)
    while service.queue.snapshot(bob.id).state != "running":
        time.sleep(0.01)
    assert list(service.stream(video, ["Ann"], "Is <Ann> here?"))[-1] == "Yes, <Ann> is here."
    assert service.queue.snapshot(bob.id).state == "running"  # the answer did not wait for Bob
    assert service.queue.wait_idle(30)
    assert [j.name for j in service.queue.jobs() if j.state == "done"] == ["Ann", "Bob", "Cy"]
    assert [views.card_name(c) for c in service.people()] == ["Ann", "Bob", "Cy"]
    service.close()


def test_service_refuses_bad_input(tmp_path, clip):
    service, _ = make_service(tmp_path, found=2)
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello")
    with pytest.raises(InputError, match="not a readable video"):
        service.find_people(bad)
    ref = service.find_people(clip)["reference"]
    with pytest.raises(InputError, match="2 people are in this video"):
        service.enroll(ref, "Ann", None, 2)
    with pytest.raises(InputError, match="invalid subject name"):
        service.enroll(ref, "4nn <x>", 0, 2)
    with pytest.raises(InputError, match="upload a reference"):
        service.enroll(None, "Ann", 0, 1)
    with pytest.raises(InputError, match="1 to 3 people"):
        service.check_question([], "Is <Ann> here?")
    with pytest.raises(InputError, match="at most 3"):
        service.check_question(["A", "B", "C", "D"], "Is <A> here?")
    with pytest.raises(InputError, match="type a question"):
        service.check_question(["A"], "  ")
    with pytest.raises(InputError, match="names <Bob>, who is not chosen"):
        service.check_question(["A"], "Is <Bob> here?")
    with pytest.raises(InputError, match="select a person"):
        service.forget(None)
    service.close()


def test_service_finds_no_face(tmp_path, clip):
    service, _ = make_service(tmp_path, found=0)
    with pytest.raises(InputError, match="no face found"):
        service.find_people(clip)


# --- page handlers ----------------------------------------------------------------------------------


def test_handlers_report_errors_in_the_page(tmp_path, clip):
    from pvchat.web import app

    service, _ = make_service(tmp_path)
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    out = app.on_reference(service, str(bad))
    assert out[0] is None and out[-1] is None and out[-2].startswith("⚠") and "not a readable video" in out[-2]
    reference, n, sheet, faces, radio, status, _ = app.on_reference(service, str(clip))
    assert n == 1 and Image.open(sheet).size == (40, 20) and len(faces) == 1 and radio["value"] == 0
    assert "One person" in status and Path(faces[0][0]).is_file()  # files, so Gradio's copies match them
    job_id, status = app.on_learn(service, reference, "bad name!", 0, n, None)
    assert job_id is None and "invalid subject name" in status
    job_id, status = app.on_learn(service, reference, "Ann", 0, n, None)
    assert job_id is not None and "learning Ann" in status
    assert service.queue.wait_idle(10)
    progress, queue, plot, seen = app.enrolment_view(service, job_id, None)
    assert "learned" in progress and "Ann" in queue and plot.ndim == 3
    assert app.enrolment_view(service, job_id, seen)[2] == app.gr.skip()  # no new record: no redraw

    assert "not a readable video" in app.on_query_upload(service, str(bad))[-2]
    first = list(app.on_ask(service, None, ["Ann"], "Is <Ann> here?", []))
    assert first[-1][-1].startswith("⚠ upload or pick")
    video = service.query_video(clip)
    steps = list(app.on_ask(service, str(video), ["Ann"], "Is <Ann> here?", []))
    chat, _, history, gallery, last, status = steps[-1]
    assert history == [("Is <Ann> here?", "Yes, <Ann> is here.")] and len(gallery) == 4 and status == ""
    assert chat[-1]["content"] == "Yes, &lt;Ann&gt; is here."
    wrong = list(app.on_ask(service, str(video), ["Ann"], "Is <Bob> here?", history))[-1]
    assert "who is not chosen" in wrong[-1] and wrong[1] == "Is <Bob> here?"  # the question stays to fix

    image, status = app.on_inspect(service, last)
    assert image.ndim == 3 and "Yes, &lt;Ann&gt; is here." in status
    assert app.on_inspect(service, None)[1].startswith("⚠ ask a question")

    buttons = app.on_people(["Ann", "Bo"])
    assert buttons[0]["value"] == "<Ann>" and buttons[1]["visible"] and not buttons[2]["visible"]
    assert app.on_forget_ask(service, "Ann")[0]["visible"]
    assert "forgot Ann" in app.on_forget(service, "Ann")[1]
    assert "no learned person" in app.on_forget(service, "Ann")[1]
    service.close()


def test_build_app(tmp_path):
    import gradio as gr

    from pvchat.web.app import build_app

    service, _ = make_service(tmp_path)
    page = build_app(service)
    assert isinstance(page, gr.Blocks)
    ids = {getattr(b, "elem_id", None) for b in page.blocks.values()}
    assert {"enroll-video", "people-table", "chat-ask", "inspect-image", "people-forget-yes"} <= ids
    service.close()


# --- pvchat serve -----------------------------------------------------------------------------------


def test_serve_needs_a_token_off_localhost(monkeypatch):
    from pvchat.web.serve import resolve_auth, token_auth

    monkeypatch.delenv("PVCHAT_AUTH_TOKEN", raising=False)
    assert resolve_auth("127.0.0.1", None) is None
    with pytest.raises(ConfigError, match="--auth-token"):
        resolve_auth("0.0.0.0", None)
    with pytest.raises(ConfigError, match="at least 8"):
        resolve_auth("0.0.0.0", "short")
    monkeypatch.setenv("PVCHAT_AUTH_TOKEN", "s3cret-token")
    assert resolve_auth("0.0.0.0", None) == "s3cret-token"
    check = token_auth("s3cret-token")
    assert check("anyone", "s3cret-token") and not check("anyone", "guess") and not check("x", None)


def test_serve_command(monkeypatch, capsys):
    from pvchat.cli import main

    monkeypatch.delenv("PVCHAT_AUTH_TOKEN", raising=False)
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for flag in ("--home", "--host", "--port", "--auth-token", "--preset", "--recipe", "--max-upload-mb",
                 "--max-seconds"):
        assert flag in text
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "give a token with --auth-token" in capsys.readouterr().err
