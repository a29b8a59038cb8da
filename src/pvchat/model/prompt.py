"""The chat template: where the video and the subjects go, and which tokens are supervised.

Layout, as the official trainer builds it (pvchat-official.md §2.6), one subject::

    [INST] <video>×Q [/INST][INST] [<sks>] Is <sks> in the video? [/INST] Yes, <sks> is ...</s>

several subjects in play::

    [INST] <video>×Q [/INST][INST] [PERSON] <A> [/PERSON] [PERSON] <B> [/PERSON] Where is <A> ... [/INST] ...

Q = G general queries + N per subject in play. The subjects "in play" are the ones the
conversation names; they decide both the prefix and which query blocks the Q-former runs
(supp. S4). Earlier turns follow the first ``[/INST]`` as ``[INST] q [/INST] a</s>`` pairs; only the
answer tokens of the last turn (and its ``</s>``) carry labels, everything else is −100.

A tokenizer with ChatML markers (SmolLM2, Qwen: ``<|im_start|>``/``<|im_end|>``) gets its own
template instead, as its ``chat_template`` writes it (a parity test checks the text), with the
video at the head of the first user turn::

    <|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<video>×Q\n[<sks>] Is <sks> here?<|im_end|>\n
    <|im_start|>assistant\nYes, <sks> is ...<|im_end|>

In both, the first two closing markers (``[/INST]`` / ``<|im_end|>``) end the part of the prompt
that names the people in play.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from pvchat.errors import InputError

IGNORE_INDEX = -100
RESERVED = ("[INST]", "[/INST]", "<video>", "[PERSON]", "[/PERSON]", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
CHATML = ("<|im_start|>", "<|im_end|>")
SYSTEM = "You answer questions about the people in a video."
# The name grammar, here only (everything else imports it): a subject name is a letter, then up to 31
# letters, digits, '_' or '-'; a text names a person as <Name>.
_NAME_START, _NAME_CHAR = "[A-Za-z]", r"[A-Za-z0-9_\-]"
NAME_PATTERN = re.compile(rf"^{_NAME_START}{_NAME_CHAR}{{0,31}}\Z")  # \Z: "$" would let a trailing newline in
# a mention: <...> around anything written like a name, an over-long one included, so that it is found and
# refused (unknown person) instead of read as plain text; RESERVED tokens (<s>, <video>) are not mentions
MENTION = re.compile(rf"<({_NAME_START}{_NAME_CHAR}*)>")
# Names whose <name> is a special token of a tokenizer pvchat uses (tiny, Mistral, SmolLM2/StarCoder) or a
# common one: a person called "unk" could be learned but never asked about.
RESERVED_NAMES = frozenset({
    "s", "unk", "pad", "video", "mask", "cls", "sep", "bos", "eos", "image", "audio",
    "repo_name", "reponame", "file_sep", "filename", "gh_stars", "issue_start", "issue_comment", "issue_closed",
    "jupyter_start", "jupyter_text", "jupyter_code", "jupyter_output", "jupyter_script", "empty_output"})


def subject_token(name: str) -> str:
    """``"sks"`` → ``"<sks>"``: the LLM token of a subject."""
    return f"<{name}>"


def names_in(text: str) -> list[str]:
    """The ``<Name>`` mentions of a text, in order, without repeats (reserved tokens left out)."""
    found = [m.group(1) for m in MENTION.finditer(text or "") if subject_token(m.group(1)) not in RESERVED]
    return list(dict.fromkeys(found))


def is_subject_token(token: str) -> bool:
    """``token`` is ``<Name>`` for a name that follows the grammar (reserved names not checked)."""
    return isinstance(token, str) and bool(MENTION.fullmatch(token)) and bool(NAME_PATTERN.match(token[1:-1]))


def validate_name(name: str) -> str:
    """A subject name: 1–32 characters, a letter then letters, digits, ``_`` or ``-``, and not a
    special token's (:data:`RESERVED_NAMES`)."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InputError(
            f"invalid subject name {name!r}: use 1-32 letters, digits, '_' or '-', starting with a letter"
        )
    if name in RESERVED_NAMES or subject_token(name) in RESERVED:
        raise InputError(f"invalid subject name {name!r}: <{name}> is a reserved token; choose another name")
    return name


@dataclass
class EncodedPrompt:
    input_ids: list[int]
    labels: list[int]
    subjects: list[str]  # in play, in order of first mention


