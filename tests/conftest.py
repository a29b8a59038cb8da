"""Shared pytest fixtures. Append-only: several engineers add fixtures here."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# --- video and faces (tests/test_video.py, tests/test_faces.py) ---------------------------------


@pytest.fixture(scope="session")
def two_people_video(tmp_path_factory):
    """A 3 s, 8 fps, 320×240 h264 clip: the astronaut in all 24 frames, Grace Hopper in the last 18."""
    from pvchat.faces.samples import two_people_clip

    path = tmp_path_factory.mktemp("videos") / "two_people.mp4"
    two_people_clip(path, num_frames=24, size=(320, 240), fps=8.0, second_from=0.25)
    return path


# --- synthesis (tests/test_synth_classic.py) ------------------------------------------------------


@pytest.fixture(scope="session")
def two_people_analysis(two_people_video, tmp_path_factory):
    """``pvchat analyze`` output for ``two_people_video`` (subject: the astronaut, seen most)."""
    from pvchat.faces.analysis_dir import write_analysis
    from pvchat.faces.analyze import analyze_video

    out = tmp_path_factory.mktemp("analysis") / "an"
    write_analysis(analyze_video(two_people_video), out)
    return out


# --- training (tests/test_train.py, tests/test_train_kill.py) -------------------------------------


@pytest.fixture(scope="session")
def red_blue_data(tmp_path_factory):
    """Four 6-frame 48 px clips (red: <sks> is in it; blue: not) and their QA in manifest.jsonl.

    Read-only: copy the directory before writing into it."""
    import numpy as np

    from pvchat.data import ClipRecord, QARecord, write_manifest
    from pvchat.video import write_video

    root = tmp_path_factory.mktemp("red_blue")
    rng = np.random.default_rng(0)
    records = []
    for i, (colour, present) in enumerate([((220, 40, 40), True), ((40, 40, 220), False)] * 2):
        frames = np.zeros((6, 48, 48, 3), np.uint8) + np.array(colour, np.uint8)
        frames += rng.integers(0, 20, frames.shape, dtype=np.uint8)
        write_video(root / f"c{i}.mp4", frames, fps=8)
        yes = QARecord("existence", "Is <sks> in the video?", "Yes." if present else "No.", present)
        look = QARecord("appearance", "What is <sks> wearing?", "A red coat.")
        records.append(ClipRecord(f"c{i}.mp4", ["sks"] if present else [], [yes, look] if present else [yes],
                                  kind="positive" if present else "negative"))
    write_manifest(root / "manifest.jsonl", records)
    return root


# --- a local OpenAI-compatible chat endpoint (tests/test_qa.py, tests/test_eval.py) ---------------


class ChatStub(BaseHTTPRequestHandler):
    """Answers each POST with the next ``(status, payload)`` of ``script`` (500 when it runs out)
    and records ``(path, headers, body)`` in ``bodies``."""

    script: list = []
    bodies: list = []

    @staticmethod
    def completion(text: str) -> dict:
        return {"choices": [{"message": {"role": "assistant", "content": text}}]}

    @classmethod
    def say(cls, *texts: str) -> None:
        """Queue chat completions with these texts."""
        cls.script += [(200, cls.completion(t)) for t in texts]

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append((self.path, dict(self.headers), body))
        code, payload = type(self).script.pop(0) if type(self).script else (500, {"error": "no script"})
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    """``(base_url, ChatStub)`` for a chat endpoint on a free localhost port."""
    ChatStub.script, ChatStub.bodies = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatStub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", ChatStub
    server.shutdown()
    server.server_close()
