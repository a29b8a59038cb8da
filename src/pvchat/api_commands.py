"""``pvchat learn / ask / chat / forget``: the Python API (:mod:`pvchat.api`) on the command line."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from pvchat.api import DEFAULT_HOME, STAGES, Chat, forget, learn, list_people, names_in, pack_names
from pvchat.errors import InputError, PVChatError
from pvchat.model.prompt import validate_name


def _mb(n: int | None) -> str:
    return f"{(n or 0) / 1e6:.2f} MB"


class _Bars:
    """One tqdm bar per learn stage, driven by learn's progress callback (on stderr, when it is a
    terminal: piped or logged, stderr holds only what went wrong)."""

    def __init__(self):
        self.bars: dict = {}

    def __call__(self, stage: str, fraction: float, info: dict) -> None:
        from tqdm.auto import tqdm

        if stage not in self.bars:
            for other in list(self.bars.values()):
                other.refresh()
            self.bars[stage] = tqdm(total=100, desc=f"{stage:<10}", unit="%", position=STAGES.index(stage),
                                    bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}{postfix}",
                                    disable=not sys.stderr.isatty())
        bar = self.bars[stage]
        bar.n = round(100 * fraction)
        if "loss" in info:
            bar.set_postfix(step=f"{info['step']}/{info.get('total', '?')}", loss=f"{info['loss']:.3f}", refresh=False)
        elif "clips" in info:
            bar.set_postfix(clips=info["clips"], refresh=False)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def learn_command(reference: Path, *, name: str, person: int | None = None, preset: str = "face", recipe: str = "face",
                  home: Path = DEFAULT_HOME) -> int:
    """Learn a person from one reference video: analyze, synthesize, train two stages, write a concept pack.

    Everything goes under HOME/people/NAME/ (analysis, data, run, pack). Ctrl-C stops at the next
    training step with a checkpoint; running the same command again resumes. 'pvchat forget NAME'
    deletes it all. One learn per name at a time: a second one is refused while the first runs.

    The reference must decode to at least two frames (a still image is refused). Memory and time
    bounds: frames are analysed at 8 per second of video and at most 1280 px on their longer side,
    so size costs memory only up to that (a 4000x3000 reference peaked at 1.26 GB in learn); time
    grows with the length (a 600-frame reference took 407 s on 2 CPU cores). A short clip (10-30 s)
    in which the person's face is clearly visible is all learn needs.

    Args:
        reference: the reference video of the person.
        name: what questions call the person: <NAME> (letters, digits, '_' or '-').
        person: which person of the reference to learn (0 = seen most; 'pvchat analyze' lists them).
        preset: model preset (face, the default, learns identity; tiny, demo or paper).
        recipe: training recipe: a name (demo, paper) or a YAML path.
        home: the workspace (default: $PVCHAT_HOME or ./workspace).
    """
    cancel = threading.Event()
    bars = _Bars()

    def interrupt(signum, frame):  # first Ctrl-C: stop cleanly at the next step; second: at once
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        card = learn(reference, name, home=home, preset=preset, recipe=recipe, person=person, progress=bars,
                     cancel=cancel)
    finally:
        bars.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    base = card["base"]["size_bytes"]
    print(f"learned <{name}>: {Path(home) / 'people' / name / 'pack'} ({_mb(card['size_bytes'])}; "
          f"base model {_mb(base)}, {100 * card['size_bytes'] / max(base, 1):.1f}%)")
    print(f"ask: pvchat ask VIDEO \"Is <{name}> in this video?\" --home {home}")
    return 0


def ask_command(video: Path, question: str, pack: list[str] | None = None, home: Path = DEFAULT_HOME) -> int:
    """Answer one question about a video, e.g. "Is <Anna> in this video?".

    Args:
        video: the video to ask about.
        question: the question; name learned people as <NAME>.
        pack: learned people to load (repeat --pack or give a comma list); default: the people the question names.
        home: the workspace (default: $PVCHAT_HOME or ./workspace).
    """
    from pvchat.video import check_video

    check_video(video)  # a bad video fails before the model loads
    packs = [validate_name(p) for p in pack_names(pack)] or names_in(question)
    if not packs:
        raise InputError("name a learned person in the question as <NAME>, or pass --pack NAME")
    print(Chat(packs, home=home).ask(video, question).text)
    return 0


def _emit(text: str, shown: str) -> str:
    """Print the part of a growing answer not printed yet; hold back a half-decoded character."""
    stable = text.rstrip("\ufffd")
    if stable.startswith(shown) and len(stable) > len(shown):
        sys.stdout.write(stable[len(shown):])
        sys.stdout.flush()
        return stable
    return shown


def chat_command(video: Path, pack: list[str] | None = None, home: Path = DEFAULT_HOME) -> int:
    """Talk about one video over several rounds (reads questions from stdin; /quit or end of input ends).

    Each answer streams as it is generated and the conversation so far goes with every question;
    /reset starts a new conversation. Works with piped input: pvchat chat clip.mp4 --pack Anna < questions.txt

    Args:
        video: the video to talk about.
        pack: learned people to load (repeat --pack or give a comma list); default: every learned person.
        home: the workspace (default: $PVCHAT_HOME or ./workspace).
    """
    from pvchat.video import check_video

    check_video(video)  # a bad video fails before the first question
    packs = [validate_name(p) for p in pack_names(pack)] or [c["name"] for c in list_people(home)]
    if not packs:
        raise InputError(f"no learned people in {home}; learn one with 'pvchat learn REFERENCE --name NAME'")
    chat = Chat(packs, home=home)
    interactive = sys.stdin.isatty()
    print(f"chat about {video} with {', '.join(f'<{n}>' for n in chat.people)}; /quit ends, /reset starts over",
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
            for text in chat.stream(video, question, history):
                shown = _emit(text, shown)
        except PVChatError as e:  # one bad question does not end the conversation
            print(f"error: {e}", file=sys.stderr)
            continue
        if text != shown:
            sys.stdout.write(text[len(shown):] if text.startswith(shown) else "\n" + text)
        print(flush=True)
        history.append((question, text))
    return 0


def forget_command(name: str, home: Path = DEFAULT_HOME) -> int:
    """Delete everything learned about a person: analysis, synthesized data, training runs and pack.

    The reference video itself is yours and stays.

    Args:
        name: the learned person.
        home: the workspace (default: $PVCHAT_HOME or ./workspace).
    """
    deleted = forget(name, home=home)
    for path in deleted:
        print(f"deleted {path}")
    print(f"forgot <{name}>")
    return 0
