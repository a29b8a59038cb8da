"""``pvchat serve`` end to end in a real headless browser (Debian's chromium driven by Playwright).

Starts ``pvchat serve`` on a free localhost port (tiny preset, tests/web_recipe.yaml) with a fresh
home, renders a reference video and a query clip of one person of the offline world, then in the
browser: enrols the person (upload, name, Learn, wait for the stages), finds them in the People
tab, asks "Is <Name> in this video?" about the query clip and gets a streamed answer with the
frames the model saw, shows the head-activation picture, and forgets them (with the
confirmation step). Screenshots go to the test's tmp dir and tests/artifacts/. Every request
the page makes must stay on the server: nothing calls out.

The browser is required: if chromium or Playwright cannot start, the test fails with the reason.
Setup: ``apt-get install -y chromium`` and ``pip install playwright`` (scripts/setup.sh); never
``playwright install`` (it downloads browsers).
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # a served app driven by a browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RECIPE = Path(__file__).parent / "web_recipe.yaml"
ARTIFACTS = Path(__file__).parent / "artifacts"
LEARN_TIMEOUT_S = 400  # the tiny enrolment takes ~50 s alone on 2 cores; far more when they are shared


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """(reference.mp4, query.mp4, name): one person of the offline world, alone and in a clip."""
    from pvchat.offline.world.api import make_world
    from pvchat.video import write_video

    out = tmp_path_factory.mktemp("web_clips")
    world = make_world(people=4, seed=0)
    person = world.people[0]
    write_video(out / "reference.mp4", world.render_reference(person.id).frames, fps=world.fps)
    spec = world.clip_spec(0, must_include=person.id)
    write_video(out / "query.mp4", world.render_clip(spec).frames, fps=world.fps)
    return out / "reference.mp4", out / "query.mp4", person.name


@contextlib.contextmanager
def _serve(root: Path, *args: str):
    """``pvchat serve --port FREE *args`` in a subprocess: yields its base URL and log path."""
    port = _free_port()
    env = {**os.environ, "PVCHAT_HOME": str(root / "home"), "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(root / "gradio"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    env.pop("PVCHAT_AUTH_TOKEN", None)
    log_path = root / "server.log"
    cmd = [sys.executable, "-m", "pvchat.cli", "serve", "--port", str(port), *args]
    with open(log_path, "w") as log:
        # its own process group: whatever it starts is stopped with it
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"pvchat serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"pvchat serve did not answer on {url} in 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "log": log_path, "home": root / "home"}
    finally:
        proc.terminate()  # pvchat serve stops as on Ctrl-C
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of its group still there
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``pvchat serve`` on the tiny preset and the test recipe, local, no token."""
    with _serve(tmp_path_factory.mktemp("web_server"), "--preset", "tiny", "--recipe", str(RECIPE),
                "--max-upload-mb", "20", "--max-seconds", "60") as running:
        yield running


@pytest.fixture()
def browser_page(tmp_path):
    """A fresh headless chromium page; the test FAILS (never skips) when the browser cannot start."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail(f"Playwright is not installed ({e}); run scripts/setup.sh (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium")
    manager = sync_playwright().start()
    try:
        context = manager.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1300, "height": 1000})
    except Exception as e:
        manager.stop()
        pytest.fail(f"the browser cannot start: {type(e).__name__}: {e}")
    try:
        yield context.pages[0] if context.pages else context.new_page()
    finally:
        context.close()
        manager.stop()


def _text(page, selector: str) -> str:
    return page.inner_text(selector)


def _wait_text(page, selector: str, needle: str, timeout_s: float, server=None) -> None:
    """Wait until ``selector``'s text contains ``needle``; fail with what it shows (and the log)."""
    try:
        page.wait_for_function("([sel, text]) => { const el = document.querySelector(sel);"
                               " return el !== null && el.innerText.includes(text); }",
                               arg=[selector, needle], timeout=timeout_s * 1000, polling=250)
    except Exception:
        shown = page.inner_text(selector) if page.query_selector(selector) else "(not on the page)"
        log = server["log"].read_text()[-3000:] if server else ""
        pytest.fail(f"{selector} never showed {needle!r}; it shows:\n{shown}\n--- server log ---\n{log}")


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"web-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
    print(f"screenshot: {path} (copy: {ARTIFACTS / path.name})")
    return path