class ChatTemplate:
    """Turns (question, answer, history) into token ids and labels for a given set of subjects.

    Args:
        tokenizer: a tokenizer that has ``[INST]``, ``[/INST]``, ``<video>``, ``[PERSON]``,
            ``[/PERSON]`` and every subject token as single special tokens.
        num_general_queries: G.
        num_subject_queries: N.
    """

    def __init__(self, tokenizer, num_general_queries: int, num_subject_queries: int):
        self.tokenizer = tokenizer
        self.G, self.N = num_general_queries, num_subject_queries
        self.style = chat_style(tokenizer)
        self.video_id = self._single_id("<video>")
        self.close_id = self._single_id("[/INST]" if self.style == "inst" else "<|im_end|>")
        self.eos_id = tokenizer.eos_token_id
        if self.style == "chatml" and self.eos_id != self.close_id:
            raise InputError(f"a ChatML tokenizer must end answers with <|im_end|>, its eos is {tokenizer.eos_token!r}")

    def _single_id(self, token: str) -> int:
        ids = self.tokenizer.convert_tokens_to_ids(token)
        if ids is None or ids == self.tokenizer.unk_token_id:
            raise InputError(f"tokenizer has no {token!r} token")
        return ids

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def subjects_in(self, texts: list[str], known: list[str]) -> list[str]:
        """Subjects named as ``<name>`` in ``texts``, in order of first mention; unknown names raise."""
        found: list[tuple[int, str]] = []
        joined = "\n".join(texts)
        for m in MENTION.finditer(joined):
            name = m.group(1)
            if subject_token(name) in RESERVED:
                continue
            if name not in known:
                raise InputError(
                    f"unknown person <{name}>; known: {', '.join('<' + k + '>' for k in known) or 'none (load a concept pack)'}"
                )
            if name not in [n for _, n in found]:
                found.append((m.start(), name))
        return [n for _, n in found]

    @staticmethod
    def check_user_text(text: str) -> None:
        """Users cannot inject control tokens or video placeholders."""
        for tok in RESERVED:
            if tok in text:
                raise InputError(f"{tok!r} is reserved and cannot appear in a question")

    def num_visual_tokens(self, num_subjects: int) -> int:
        return self.G + self.N * num_subjects

    def encode(
        self,
        question: str,
        known_subjects: list[str],
        answer: str | None = None,
        history: list[tuple[str, str]] | None = None,
    ) -> EncodedPrompt:
        """Token ids (and labels when ``answer`` is given) for one sample.

        Args:
            question: the current question, naming subjects as ``<name>``.
            known_subjects: names the model has tokens and query blocks for.
            answer: the target answer (training) or None (generation: the prompt ends after ``[/INST]``).
            history: earlier ``(question, answer)`` turns of the conversation, oldest first.
        """
        history = history or []
        texts = [question] + [t for qa in history for t in qa]
        for t in texts:
            self.check_user_text(t)
        subjects = self.subjects_in([q for q, _ in history] + [question], known_subjects)

        if len(subjects) == 1:
            prefix = f"[{subject_token(subjects[0])}] "
        else:
            prefix = "".join(f"[PERSON] {subject_token(s)} [/PERSON] " for s in subjects)
        if self.style == "chatml":
            return self._encode_chatml(question, history, prefix, subjects, answer)

        ids: list[int] = self._encode("[INST] ")
        ids += [self.video_id] * self.num_visual_tokens(len(subjects))
        ids += self._encode(" [/INST]")
        for i, (q, a) in enumerate(history):
            ids += self._encode(f"[INST] {prefix if i == 0 else ''}{q} [/INST] ") + self._encode(a) + [self.eos_id]
        ids += self._encode(f"[INST] {prefix if not history else ''}{question} [/INST] ")
        labels = [IGNORE_INDEX] * len(ids)
        if answer is not None:
            target = self._encode(answer) + [self.eos_id]
            ids += target
            labels += target
        return EncodedPrompt(ids, labels, subjects)

    def chatml_text(self, question: str, history: list[tuple[str, str]], prefix: str, num_subjects: int) -> str:
        """The ChatML prompt as text, up to the assistant's turn (``<video>`` repeated Q times)."""
        video = "<video>" * self.num_visual_tokens(num_subjects)
        turns = [f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"]
        for i, (q, a) in enumerate(history):
            head = f"{video}\n{prefix}" if i == 0 else ""
            turns.append(f"<|im_start|>user\n{head}{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n")
        head = "" if history else f"{video}\n{prefix}"
        turns.append(f"<|im_start|>user\n{head}{question}<|im_end|>\n<|im_start|>assistant\n")
        return "".join(turns)

    def _encode_chatml(self, question, history, prefix, subjects, answer) -> EncodedPrompt:
        ids = self._encode(self.chatml_text(question, history, prefix, len(subjects)))
        labels = [IGNORE_INDEX] * len(ids)
        if answer is not None:
            target = self._encode(answer) + [self.eos_id]
            ids, labels = ids + target, labels + target
        return EncodedPrompt(ids, labels, subjects)


def chat_style(tokenizer) -> str:
    """``"chatml"`` for a tokenizer with ``<|im_start|>``/``<|im_end|>`` tokens, else ``"inst"``."""
    vocab = tokenizer.get_vocab()
    return "chatml" if all(t in vocab for t in CHATML) else "inst"


def pad_batch(samples: list[EncodedPrompt], pad_id: int, left: bool = False) -> dict[str, torch.Tensor]:
    """Stack encoded prompts: ``input_ids``, ``attention_mask``, ``labels`` (right padding by default;
    left padding for generation)."""
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for b, s in enumerate(samples):
        n = len(s.input_ids)
        sl = slice(width - n, width) if left else slice(0, n)
        ids[b, sl] = torch.tensor(s.input_ids)
        labels[b, sl] = torch.tensor(s.labels)
        mask[b, sl] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
