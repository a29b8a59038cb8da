"""A learned concept pack as an answerer of the benchmark (``pvchat eval --pack``)."""

from __future__ import annotations

from pathlib import Path

from pvchat.errors import ConfigError
from pvchat.model.prompt import validate_name
from pvchat.pack import CARD


def check_pack_spec(pack: str) -> None:
    """``--pack`` is a concept pack directory (or a person directory holding one) or else a learned
    person's name, which follows the name rule: ``../../etc`` is neither."""
    if not (Path(pack) / CARD).is_file() and not (Path(pack) / "pack" / CARD).is_file():
        validate_name(pack)


def pack_answerer(pack: str, home: Path | None = None, base: Path | None = None):
    """(``answer_fn``, the pack's subject name) over a learned concept pack through :class:`pvchat.api.Chat`.

    ``pack`` is a learned person's name or a pack directory (whatever ``Chat`` accepts); the
    pack must hold one person, or ``pack`` must be one of its names. ``base``: the base model
    directory (default: the one the pack was learned on).
    """
    try:
        from pvchat.api import Chat  # lazy: the learn pipeline and the model (seconds), only for --pack
        from pvchat.model.pvchat import PVChat  # lazy: as above
    except ImportError as e:
        raise ConfigError(f"--pack needs the Python API pvchat.api, which could not be imported ({e})") from None
    check_pack_spec(pack)
    chat = Chat(packs=[pack], **({"home": home} if home is not None else {}), **({"base": base} if base else {}))
    people = list(chat.people)
    if pack in people:
        learned = pack
    elif len(people) == 1:
        learned = people[0]
    else:
        raise ConfigError(f"pack {pack!r} holds {', '.join(people)}; name one of them with --pack")

    def answer(video: str, question: str, subject: str) -> str:
        return chat.ask(video, question).text

    answer.name = f"pack-{learned}"  # type: ignore[attr-defined]
    # the base it was learned on, when it is a preset's (a user's video LLM is not loaded twice)
    answer.preset_base = chat.base if isinstance(getattr(chat, "model", None), PVChat) else None  # type: ignore[attr-defined]
    answer.describe = lambda: {"pack": str(pack), "subject": learned,  # type: ignore[attr-defined]
                               "home": str(chat.home), "base": str(chat.base)}
    return answer, learned


def pack_subjects(bench, learned: str, subject: str | None) -> tuple[list[str], dict[str, str]]:
    """(benchmark subjects to ask about, renames) for a pack that learned the name ``learned``."""
    if subject is None:
        names = [s["name"] for s in bench.subjects]
        if learned not in names:
            raise ConfigError(f"the pack's person {learned!r} is not a subject of {bench.root}; pass --subject with "
                              f"the benchmark subject it learned (one of: {', '.join(names)})")
        return [learned], {}
    name = bench.subject(subject)["name"]
    return [name], ({name: learned} if name != learned else {})
