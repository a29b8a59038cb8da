"""Chat: questions about videos with one or more learned people (the model of ``pvchat chat``,
``pvchat ask`` and the web app).

::

    Chat([name, ...])   base model + every pack's people ─► ask / stream / head_activation (Fig. 7)
                        (packs learned on a user's video LLM, ``learn(..., base=DIR)``: a BaseChat)

Several packs load at once. People learned separately each changed the shared parts of the
model (Q-former, LoRA), so :class:`Chat` keeps each pack's shared tensors and swaps in those of
the pack whose people a question names; the people's own rows and query blocks coexist.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pvchat.errors import InputError
from pvchat.io import read_json
from pvchat.model.backbones import BackboneConfig, load_base
from pvchat.model.prompt import RESERVED
from pvchat.model.pvchat import CONFIG_NAME, WEIGHTS_NAME, PVChat
from pvchat.pack import ConceptPack, add_pack_subjects, apply_shared, base_info, check_fits, load_pack, read_card
from pvchat.train.stages import build_base
from pvchat.video import check_video, read_frames_uniform
from pvchat.workspace import BASE_SEED, DEFAULT_HOME, base_dir, pack_path


@dataclass
class Answer:
    text: str
    frames: np.ndarray  # (T, H, W, 3) uint8: the frames the model saw
    people: list[str]  # the names the question refers to



def _base_for(pack: ConceptPack, home: Path) -> Path:
    """The base a pack was learned on: its recorded path, else ``HOME/base/<preset>`` (rebuilt when missing)."""
    recorded = Path(pack.card["base"]["path"])
    if (recorded / WEIGHTS_NAME).is_file():
        return recorded
    preset = pack.card["config"].get("preset") or pack.card["base"].get("preset")
    if not preset:
        raise InputError(f"{pack.path}: its base model {recorded} is gone and its preset is unknown; pass base=")
    return build_base(base_dir(preset, home), preset, BASE_SEED)


def _pack_paths(packs, home: Path) -> list[Path]:
    specs = [packs] if isinstance(packs, (str, Path)) else list(packs)
    if not specs:
        raise InputError("Chat needs at least one learned person (a name or a concept pack directory)")
    chosen, seen = [], set()
    for spec in specs:  # two names of people learned together lead to their one pack: load it once
        path = pack_path(spec, home)
        if path not in chosen or str(spec) in seen:
            chosen.append(path)
        seen.add(str(spec))
    return chosen


def _load_packs(packs, home: Path) -> list[ConceptPack]:
    """The packs named by ``packs`` (names or directories), each person in one of them only."""
    loaded = [load_pack(p) for p in _pack_paths(packs, home)]
    seen: dict[str, Path | None] = {}
    for pk in loaded:
        for n in pk.names:
            if n in seen:
                raise InputError(f"{n} is in two packs ({seen[n]} and {pk.path}); load one of them")
            seen[n] = pk.path
    return loaded


def _on_user_base(packs, home: Path, base: Path | None) -> bool:
    """Whether a chat is over a user's video LLM (``learn(..., base=DIR)``) rather than a preset's base."""
    if base is not None:
        return (Path(base) / "config.json").is_file() and not (Path(base) / CONFIG_NAME).is_file()
    return "family" in read_card(_pack_paths(packs, home)[0])["base"]


class Chat:
    """Questions about videos, with one or more learned people.

    Packs learned on a user's video LLM (``learn(..., base=DIR)``) give a :class:`BaseChat`.

    Args:
        packs: learned people by name (found in ``HOME/people``) or pack directories.
        home: the workspace.
        base: the base model directory (default: the one the packs were learned on).
        max_new_tokens: longest answer, in tokens.
        device: "cpu", "cuda", ...; default CUDA when available.
    """

    def __new__(cls, packs: list[str], home: Path = DEFAULT_HOME, base: Path | None = None, *args, **kwargs):
        if cls is Chat and _on_user_base(packs, Path(home), base):
            return super().__new__(BaseChat)
        return super().__new__(cls)

    def __init__(self, packs: list[str], home: Path = DEFAULT_HOME, base: Path | None = None,
                 max_new_tokens: int = 64, device: str | None = None):
        home = Path(home)
        loaded = _load_packs(packs, home)
        base = Path(base) if base is not None else _base_for(loaded[0], home)
        info = base_info(base)
        config = read_json(base / CONFIG_NAME)["config"]
        for pk in loaded:
            check_fits(pk, info, config)
        if info["subjects"]:
            raise InputError(f"{base}: a base model has no people, this one has {info['subjects']}")
        self.home, self.base, self.max_new_tokens = home, base, max_new_tokens
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = PVChat.from_pretrained(base)
        for pk in loaded:
            add_pack_subjects(model, pk)
        self.model = model.to(self.device).eval()
        self.packs = loaded
        self.people: list[str] = list(model.subjects)
        self._owner = {n: pk for pk in loaded for n in pk.names}
        self._active: ConceptPack | None = None
        self._features: OrderedDict[tuple, tuple[np.ndarray, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        tok = model.tokenizer
        special = {t.content for t in tok.added_tokens_decoder.values() if t.special}
        self._reserved = sorted(set(RESERVED) | set(tok.all_special_tokens) | special)
        self._max_positions = getattr(model.llm.config, "max_position_embeddings", None)
        self._activate(loaded[0])  # the model is whole from the start: the first pack's shared tensors

    # --------------------------------------------------------------- checks
    def _check_text(self, text: str, what: str = "a question") -> None:
        if not isinstance(text, str):
            raise InputError(f"{what} must be text, got {type(text).__name__}")
        for tok in self._reserved:
            if tok in text:
                raise InputError(f"{tok!r} is reserved and cannot appear in {what}")

    def _people_in(self, question: str, history: list[tuple[str, str]]) -> tuple[list[str], ConceptPack]:
        """Names the conversation refers to, and the pack whose shared tensors answer it."""
        if not question.strip():
            raise InputError("the question is empty")
        for q, a in history:
            self._check_text(q, "the history")
            self._check_text(a, "the history")
        self._check_text(question)
        people = self.model.template.subjects_in([q for q, _ in history] + [question], self.people)
        packs = list(dict.fromkeys(self._owner[n] for n in people))
        if len(packs) > 1:
            groups = " and ".join("/".join(f"<{n}>" for n in people if self._owner[n] is pk) for pk in packs)
            raise InputError(f"{groups} were learned separately (one pack each), so one question cannot ask "
                             f"about them together; learn them together in one pack for that")
        return people, packs[0] if packs else self.packs[0]

    @staticmethod
    def _history(history) -> list[tuple[str, str]]:
        out = []
        for turn in history or []:
            if not isinstance(turn, (tuple, list)) or len(turn) != 2:
                raise InputError(f"history turns are (question, answer) pairs, got {turn!r:.60}")
            out.append((turn[0], turn[1]))
        return out

    # ------------------------------------------------------------- internals
    def _activate(self, pack: ConceptPack) -> None:
        if self._active is not pack:
            apply_shared(self.model, pack)
            self._active = pack
            if any(k.startswith("vision.") for k in pack.shared):
                self._features.clear()  # the pack trained vision blocks: cached features are stale

    def _video(self, video: Path) -> tuple[np.ndarray, torch.Tensor]:
        """(frames (T, H, W, 3) uint8, vision features (1, T, N_v, C_v)) of a video, cached."""
        video = Path(video)
        stat = video.stat() if video.is_file() else None
        key = (str(video.resolve()), stat.st_mtime_ns if stat else None, stat.st_size if stat else None)
        if key not in self._features:
            check_video(video)  # the one rule for what a video is (pvchat.video.check_video)
            frames, pixels = self.model.read_video(video)  # InputError if unreadable
            with torch.no_grad():
                self._features[key] = (frames, self.model.encode_video(pixels.unsqueeze(0).to(self.device)))
            while len(self._features) > 4:
                self._features.popitem(last=False)
        self._features.move_to_end(key)
        return self._features[key]

    def _prompt(self, video: Path, question: str, history) -> tuple[np.ndarray, list[str], torch.Tensor, list]:
        history = self._history(history)
        people, pack = self._people_in(question, history)
        self._activate(pack)
        frames, features = self._video(video)
        enc = self.model.prepare(question, history=history)
        if self._max_positions and len(enc.input_ids) + self.max_new_tokens > self._max_positions:
            raise InputError(f"the conversation is too long ({len(enc.input_ids)} tokens; the model reads "
                             f"{self._max_positions - self.max_new_tokens} before answering); start a new one")
        return frames, people, features, history

    # ------------------------------------------------------------------ API
    def frames(self, video: Path) -> np.ndarray:
        """(T, H, W, 3) uint8: the frames the model reads from ``video`` (as :meth:`ask` and :meth:`stream`)."""
        with self._lock:
            return self._video(video)[0]

    def stream(self, video: Path, question: str, history: list[tuple[str, str]] | None = None) -> Iterator[str]:
        """Yield the answer as it grows, one token at a time (the last value is the whole answer).

        The chat is locked while the generator runs: iterate it to the end (or close it).
        """
        with self._lock:
            _, _, features, history = self._prompt(video, question, history)
            yield from self.model.stream(question, features, history, self.max_new_tokens)

    def ask(self, video: Path, question: str, history: list[tuple[str, str]] | None = None) -> Answer:
        """Answer ``question`` about ``video``; ``history`` holds earlier (question, answer) turns."""
        with self._lock:
            frames, people, features, history = self._prompt(video, question, history)
            text = self.model.generate([question], vision_features=features, histories=[history],
                                       max_new_tokens=self.max_new_tokens)[0]
        return Answer(text=text, frames=frames, people=people)

    def routed_layers(self) -> list[str]:
        """Names of the routed attention modules, in the order the Q-former reports their stats."""
        names = []
        for i, layer in enumerate(self.model.qformer.layers):
            for part, attn in (("self", layer.self_attn), ("cross", layer.cross_attn)):
                if attn is not None and attn.routing != "mha":
                    names.append(f"layer {i} {part}")
        return names

    @torch.no_grad()
    def head_activation(self, video: Path, question: str) -> dict:
        """Fig. 7: per routed layer, each routed head's activation rate with the people's query blocks
        in play (``with``) and masked out (``without``)."""
        with self._lock:
            people, pack = self._people_in(question, [])
            if not people:
                raise InputError(f"name a person in the question, e.g. <{self.people[0]}>")
            self._activate(pack)
            _, features = self._video(video)
            mask = torch.tensor([[n in people for n in self.people]], device=self.device)
            with_ = self.model.visual_tokens(features, mask).stats
            without = self.model.visual_tokens(features, torch.zeros_like(mask)).stats
        return {"layers": self.routed_layers(), "people": people,
                "with": [[round(float(a), 4) for a in s.active_rate] for s in with_],
                "without": [[round(float(a), 4) for a in s.active_rate] for s in without]}


class BaseChat(Chat):
    """:class:`Chat` over a pack learned on a user's video LLM (:mod:`pvchat.model.backbones`).

    One pack at a time (its LoRA and routers are the model's); the base is the one the pack records
    unless ``base`` is given, and must be the same (config hash, family, settings). A history goes
    into the base's own chat template (decoder-only families; InstructBLIP-Video has none).
    """

    def __init__(self, packs: list[str], home: Path = DEFAULT_HOME, base: Path | None = None,
                 max_new_tokens: int = 64, device: str | None = None):
        loaded = _load_packs(packs, Path(home))
        if len(loaded) > 1:
            raise InputError("packs learned on a video LLM base load one at a time; learn the people together "
                             "to ask about them in one question")
        settings = {k: v for k, v in loaded[0].card["config"].items() if k != "family"}
        base = Path(base) if base is not None else Path(loaded[0].card["base"]["path"])
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" else None
        model = load_base(base, BackboneConfig.from_dict(settings), dtype=dtype)
        model.apply_pack(loaded[0])
        self.model = model.to(self.device).eval()
        self.home, self.base, self.max_new_tokens, self.packs = Path(home), base, max_new_tokens, loaded
        self.people = list(model.people)
        self._lock = threading.Lock()

    def frames(self, video: Path) -> np.ndarray:
        check_video(video)
        return read_frames_uniform(video, self.model.settings.num_frames)

    def ask(self, video: Path, question: str, history: list[tuple[str, str]] | None = None) -> Answer:
        history = self._history(history)
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        with self._lock:
            frames = self.frames(video)
            people = self.model.in_play(" ".join([q for q, _ in history] + [question]))
            text = self.model.answer(frames, question, self.max_new_tokens, history=history)
        return Answer(text=text, frames=frames, people=people)

    def stream(self, video: Path, question: str, history: list[tuple[str, str]] | None = None) -> Iterator[str]:
        yield self.ask(video, question, history).text

    def routed_layers(self) -> list[str]:
        return [f"routed attention {i}" for i in range(len(self.model.gates))]

    def head_activation(self, video: Path, question: str) -> dict:
        raise InputError("head activation maps are drawn for the presets' Q-former, not yet for a video LLM base")


def pack_names(packs: list[str] | None) -> list[str]:
    """``--pack A --pack B,C`` → ["A", "B", "C"]."""
    return [s.strip() for p in packs or [] for s in str(p).split(",") if s.strip()]

