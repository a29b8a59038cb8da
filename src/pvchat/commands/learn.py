"""``pvchat learn``: learn a person from one reference video, with a progress bar per stage."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

from pvchat.choices import PRESET, PRESETS, train_recipes
from pvchat.commands import OneOf


def _mb(n: int | None) -> str:
    return f"{(n or 0) / 1e6:.2f} MB"


class _Bars:
    """One tqdm bar per learn stage, driven by learn's progress callback (on stderr, when it is a
    terminal: piped or logged, stderr holds only what went wrong)."""

    def __init__(self, stages: tuple[str, ...]):
        self.stages = stages
        self.bars: dict = {}

    def __call__(self, stage: str, fraction: float, info: dict) -> None:
        from tqdm.auto import tqdm  # lazy (pvchat --help imports this module); only when progress is shown

        if stage not in self.bars:
            for other in list(self.bars.values()):
                other.refresh()
            self.bars[stage] = tqdm(total=100, desc=f"{stage:<10}", unit="%", position=self.stages.index(stage),
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


def learn(reference: list[Path], *, name: list[str], person: int | None = None, preset: Annotated[str, OneOf(PRESETS)] = PRESET,
          recipe: Annotated[str, OneOf(train_recipes(), "a YAML path")] | None = None, home: Path | None = None,
          base: Path | None = None, pool: Path | None = None) -> int:
    """Learn a person from one reference video: analyze, synthesize, train two stages, write a concept pack.

    Everything goes under HOME/people/NAME/ (analysis, data, run, pack). Two or three people are
    learned together from one video each ('pvchat learn a.mp4 b.mp4 --name Ann --name Ben'): clips
    of them side by side, one model and one pack (HOME/people/Ann+Ben/), so one question can ask
    about them together ("Where is <Ann> relative to <Ben>?"). Ctrl-C stops at the next
    training step with a checkpoint; running the same command again resumes. 'pvchat forget NAME'
    deletes it all. One learn per name at a time: a second one is refused while the first runs.

    The reference must decode to at least two frames (a still image is refused). Memory and time
    bounds: frames are analysed at 8 per second of video and at most 1280 px on their longer side,
    so size costs memory only up to that (a 4000x3000 reference peaked at 1.26 GB in learn); time
    grows with the length (a 600-frame reference took 407 s on 2 CPU cores). A short clip (10-30 s)
    in which the person's face is clearly visible is all learn needs.

    Args:
        reference: the reference video of the person (one per person learned together).
        name: what questions call the person: <NAME> (letters, digits, '_' or '-'); repeat it for
            people learned together, in the order of the videos.
        person: which person of the reference to learn (0 = seen most; 'pvchat analyze' lists them).
        preset: model preset (small sees what the person wears and does; face learns identity only).
        recipe: training recipe (default: the preset's own).
        home: the workspace (default: $PVCHAT_HOME or ./workspace).
        base: a local Hugging Face video LLM directory to personalise instead of the preset's model
            (families: instructblipvideo, llava_onevision, qwen2_vl, qwen2_5_vl, qwen3_vl, smolvlm); --recipe
            paper suits a pretrained one.
        pool: a directory of other people's images or videos, the negatives and the strangers beside
            the person in two-person clips (default: the offline world's people).
    """
    # lazy, so that `pvchat --help` stays fast: torch, transformers, dlib (the whole pipeline)
    from pvchat.api import DEFAULT_HOME, STAGES, learn as learn_person

    home = DEFAULT_HOME if home is None else home
    cancel = threading.Event()
    bars = _Bars(STAGES)

    def interrupt(signum, frame):  # first Ctrl-C: stop cleanly at the next step; second: at once
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupt) if main_thread else None
    try:
        card = learn_person(reference if len(reference) > 1 else reference[0], name if len(name) > 1 else name[0],
                            home=home, preset=preset, recipe=recipe, person=person, progress=bars, cancel=cancel,
                            base=base, pool=pool)
    finally:
        bars.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    base = card["base"]["size_bytes"]
    who = " and ".join(f"<{n}>" for n in name)
    print(f"learned {who}: {Path(home) / 'people' / '+'.join(name) / 'pack'} ({_mb(card['size_bytes'])}; "
          f"base model {_mb(base)}, {100 * card['size_bytes'] / max(base, 1):.1f}%)")
    question = f"Is <{name[0]}> in this video?" if len(name) == 1 else f"Where is <{name[0]}> relative to <{name[1]}>?"
    print(f"ask: pvchat ask VIDEO \"{question}\" --home {home}")
    return 0
