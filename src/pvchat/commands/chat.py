"""``pvchat chat``: several rounds about one video, questions on stdin, answers streamed."""

from __future__ import annotations

import sys
from pathlib import Path

from pvchat.errors import InputError, PVChatError


def _emit(text: str, shown: str) -> str:
    """Print the part of a growing answer not printed yet; hold back a half-decoded character."""
    stable = text.rstrip("\ufffd")
    if stable.startswith(shown) and len(stable) > len(shown):
        sys.stdout.write(stable[len(shown):])
        sys.stdout.flush()
        return stable
    return shown


def chat(video: Path, pack: list[str] | None = None, home: Path | None = None) -> int:
    """Talk about one video over several rounds (reads questions from stdin; /quit or end of input ends).

    Each answer streams as it is generated and the conversation so far goes with every question;
    /reset starts a new conversation. Works with piped input: pvchat chat clip.mp4 --pack Anna < questions.txt

    Args:
        video: the video to talk about.
        pack: learned people to load (repeat --pack or give a comma list); default: every learned person.
        home: the workspace (default: $PVCHAT_HOME or ./workspace).
    """
    # lazy, so that `pvchat --help` stays fast: torch, transformers (the model)
    from pvchat.api import DEFAULT_HOME, Chat, list_people, pack_names
    from pvchat.model.prompt import validate_name
    from pvchat.video import check_video

    home = DEFAULT_HOME if home is None else home
    check_video(video)  # a bad video fails before the first question
    packs = [validate_name(p) for p in pack_names(pack)] or [c["name"] for c in list_people(home)]
    if not packs:
        raise InputError(f"no learned people in {home}; learn one with 'pvchat learn REFERENCE --name NAME'")
    session = Chat(packs, home=home)
    interactive = sys.stdin.isatty()
    print(f"chat about {video} with {', '.join(f'<{n}>' for n in session.people)}; /quit ends, /reset starts over",
          file=sys.stderr)
    history: list[tuple[str, str]] = []
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        question = line.strip()
        if not question:
            continue
        if question in ("/quit", "/exit"):
            break
        if question == "/reset":
            history = []
            continue
        shown, text = "", ""
        try:
            for text in session.stream(video, question, history):
                shown = _emit(text, shown)
        except PVChatError as e:  # one bad question does not end the conversation
            print(f"error: {e}", file=sys.stderr)
            continue
        if text != shown:
            sys.stdout.write(text[len(shown):] if text.startswith(shown) else "\n" + text)
        print(flush=True)
        history.append((question, text))
    return 0
