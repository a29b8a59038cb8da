"""pvchat as a hostile user tries it (issue 15): bad inputs, damaged packs and bases, kill -9, races.

The command-line part runs ``pvchat analyze``, ``learn``, ``ask`` and ``eval`` over a generated
corpus of bad and awkward inputs and asserts what a user must see: a non-zero exit, one line on
stderr, no traceback, and nothing left behind in the workspace; the inputs that are valid videos
(no face, five faces, a 4000×3000 frame, a ten-minute clip) get their one-line refusal or their
answer. Everything is tiny (a random-init ``tiny`` base, packs written without training) so the
module runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pvchat import cli
from pvchat.errors import InputError
from pvchat.io import file_sha256, load_tensors, write_json
from pvchat.pack import CARD, TENSORS, base_info, write_pack
from pvchat.video import write_video

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Is <Ann> in this video?"


# --- the corpus -----------------------------------------------------------------------------------

def _plain(n: int, h: int, w: int) -> np.ndarray:
    """(n, h, w, 3) uint8 smooth frames without faces (a moving gradient)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.dstack([(x * 255 // max(w - 1, 1) + 9 * i) % 256, y * 255 // max(h - 1, 1),
                                np.full_like(x, 90)]).astype(np.uint8) for i in range(n)])


def _five_faces() -> np.ndarray:
    """One frame with five different real faces side by side (LFW subset faces dlib tells apart)."""
    from pvchat.faces.samples import lfw_faces

    faces = lfw_faces(scale=4, pad=30)
    return np.concatenate([faces[i] for i in (0, 7, 18, 46, 52)], axis=1)  # (160, 800, 3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    c = {name: root / f"{name}.mp4" for name in ("empty", "random", "text", "png", "truncated", "directory",
                                                   "missing", "one_frame", "no_face", "five_faces", "huge", "long")}
    c["empty"].write_bytes(b"")
    c["random"].write_bytes(rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    c["text"].write_text("this is not a video\n" * 50)
    Image.fromarray(_plain(1, 48, 64)[0]).save(c["png"], format="PNG")
    whole = root / "whole.mp4"
    write_video(whole, rng.integers(0, 256, (40, 48, 64, 3), dtype=np.uint8), fps=8)
    data = whole.read_bytes()
    c["truncated"].write_bytes(data[: len(data) * 6 // 10])
    c["directory"].mkdir()
    (c["directory"] / "inside.txt").write_text("a directory named like a video")
    write_video(c["one_frame"], _plain(1, 48, 64), fps=8)
    write_video(c["no_face"], _plain(16, 48, 64), fps=8)
    write_video(c["five_faces"], np.stack([_five_faces()] * 8), fps=4)
    write_video(c["huge"], _plain(2, 3000, 4000), fps=2)  # a 4000×3000 frame, twice
    write_video(c["long"], _plain(600, 24, 32), fps=1)  # ten minutes at one frame per second
    return c


BAD = ("empty", "random", "text", "png", "truncated", "directory", "missing", "one_frame")
WHY = {"empty": "empty file", "random": "not a readable video", "text": "not a readable video",
       "png": "single frame", "truncated": "truncated", "directory": "a directory, not a video file",
       "missing": "no such file", "one_frame": "single frame"}


@pytest.fixture(scope="module")
def ann(tmp_path_factory) -> Path:
    """A home with the tiny base and a pack for <Ann> (written from the untrained model: no training)."""
    from pvchat.train.stages import build_base, with_subjects

    home = tmp_path_factory.mktemp("ann") / "home"
    base = build_base(home / "base" / "tiny", "tiny", 0)
    write_pack(with_subjects(base, ["Ann"]), ["Ann"], home / "people" / "Ann" / "pack", base)
    return home


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).exists() else []


def run_cli(capsys, *argv) -> tuple[int, str, list[str]]:
    """``pvchat ARGV`` in this process: (exit code, stdout, stderr lines). A traceback would raise here."""
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, [line for line in out.err.splitlines() if line.strip()]


def one_line_error(result: tuple[int, str, list[str]], *expected: str) -> str:
    """The result of :func:`run_cli` is exit code 2 and one stderr line holding every ``expected`` text."""
    code, _, err = result
    assert code == 2, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and err[0].startswith("pvchat ")
    for text in expected:
        assert text in err[0], err[0]
    return err[0]


# --- the corpus through analyze, learn, ask and eval ----------------------------------------------

@pytest.mark.parametrize("case", BAD)
def test_bad_videos_are_one_line_and_leave_nothing(case, corpus, ann, tmp_path, capsys):
    video = corpus[case]
    out = tmp_path / "analysis"
    one_line_error(run_cli(capsys, "analyze", video, out), WHY[case])
    assert not out.exists()

    home = tmp_path / "ws"
    one_line_error(run_cli(capsys, "learn", video, "--name", "Zed", "--preset", "tiny", "--home", home), WHY[case])
    assert files_under(home) == [] and not (home / "people").exists()

    before = files_under(ann)
    one_line_error(run_cli(capsys, "ask", video, QUESTION, "--home", ann), WHY[case])
    one_line_error(run_cli(capsys, "chat", video, "--home", ann), WHY[case])
    assert files_under(ann) == before

    if case != "missing":  # a missing BENCHMARK is where one gets built (pvchat eval --help)
        msg = one_line_error(run_cli(capsys, "eval", video, "--baseline", "face"))
        assert "benchmark" in msg


def test_valid_but_awkward_videos(corpus, ann, tmp_path, capsys):
    """No face, five faces, a 4000×3000 frame, ten minutes: refused in one line where learning needs a
    face, analysed or answered otherwise, in bounded time."""
    for case in ("no_face", "huge", "long"):
        t0 = time.perf_counter()
        one_line_error(run_cli(capsys, "analyze", corpus[case], tmp_path / case), "no detectable face")
        home = tmp_path / f"ws_{case}"
        one_line_error(run_cli(capsys, "learn", corpus[case], "--name", "Zed", "--preset", "tiny", "--home", home),
                       "no detectable face")
        assert files_under(home) == [] and not (tmp_path / case).exists()
        assert time.perf_counter() - t0 < 60, case

    code, out, err = run_cli(capsys, "analyze", corpus["five_faces"], tmp_path / "five")
    assert code == 0 and err == [] and "5 people" in out and (tmp_path / "five" / "person_4").is_dir()
    home = tmp_path / "ws_five"
    one_line_error(run_cli(capsys, "learn", corpus["five_faces"], "--name", "Zed", "--person", "7", "--preset", "tiny",
                            "--home", home), "no person 7; found 5")
    assert files_under(home) == []

    for case in ("no_face", "five_faces", "huge", "long"):
        code, out, err = run_cli(capsys, "ask", corpus[case], QUESTION, "--home", ann)
        assert code == 0 and err == [] and out.strip(), (case, err)


def test_a_real_process_exits_2_with_one_line(corpus, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pvchat.cli", "analyze", str(corpus["png"]), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"pvchat analyze: error: {corpus['png']}: a single frame "
                                                  f"(a still image?), not a video"]


def test_learn_help_states_the_bounds(capsys):
    with pytest.raises(SystemExit):
        cli.main(["learn", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "1.26 GB" in text and "407 s" in text and "at least two frames" in text


# --- 1. forgetting through the web app -------------------------------------------------------------

def _fast_learn(monkeypatch):
    """learn as it is, minus the slow parts: synthesis writes an empty data set and training is skipped
    (analysis of the reference, the base model and the pack are real)."""
    import pvchat.learn as pipeline
    import pvchat.train.stages as stages

    def synthesize(analysis, name, out, recipe, report, cancel, lock=None, pool=None):
        out.mkdir(parents=True)
        (out / "manifest.jsonl").write_text("")
        write_json(out / "summary.json", {"clips": 0, "qa_pairs": 0})

    monkeypatch.setattr(pipeline, "synthesize_in_child", synthesize)
    monkeypatch.setattr(stages, "learn_stages", lambda *a, **k: None)


def test_web_forget_leaves_no_file_of_theirs(tmp_path, monkeypatch):
    """Two people enrolled from one upload through the web app (handlers, service, queue, real analysis,
    Gradio's own caching of what the page shows); forgetting them leaves nothing of theirs."""
    from gradio.processing_utils import save_file_to_cache

    from pvchat.faces.samples import two_people_clip
    from pvchat.web import app
    from pvchat.web.service import WebService

    _fast_learn(monkeypatch)
    home = tmp_path / "home"
    service = WebService(home, preset="tiny", recipe=str(REPO / "tests" / "web_recipe.yaml"), isolate=False)
    upload = service.gradio_dir / "0f1e2d" / "holiday clip.mp4"  # where Gradio puts an upload
    upload.parent.mkdir(parents=True)
    two_people_clip(upload, num_frames=24, size=(320, 240), fps=8.0, second_from=0.25)
    clip_bytes = upload.read_bytes()
    rejected = service.gradio_dir / "9a8b7c" / "notes.mp4"
    rejected.parent.mkdir(parents=True)
    rejected.write_text("not a video")

    assert "not a readable video" in app.on_reference(service, str(rejected))[5]
    reference, n, sheet, faces, _, status, player = app.on_reference(service, str(upload))
    assert n == 2 and "2 people" in status
    assert not upload.exists() and not rejected.exists()  # Gradio's copies of both uploads are gone
    for shown in (player, sheet, *[f for f, _ in faces]):  # what Gradio caches of the page's outputs
        save_file_to_cache(shown, str(service.gradio_dir))

    for name, person in (("Ann", 0), ("Bo", 1)):
        app.on_learn(service, reference, name, person, n, None)
        assert service.queue.wait_idle(120)
    assert [j.state for j in service.queue.jobs()] == ["done", "done"], [j.message for j in service.queue.jobs()]
    base = set(files_under(home / "base"))

    kept = Path(reference)
    found = service.work / "people" / kept.parent.name
    anns = {file_sha256(p) for p in [*files_under(found / "person_0"), found / "contact_sheet.png"]}
    removed = service.forget("Ann")  # Bo still uses the upload: it stays; Ann's faces and the sheets go
    assert kept.is_file() and not (home / "people" / "Ann").exists()
    assert (found / "person_1" / "best_face.png").is_file() and found / "person_0" in removed
    assert not {file_sha256(p) for p in files_under(home)} & anns  # not in Bo's analysis, not in Gradio's
    bo = home / "people" / "Bo" / "analysis"
    assert not (bo / "person_0").exists() and not (bo / "contact_sheet.png").exists() and (bo / "person_1").is_dir()

    summary = app.on_forget(service, "Bo")[1]
    assert "forgot Bo" in summary and "uploaded reference video" in summary
    left = [p for p in files_under(home) if p not in base]
    assert left == [], left
    assert not any(p.stat().st_size == len(clip_bytes) for p in files_under(home))
    service.close()


def test_serve_keeps_gradio_files_in_the_home_and_empties_them(tmp_path, monkeypatch):
    """Gradio's uploads and page copies go to HOME/.web/gradio, emptied at start (what a killed server
    left) and at stop, not to the system's temp directory."""
    import gradio as gr

    from pvchat.commands import serve as serve_mod

    home = tmp_path / "home"
    folder = home / ".web" / "gradio"
    (folder / "old").mkdir(parents=True)
    (folder / "old" / "left by a killed server.mp4").write_bytes(b"x")
    seen = {}

    def launch(self, **kwargs):
        seen.update(env=os.environ.get("GRADIO_TEMP_DIR"), cache=[b.GRADIO_CACHE for b in self.blocks.values()],
                    leftovers=files_under(folder))
        (folder / "up").mkdir()
        (folder / "up" / "clip.mp4").write_bytes(b"an upload")

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    monkeypatch.setattr(serve_mod, "_sigterm_stops", lambda: None)
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    monkeypatch.delenv("PVCHAT_AUTH_TOKEN", raising=False)
    assert serve_mod.serve(home=home, port=7999) == 0
    assert seen["env"] == str(folder.resolve())
    assert folder / "old" / "left by a killed server.mp4" not in seen["leftovers"]
    assert seen["leftovers"], "the page's own images (e.g. the empty curves) are cached there too"
    assert seen["cache"] and all(Path(c) == folder.resolve() for c in seen["cache"])
    assert not folder.exists()


# --- 2 and 7. the base's identity is its content, checked on every load ----------------------------

def test_a_rebuilt_base_keeps_its_packs(ann, tmp_path):
    """Same tensors, another file (the metadata in another order, as a rebuild writes it): same base."""
    from safetensors.torch import save_file

    from pvchat.api import Chat

    original = ann / "base" / "tiny"
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(original, rebuilt)
    weights = rebuilt / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        metadata = f.metadata() or {}
    tensors = load_tensors(weights)
    save_file(tensors, str(weights), metadata=dict(reversed(list(metadata.items()))) or {"rebuilt": "yes"})
    assert file_sha256(weights) != file_sha256(original / "model.safetensors")
    assert base_info(rebuilt)["sha256"] == base_info(original)["sha256"]
    assert Chat(["Ann"], home=ann, base=rebuilt).people == ["Ann"]

    tensors[sorted(tensors)[0]].view(-1)[0] += 1.0  # other weights: another base
    save_file(tensors, str(weights), metadata=metadata)
    assert base_info(rebuilt)["sha256"] != base_info(original)["sha256"]
    with pytest.raises(InputError, match="another base model"):
        Chat(["Ann"], home=ann, base=rebuilt)


def test_changed_bytes_are_caught_even_with_size_and_mtime_kept(ann, tmp_path):
    from pvchat.api import Chat

    home = tmp_path / "home"
    shutil.copytree(ann, home)
    base = home / "base" / "tiny"
    card = json.loads((home / "people" / "Ann" / "pack" / CARD).read_text())
    card["base"]["path"] = str(base.resolve())
    write_json(home / "people" / "Ann" / "pack" / CARD, card)
    assert Chat(["Ann"], home=home).people == ["Ann"]
    weights = base / "model.safetensors"
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x40  # the last byte belongs to a tensor
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(InputError, match="another base model"):
        Chat(["Ann"], home=home)


def test_a_corrupt_pack_of_the_right_size_says_its_hash_differs(ann, tmp_path):
    from pvchat.api import Chat

    pack = tmp_path / "pack"
    shutil.copytree(ann / "people" / "Ann" / "pack", pack)
    data = bytearray((pack / TENSORS).read_bytes())
    data[-3] ^= 0x01
    (pack / TENSORS).write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        Chat([str(pack)], home=ann)
    assert "sha256" in str(e.value) and "differs" in str(e.value) and "\n" not in str(e.value)


def test_packs_from_before_content_hashes_still_load(ann, tmp_path):
    from pvchat.api import Chat

    pack = tmp_path / "pack"
    shutil.copytree(ann / "people" / "Ann" / "pack", pack)
    card = json.loads((pack / CARD).read_text())
    assert card["base"]["identity"] == "tensors-sha256"
    del card["base"]["identity"]
    card["base"]["sha256"] = file_sha256(ann / "base" / "tiny" / "model.safetensors")  # the old meaning
    write_json(pack / CARD, card)
    assert Chat([str(pack)], home=ann).people == ["Ann"]


# --- 3. kill -9 leaves no orphans -----------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int(d.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _gone_within(pids: list[int], seconds: float) -> float | None:
    """Seconds until every pid is gone, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if not any(_alive(p) for p in pids):
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def _kill(pids) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_analysis_workers_die_with_their_parent(tmp_path):
    script = ("import time\nfrom pvchat.faces.workers import _pool\npool = _pool(2)\n"
              "print(' '.join(str(p) for p in pool._processes), flush=True)\ntime.sleep(300)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    workers = []
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        parent.kill()
        parent.wait()
        took = _gone_within(workers, 5.0)
        assert took is not None, "pool workers outlived their killed parent"
    finally:
        _kill([parent.pid, *workers])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_synthesis_child_dies_with_learn_and_holds_the_lock_until_then(two_people_analysis, tmp_path):
    from pvchat.locks import hold

    lock = tmp_path / "people" / "Zed" / ".lock"
    script = (f"from pathlib import Path\nfrom pvchat.learn import synthesize_in_child\nfrom pvchat.locks import hold\n"
              f"with hold(Path({str(lock)!r}), 'busy') as fd:\n"
              f"    synthesize_in_child(Path({str(two_people_analysis)!r}), 'Zed', Path({str(tmp_path / 'data')!r}), 'tiny',"
              f" lambda f, i: None, None, fd)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    child = []
    try:
        deadline = time.monotonic() + 60
        while not child and time.monotonic() < deadline:
            child = [p for p in _children(parent.pid)
                     if "_synthesize_main" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
            time.sleep(0.05)
        assert child, "no synthesis child started"
        fds = {os.readlink(f) for f in Path(f"/proc/{child[0]}/fd").iterdir() if f.is_symlink()}
        assert str(lock) in fds  # the child holds the person's lock too
        time.sleep(1.0)
        parent.kill()
        parent.wait()
        took = _gone_within(child, 15.0)  # the child notices as soon as its imports are done
        assert took is not None, "the synthesis child outlived its killed parent"
        with hold(lock, "still held", wait=2.0):  # free again: a re-run can start
            pass
    finally:
        _kill([parent.pid, *child])


# --- 8. one learn per name at a time -----------------------------------------------------------

def test_one_learn_per_name_at_a_time(corpus, tmp_path):
    from pvchat.api import forget, learn
    from pvchat.locks import hold

    home, stop, seen = tmp_path / "ws", threading.Event(), {}
    stop.set()

    class Enough(Exception):
        pass

    def progress(stage, fraction, info):
        if "second" not in seen:
            with pytest.raises(InputError) as e:  # a second learn of Zed, told to stop at once if it ran
                learn(corpus["no_face"], "Zed", home=home, preset="tiny", cancel=stop)
            seen["second"] = str(e.value)
            with pytest.raises(InputError) as e:
                forget("Zed", home=home)
            seen["forget"] = str(e.value)
            raise Enough

    with pytest.raises(Enough):
        learn(corpus["no_face"], "Zed", home=home, preset="tiny", progress=progress)
    assert "being learned by another process" in seen["second"] and "pid" in seen["second"]
    assert "being learned right now" in seen["forget"]
    assert files_under(home) == []  # the first one failed before deriving anything: nothing left
    with hold(home / "people" / "Zed" / ".lock", "still held", wait=0):
        pass


# --- 4. a damaged card or a file for a benchmark: one line ------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("base"), "'base' is missing"),
    (lambda c: c["base"].pop("path"), "'base.path' is missing"),
    (lambda c: c.update(version="two"), "'version' must be a whole number"),
    (lambda c: c.update(names=["Ann", "Ann"]), "'names'"),
    (lambda c: c.update(files={}), "'files.pack.safetensors'"),
    (lambda c: c.update(size_bytes="big"), "'size_bytes'"),
    (lambda c: c["config"].__setitem__("preset", 7), "'config.preset'"),
])
def test_a_damaged_card_is_one_line(edit, message, ann, tmp_path, capsys):
    home = tmp_path / "home"
    shutil.copytree(ann, home)
    card_path = home / "people" / "Ann" / "pack" / CARD
    card = json.loads(card_path.read_text())
    edit(card)
    write_json(card_path, card)
    from pvchat.api import Chat, list_people

    with pytest.raises(InputError, match="damaged card"):
        Chat(["Ann"], home=home)
    assert "damaged card" in list_people(home)[0]["error"]
    video = tmp_path / "v.mp4"
    write_video(video, _plain(4, 48, 64), fps=8)
    one_line_error(run_cli(capsys, "ask", video, QUESTION, "--home", home), "damaged card", message)


def test_eval_on_a_file_is_one_line(corpus, capsys):
    one_line_error(run_cli(capsys, "eval", corpus["no_face"], "--baseline", "face"), "a file, not a benchmark")


# --- 5. names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Zed\n", "unk", "pad", "s", "video", "filename", "Zed\r", "1Zed", "Z" * 33])
def test_names_follow_one_rule(name, corpus, tmp_path, capsys):
    from pvchat.model.prompt import validate_name

    with pytest.raises(InputError, match="invalid subject name"):
        validate_name(name)
    home = tmp_path / "ws"
    err = one_line_error(run_cli(capsys, "learn", corpus["no_face"], "--name", name, "--home", home),
                         "invalid subject name")
    assert "\n" not in err and files_under(home) == []


def test_pack_names_follow_the_name_rule(corpus, ann, tmp_path, capsys):
    bench = tmp_path / "bench"
    for argv in (("ask", corpus["no_face"], QUESTION, "--pack", "../../etc", "--home", ann),
                 ("chat", corpus["no_face"], "--pack", "../../etc", "--home", ann),
                 ("eval", bench, "--pack", "../../etc", "--home", ann)):
        one_line_error(run_cli(capsys, *argv), "invalid subject name '../../etc'")
    assert not bench.exists()  # refused before a benchmark was built


# --- 8. noise and docs --------------------------------------------------------------------------------

def test_asking_prints_no_warnings(corpus, ann):
    from pvchat.api import Chat

    chat = Chat(["Ann"], home=ann, max_new_tokens=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = chat.ask(corpus["no_face"], QUESTION).text
        parts = list(chat.stream(corpus["no_face"], QUESTION, history=[("Hi?", text)]))
    assert [str(w.message) for w in caught] == []
    assert parts[-1] == chat.ask(corpus["no_face"], QUESTION, history=[("Hi?", text)]).text


def test_greedy_with_the_cache_equals_decoding_without_it(corpus, ann):
    from pvchat.api import Chat

    chat = Chat(["Ann"], home=ann, max_new_tokens=5)
    _, _, features, _ = chat._prompt(corpus["no_face"], QUESTION, None)
    ids = []
    with torch.no_grad():
        prompt = torch.tensor([chat.model.prepare(QUESTION).input_ids])
        embeds, _ = chat.model.embed_inputs(prompt, features)
        mask = torch.ones_like(prompt)
        for _ in range(5):
            nxt = int(chat.model.llm(inputs_embeds=embeds, attention_mask=mask).logits[0, -1].argmax())
            if nxt == chat.model.tokenizer.eos_token_id:
                break
            ids.append(nxt)
            row = chat.model.llm.get_input_embeddings()(torch.tensor([[nxt]]))
            embeds, mask = torch.cat([embeds, row], 1), torch.cat([mask, mask.new_ones(1, 1)], 1)
    expected = chat.model.tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert chat.ask(corpus["no_face"], QUESTION).text == expected


def test_readme_commands_parse():
    """Every command line in the README's table is one the parser accepts (placeholders filled in)."""
    import re
    import shlex

    parser = cli.build_parser()
    rows = re.findall(r"^\| `(pvchat [^`]*)`", (REPO / "README.md").read_text(), flags=re.M)
    assert len(rows) >= 12
    for row in rows:
        line = re.sub(r"\(([^()]*?) \\\| [^()]*\)", r"\1", row)  # (a \| b) → a
        line = re.sub(r"(\S+?)(?:\\\|\S+)+", r"\1", line)  # x\|y\|z → x
        line = re.sub(r"\b[A-Z][A-Z_]*\b", "1", line.replace("[", "").replace("]", "").replace("...", ""))
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit as e:
            assert e.code == 0, f"README: {row}"
