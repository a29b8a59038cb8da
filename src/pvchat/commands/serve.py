"""``pvchat serve``: start the web app (local by default, a token required anywhere else)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated

from pvchat.choices import PRESET, PRESETS, default_recipe, train_recipes
from pvchat.commands import OneOf
from pvchat.errors import ConfigError


def serve(home: Path | None = None, host: str = "127.0.0.1", port: int = 7860, auth_token: str | None = None,
          preset: Annotated[str, OneOf(PRESETS)] = PRESET,
          recipe: Annotated[str, OneOf(train_recipes(), "a YAML path")] | None = None, max_upload_mb: float = 200.0,
          max_seconds: float = 600.0, base: Path | None = None) -> int:
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
        preset: model preset new people are learned on.
        recipe: training recipe for new people (default: the preset's own).
        max_upload_mb: largest video upload accepted, in MB.
        max_seconds: longest video accepted, in seconds.
        base: a local Hugging Face video LLM directory new people are learned on instead of the preset's model.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before Gradio is imported
    # lazy, so that `pvchat --help` stays fast: gradio, torch (the app and the model)
    from pvchat.web.serve import build, resolve_auth, run

    token = resolve_auth(host, auth_token)
    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"port must be 1-65535, got {port}")
    from pvchat.web.uploads import UploadLimits  # lazy (--help): pvchat.video's av, cv2, torch

    limits = UploadLimits(max_mb=float(max_upload_mb), max_seconds=float(max_seconds))
    if home is None:
        home = Path(os.environ.get("PVCHAT_HOME", "workspace"))
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    if base is not None:
        from pvchat.model.backbones import family_of  # lazy (--help): torch, the backbone registry

        family_of(base)  # not a model directory, or an unsupported family: one line before serving
    recipe = default_recipe(preset) if recipe is None else recipe
    service, app = build(home, preset, recipe, limits, base)
    shown = f"[{host}]" if ":" in host else host
    print(f"pvchat serve: http://{shown}:{port}  (home {home.resolve()}, preset {preset}, recipe {recipe})",
          flush=True)
    if token is not None:
        print("pvchat serve: a token is required: the page asks for it (any user name, the token as password)",
              flush=True)
    else:
        print("pvchat serve: local only, no token required", flush=True)
    _sigterm_stops()
    run(service, app, host, port, token, limits)
    return 0


def _sigterm_stops() -> None:
    """SIGTERM stops the server as Ctrl-C does (Gradio closes, a running enrolment is cancelled and
    worker processes are joined at exit) instead of killing the process outright."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
