"""Serving the web app: auth, Gradio's files, build and run (the command: :mod:`pvchat.commands.serve`).

Local by default, a token required anywhere else.

Nothing calls out: Gradio's analytics are off, no share link is made, the page's fonts are
local and server-side rendering (which would need Node) is off. Gradio's temporary files live in
``HOME/.web/gradio`` (emptied at start and stop), not in the system's temp directory.
"""

from __future__ import annotations

import hmac
import os
import shutil
from pathlib import Path
from typing import Callable

from pvchat.errors import ConfigError
from pvchat.web.service import WebService

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


def build(home: Path, preset: str, recipe: str, limits, base: Path | None = None) -> tuple:
    """(the web service over ``home``, its Gradio app, queued one event at a time)."""
    service = WebService(home, preset=preset, recipe=recipe, limits=limits, base=base)
    own_gradio_dir(service.gradio_dir)  # before Gradio is imported: it reads GRADIO_TEMP_DIR then
    from pvchat.web.app import build_app  # gradio: imported only now, after GRADIO_TEMP_DIR is set

    app = build_app(service)
    app.queue(default_concurrency_limit=1)
    return service, app


def run(service, app, host: str, port: int, token: str | None, limits) -> None:
    """Serve ``app`` until it stops (Ctrl-C), then stop ``service`` and empty Gradio's files."""
    try:
        app.launch(server_name=host, server_port=int(port), share=False, auth=token_auth(token) if token else None,
                   auth_message="pvchat: enter any user name and the server's token as password" if token else None,
                   max_file_size=limits.max_bytes, allowed_paths=[str(service.work)], ssr_mode=False,
                   mcp_server=False, enable_monitoring=False, pwa=False, inbrowser=False, show_error=False,
                   quiet=True, footer_links=[])
    finally:
        service.close(wait=15.0)  # a running enrolment stops at its next step, resumable
        shutil.rmtree(service.gradio_dir, ignore_errors=True)


def own_gradio_dir(folder: Path) -> None:
    """Point Gradio's temporary files (every upload, every file the page shows) at ``folder``, a
    directory of the pvchat home that pvchat empties (here, at the server's start and stop) and
    searches when a person is forgotten, instead of the system temp directory."""
    shutil.rmtree(folder, ignore_errors=True)  # what a killed server left
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder.resolve())
