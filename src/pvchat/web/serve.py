"""``pvchat serve``: start the web app (local by default, a token required anywhere else).

Nothing calls out: Gradio's analytics are off, no share link is made, the page's fonts are
local and server-side rendering (which would need Node) is off. Gradio's temporary files live in
``HOME/.web/gradio`` (emptied at start and stop), not in the system's temp directory.
"""

from __future__ import annotations

import hmac
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable

from pvchat.errors import ConfigError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "PVCHAT_AUTH_TOKEN"


def token_auth(token: str) -> Callable[[str, str], bool]:
    """Gradio ``auth``: any user name, the token as password (compared in constant time)."""
    expected = token.encode()

    def check(username: str, password: str) -> bool:
        return hmac.compare_digest((password or "").encode(), expected)

    return check


def resolve_auth(host: str, auth_token: str | None) -> str | None:
    """The token to require (None: none needed); ConfigError for a public bind without one."""
    token = auth_token or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < 8:
        raise ConfigError("the auth token must be at least 8 characters")
    if host not in LOCAL_HOSTS and token is None:
        raise ConfigError(f"binding to {host} makes the app reachable from other machines: "
                          f"give a token with --auth-token or ${TOKEN_ENV}")
    return token


def serve(home: Path | None = None, host: str = "127.0.0.1", port: int = 7860, auth_token: str | None = None,
          preset: str = "face", recipe: str = "face", max_upload_mb: float = 200.0,
          max_seconds: float = 600.0) -> int:
    """Start the web app: enroll people, list and forget them, chat about videos, inspect heads.

    Serves a page with four tabs. Enroll: upload a reference video, pick the person, name them and
    follow learning stage by stage with its loss and sparsity curves (enrolments queue and run
    one at a time in the background). People: the enrolled people's cards; forget one. Chat:
    upload or pick a video, choose 1 to 3 people and ask, with answers streamed and the frames
    the model saw. Inspect: per-head activation with and without the person for the last answer.

    Binds to 127.0.0.1 unless told otherwise; any other address needs a token, which the page
    then asks for (any user name, the token as password). Nothing is sent anywhere: no analytics,
    no share link.

    Args:
        home: where people (concept packs) live (default: $PVCHAT_HOME, else ./workspace).
        host: address to bind to; anything but 127.0.0.1/localhost/::1 needs a token.
        port: TCP port.
        auth_token: password for the page (else $PVCHAT_AUTH_TOKEN, which other users of the machine
            cannot read off the process list); required off localhost.
        preset: model preset new people are learned on (face, tiny, demo, paper).
        recipe: training recipe for new people: a name (demo, paper) or a YAML path.
        max_upload_mb: largest video upload accepted, in MB.
        max_seconds: longest video accepted, in seconds.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before Gradio is imported
    token = resolve_auth(host, auth_token)
    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"port must be 1-65535, got {port}")
    from pvchat.web.uploads import UploadLimits

    limits = UploadLimits(max_mb=float(max_upload_mb), max_seconds=float(max_seconds))
    if home is None:
        home = Path(os.environ.get("PVCHAT_HOME", "workspace"))
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)

    from pvchat.web.service import WebService

    service = WebService(home, preset=preset, recipe=recipe, limits=limits)
    own_gradio_dir(service.gradio_dir)  # before Gradio is imported: it reads GRADIO_TEMP_DIR then
    from pvchat.web.app import build_app

    app = build_app(service)
    app.queue(default_concurrency_limit=1)
    shown = f"[{host}]" if ":" in host else host
    print(f"pvchat serve: http://{shown}:{port}  (home {home.resolve()}, preset {preset}, recipe {recipe})",
          flush=True)
    if token is not None:
        print("pvchat serve: a token is required: the page asks for it (any user name, the token as password)",
              flush=True)
    else:
        print("pvchat serve: local only, no token required", flush=True)
    _sigterm_stops()
    try:
        app.launch(server_name=host, server_port=int(port), share=False, auth=token_auth(token) if token else None,
                   auth_message="pvchat: enter any user name and the server's token as password" if token else None,
                   max_file_size=limits.max_bytes, allowed_paths=[str(service.work)], ssr_mode=False,
                   mcp_server=False, enable_monitoring=False, pwa=False, inbrowser=False, show_error=False,
                   quiet=True, footer_links=[])
    finally:
        service.close(wait=15.0)  # a running enrolment stops at its next step, resumable
        shutil.rmtree(service.gradio_dir, ignore_errors=True)
    return 0


def own_gradio_dir(folder: Path) -> None:
    """Point Gradio's temporary files (every upload, every file the page shows) at ``folder``, a
    directory of the pvchat home that pvchat empties (here, at the server's start and stop) and
    searches when a person is forgotten, instead of the system temp directory."""
    shutil.rmtree(folder, ignore_errors=True)  # what a killed server left
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder.resolve())


def _sigterm_stops() -> None:
    """SIGTERM stops the server as Ctrl-C does (Gradio closes, a running enrolment is cancelled and
    worker processes are joined at exit) instead of killing the process outright."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