@pytest.mark.slow  # 60-80 s on 2 cores (learning ~45 s of it); .ci/run runs it
@pytest.mark.timeout(900)
def test_enroll_chat_forget_in_a_browser(server, clips, browser_page, tmp_path):
    reference, query, name = clips
    page = browser_page
    url = server["url"]
    outside = []
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith((url, "data:", "blob:", "about:")) else None)
    started = time.monotonic()
    page.goto(url)
    page.wait_for_selector("#enroll-video", timeout=60_000)

    # Enroll: a bad upload first (a text file called .mp4): an error in the page, the player cleared
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video")
    page.set_input_files("#enroll-video input[type=file]", str(bogus))
    _wait_text(page, "#enroll-status", "not a readable video", 60, server)

    page.set_input_files("#enroll-video input[type=file]", str(reference))
    _wait_text(page, "#enroll-status", "found in reference.mp4", 120, server)
    assert page.query_selector("#enroll-sheet img") is not None  # the contact sheet is shown
    page.fill("#enroll-name textarea, #enroll-name input", name)
    page.click("#enroll-learn")
    _wait_text(page, "#enroll-status", f"learning {name}", 30, server)
    _wait_text(page, "#enroll-progress", "learned ✓", LEARN_TIMEOUT_S, server)
    progress = _text(page, "#enroll-progress")
    assert progress.count("100.0%") == 5, progress
    enrol_s = time.monotonic() - started
    _screenshot(page, tmp_path, "enroll")

    # People: the new person with their card
    page.get_by_role("tab", name="People").click()
    _wait_text(page, "#people-table", name, 30, server)
    _wait_text(page, "#people-table", "reference.mp4", 5, server)

    # Chat: upload the query clip, choose the person, insert <Name> with its button, ask
    page.get_by_role("tab", name="Chat").click()
    page.set_input_files("#chat-video input[type=file]", str(query))
    _wait_text(page, "#chat-status", "ready", 60, server)
    page.locator("#chat-people").get_by_label(name).check()
    page.click("#chat-name-0")
    page.wait_for_function("t => document.querySelector('#chat-question textarea').value.includes(t)",
                           arg=f"<{name}>", timeout=20_000)
    page.fill("#chat-question textarea", f"Is <{name}> in this video?")
    page.click("#chat-ask")
    page.wait_for_selector("#chat-frames img", timeout=300_000)  # the frames come with the finished answer
    _wait_text(page, "#chat-log", f"Is <{name}> in this video?", 10, server)
    assert "⚠" not in _text(page, "#chat-status")
    # the page shows exactly what the model answers (greedy decoding: the same in this process)
    from pvchat.api import Chat

    expected = Chat([name], home=server["home"]).ask(query, f"Is <{name}> in this video?").text
    words = re.sub(r"\W+", "", expected) or "noanswer"  # markdown may restyle punctuation, not words
    assert words in re.sub(r"\W+", "", _text(page, "#chat-log")), (expected, _text(page, "#chat-log"))
    _screenshot(page, tmp_path, "chat")

    # Inspect: the head activation of the last answer
    page.get_by_role("tab", name="Inspect").click()
    page.click("#inspect-run")
    _wait_text(page, "#inspect-status", "✓", 120, server)
    assert page.query_selector("#inspect-image img") is not None
    _screenshot(page, tmp_path, "inspect")

    # People: the card, then forget with the confirmation step
    page.get_by_role("tab", name="People").click()
    page.locator("#people-select input").click()
    page.get_by_role("option", name=name).click()
    _wait_text(page, "#people-card", "pack size", 20, server)
    _screenshot(page, tmp_path, "people")
    page.click("#people-forget")
    _wait_text(page, "#people-confirm", f"Forget {name}?", 10, server)
    page.click("#people-forget-yes")
    _wait_text(page, "#people-status", f"forgot {name}", 30, server)
    page.wait_for_function("t => !document.querySelector('#people-table').innerText.includes(t)",
                           arg=name, timeout=20_000)
    _screenshot(page, tmp_path, "forgotten")
    assert not (server["home"] / "people" / name).exists()
    assert outside == [], f"the page made requests off the server: {outside}"
    print(f"enrolment in the browser took {enrol_s:.0f} s; the whole flow {time.monotonic() - started:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_token_guards_the_page(tmp_path):
    """With a token, nothing but the login answers until the token is given (any user name)."""
    token = "s3cret-token-123"
    with _serve(tmp_path, "--auth-token", token) as running:
        url = running["url"]
        assert "a token is required" in running["log"].read_text()
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{url}/config", timeout=30)
        assert denied.value.code == 401
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

        def login(password: str) -> int:
            form = urllib.parse.urlencode({"username": "anyone", "password": password}).encode()
            try:
                return browser.open(f"{url}/login", data=form, timeout=30).status
            except urllib.error.HTTPError as e:
                return e.code

        assert login("a guess") in (400, 401)
        assert login(token) == 200
        assert browser.open(f"{url}/config", timeout=30).status == 200
