"""``pvchat ask``: one question about one video."""

from __future__ import annotations

from pathlib import Path

from pvchat.errors import InputError


def ask(video: Path, question: str, pack: list[str] | None = None, home: Path | None = None,
        base: Path | None = None) -> int:
    """Answer one question about a video, e.g. "Is <Anna> in this video?".

    Args:
        video: the video to ask about.
        question: the question; name learned people as <NAME>.
        pack: learned people to load (repeat --pack or give a comma list); default: the people the question names.
        home: the workspace (default: $PVCHAT_HOME or ./workspace).
        base: the base model directory (default: the one the pack was learned on).
    """
    # lazy, so that `pvchat --help` stays fast: torch, transformers (the model)
    from pvchat.api import DEFAULT_HOME, Chat, pack_names
    from pvchat.model.prompt import names_in, validate_name
    from pvchat.video import check_video

    check_video(video)  # a bad video fails before the model loads
    packs = [validate_name(p) for p in pack_names(pack)] or names_in(question)
    if not packs:
        raise InputError("name a learned person in the question as <NAME>, or pass --pack NAME")
    print(Chat(packs, home=DEFAULT_HOME if home is None else home, base=base).ask(video, question).text)
    return 0
