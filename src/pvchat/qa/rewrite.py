"""Rewrite a generic caption so that it names the subject by its token.

Paper §3.2: "we refine these responses using ChatGPT-4o, converting generic human references into
subject-specific references"; supp. Fig. 6 (second prompt) gives the instruction. Backends
(registry :data:`REWRITERS`, built by :func:`make_rewriter`):

- ``rules``: regular expressions for "the woman", "this man", "she", "his", "her", "they" …, with
  possessives ("her coat" → "<Anna>'s coat") and verb agreement ("they are" → "<Anna> is").
  Indefinite words ("a man in a blue jacket", "another person") are other people and stay.
- ``llm``: the paper's prompt through a chat callable or an OpenAI-compatible endpoint, with a
  bounded number of attempts, an output-length bound, and the rules rewrite as the fallback.
"""

from __future__ import annotations

import re
from typing import Callable, Protocol

from pvchat.errors import ConfigError, InputError, unknown_choice
from pvchat.model.prompt import is_subject_token
from pvchat.qa.endpoint import ChatEndpoint

# supp. Fig. 6, "Caption Replace by ChatGPT-4o"
REWRITE_SYSTEM = "You are a helpful assistant."
REWRITE_INSTRUCTION = ("Help me replace all the descriptions of people in the following paragraph, such as human, "
                       "he, she, etc., with <person>. Just return the modified one:")
PERSON_SLOT = "<person>"


class Rewriter(Protocol):
    """Anything with ``rewrite(text, token, position=None) -> str``.

    ``position`` (``left``/``centre``/``right``) says where the subject is, so that "the man on the
    right" is not taken for a subject on the left.
    """

    def rewrite(self, text: str, token: str, position: str | None = None) -> str: ...


_NOUNS = ("woman|man|person|human|individual|girl|boy|lady|gentleman|guy|protagonist|subject|character|"
          "figure|adult|teenager|teen|female|male|kid|child")
_ADJS = ("young|younger|old|older|elderly|aged|middle-aged|tall|short|slim|blond|blonde|bald|bearded|"
         "dark-haired|fair-haired|grey-haired|gray-haired|smiling|main|same|first|little|single|lone|elder")
_W = r"(?<![<\w])"  # not inside a token such as <He> or a longer word
_E = r"(?![>\w'’])"  # … and not a contraction such as she's (handled separately)
_E_NP = r"(?![>\w])"
_APOS = "['’]"
_DEF_NP = re.compile(
    rf"{_W}(?:the|this|that)\s+(?:(?:{_ADJS})[\s,]+){{0,3}}(?:{_NOUNS}){_E_NP}(?P<poss>{_APOS}s\b)?"
    rf"(?P<where>\s+(?:in|from|on)\s+(?:the|this)\s+(?:video|clip|footage|recording|frame|scene|image|sequence|picture)\b)?"
    r"(?P<side>\s+(?:on\s+the\s+(?:far\s+)?(?P<lr>left|right)|in\s+the\s+(?:centre|center|middle))\b)?",
    re.IGNORECASE,
)
_INDEF_START = re.compile(rf"^(\s*)(?:a|an)\s+(?:(?:{_ADJS})[\s,]+){{0,3}}(?:{_NOUNS}){_E_NP}", re.IGNORECASE)
_CONTRACTION = re.compile(rf"{_W}(she|he|they){_APOS}(s|re|ve|d|ll){_E}", re.IGNORECASE)
_ADVERB = r"(?:(?!(?:reply|apply|supply|rely|fly)\b)\w{2,}ly|also|still|just|then|now|always|never|often|even|again|already)"
_THEY_VERB = re.compile(rf"{_W}they\s+((?:{_ADVERB}\s+)*)([a-z]+(?:['’]t)?)\b(?!['’])", re.IGNORECASE)
_SUBJ = re.compile(rf"{_W}(?:she|he|they){_E}", re.IGNORECASE)
_OBJ = re.compile(rf"{_W}(?:him|them){_E}", re.IGNORECASE)
_POSS = re.compile(rf"{_W}(?:his|their|hers|theirs){_E}", re.IGNORECASE)
_HER = re.compile(rf"{_W}her{_E}(?P<rest>\s*(?P<next>[\w<][\w'’>-]*)?)", re.IGNORECASE)
_GROUP = re.compile(r"\b(?:each other|one another|together|both|everyone)\b", re.IGNORECASE)
_SENTENCES = re.compile(r"(?<=[.!?])\s+")

_AUX = {"are": "is", "were": "was", "have": "has", "do": "does", "aren't": "isn't", "weren't": "wasn't",
        "haven't": "hasn't", "don't": "doesn't", "go": "goes"}
_KEEP = {"can", "could", "will", "would", "shall", "should", "may", "might", "must", "can't", "cannot",
         "couldn't", "won't", "wouldn't", "shouldn't", "mustn't", "did", "didn't", "had", "hadn't",
         # common irregular past tenses (regular ones end in -ed)
         "sat", "stood", "wore", "held", "went", "ran", "took", "saw", "came", "got", "made", "put", "left",
         "gave", "began", "brought", "caught", "felt", "found", "kept", "knew", "lay", "led", "lost", "met",
         "paid", "said", "sang", "sent", "set", "shook", "spoke", "threw", "told", "thought", "won", "wrote",
         "drank", "ate", "rode", "swam", "hung", "fell", "rose", "hit", "cut", "let", "read"}
# words after "her" that make it an object pronoun ("gives her a book", "looks at her."), not a possessive
_AFTER_OBJECT = set(
    "to in on at with and or but as from into onto up down out off over back away again the a an that this these "
    "those while when because so for by about around through across toward towards is was are were who which "
    "there here then now too very some something nothing anything everything herself if than before after "
    "until since though although during behind near beside between".split()
)


def _third_person(verb: str) -> str:
    low = verb.lower().replace("’", "'")
    if low in _AUX:
        return _AUX[low]
    if low in _KEEP or not low.isalpha() or low.endswith(("ed", "ing")):
        return verb
    if re.search(r"(?:s|sh|ch|x|z|o)$", low):
        return verb + "es"
    if re.search(r"[^aeiou]y$", low):
        return verb[:-1] + "ies"
    return verb + "s"


class RulesRewriter:
    """Generic person words → the subject token (``rules`` backend).

    Args:
        pronouns: also replace pronouns (he/she/they, him/her/them, his/her/their).
        leading_indefinite: replace an indefinite person at the very start of the text
            ("A woman is …" → "<Anna> is …"), the usual first mention in a caption.
    """

    def __init__(self, pronouns: bool = True, leading_indefinite: bool = True):
        self.pronouns, self.leading_indefinite = pronouns, leading_indefinite

    def rewrite(self, text: str, token: str, position: str | None = None) -> str:
        check_token(token)
        out = []
        for k, sentence in enumerate(_SENTENCES.split(text.strip())):
            out.append(self._sentence(sentence, token, first=k == 0, position=position))
        return " ".join(out)

    def _sentence(self, s: str, tok: str, first: bool, position: str | None = None) -> str:
        def noun_phrase(m: re.Match) -> str:
            if m.group("side") and position is not None:
                side = (m.group("lr") or "centre").lower()
                if side != position:  # "the man on the right" is someone else
                    return m.group(0)
            return tok + ("'s" if m.group("poss") else "") + (m.group("side") or "" if position is None else "")

        if first and self.leading_indefinite:
            s = _INDEF_START.sub(lambda m: m.group(1) + tok, s, count=1)
        s = _DEF_NP.sub(noun_phrase, s)
        if not self.pronouns:
            return s
        group = bool(_GROUP.search(s))
        s = _CONTRACTION.sub(lambda m: _contraction(m, tok, group), s)
        if not group:
            s = _THEY_VERB.sub(lambda m: f"{tok} {m.group(1)}{_third_person(m.group(2))}", s)
            s = _POSS.sub(tok + "'s", s)
            s = _OBJ.sub(tok, s)
            s = _SUBJ.sub(tok, s)
        else:  # "they … each other": a group, not the subject; only the singular pronouns change
            s = re.sub(rf"{_W}(?:his|hers){_E}", tok + "'s", s, flags=re.IGNORECASE)
            s = re.sub(rf"{_W}him{_E}", tok, s, flags=re.IGNORECASE)
            s = re.sub(rf"{_W}(?:she|he){_E}", tok, s, flags=re.IGNORECASE)
        return _HER.sub(lambda m: _her(m, tok), s)


def _contraction(m: re.Match, tok: str, group: bool) -> str:
    pron, tail = m.group(1).lower(), m.group(2).lower()
    if pron == "they" and group:
        return m.group(0)
    return tok + {"s": "'s", "re": " is", "ve": " has", "d": "'d", "ll": " will"}[tail]


def _her(m: re.Match, tok: str) -> str:
    nxt = (m.group("next") or "").lower()
    possessive = bool(nxt) and nxt not in _AFTER_OBJECT and not nxt.endswith("ly") and not nxt.startswith("<")
    return (tok + "'s" if possessive else tok) + m.group("rest")


def check_token(token: str) -> str:
    """A subject token looks like ``<Name>``."""
    if not is_subject_token(token):
        raise InputError(f"invalid subject token {token!r}: expected <Name>")
    return token


def fill_person_slot(text: str, token: str) -> str:
    """``<person>`` (any case; "the <person>" included) → ``token``."""
    text = re.sub(r"\b(?:the|The)\s+<person>", PERSON_SLOT, text)
    return re.sub(r"<person>", token, text, flags=re.IGNORECASE)


class LLMRewriter:
    """The paper's rewrite prompt (supp. Fig. 6) through a chat model (``llm`` backend).

    Args:
        chat: ``chat(messages) -> str`` (OpenAI message format), e.g. ``ChatEndpoint(...).chat``.
        attempts: how many times to ask before falling back (the official script tries 3 times).
        max_growth: reject replies longer than ``max_growth × len(text) + 40`` characters.
        fallback: ``rules`` (rewrite with :class:`RulesRewriter`), ``keep`` (the unmodified text,
            as the official script does) or ``raise``.
    """

    def __init__(self, chat: Callable[[list[dict]], str], attempts: int = 3, max_growth: float = 2.0,
                 fallback: str = "rules"):
        if fallback not in ("rules", "keep", "raise"):
            raise unknown_choice("rewrite fallback", fallback, ("rules", "keep", "raise"))
        if attempts < 1:
            raise ConfigError(f"rewrite attempts must be >= 1, got {attempts}")
        self.chat, self.attempts, self.max_growth, self.fallback = chat, attempts, max_growth, fallback
        self.fallbacks = 0  # how often the fallback was used

    @classmethod
    def from_endpoint(cls, base_url: str, model: str, **kwargs) -> "LLMRewriter":
        """Through an OpenAI-compatible endpoint (endpoint settings: ``timeout``, ``retries`` …)."""
        own = {k: kwargs.pop(k) for k in ("attempts", "max_growth", "fallback") if k in kwargs}
        return cls(ChatEndpoint(base_url=base_url, model=model, **kwargs).chat, **own)

    @staticmethod
    def messages(text: str) -> list[dict]:
        return [{"role": "system", "content": REWRITE_SYSTEM},
                {"role": "user", "content": f"{REWRITE_INSTRUCTION}\n\n{text}"}]

    def _valid(self, reply: str, text: str) -> bool:
        reply = reply.strip()
        return bool(reply) and PERSON_SLOT in reply.lower() and len(reply) <= self.max_growth * len(text) + 40

    def rewrite(self, text: str, token: str, position: str | None = None) -> str:
        check_token(token)
        problem = "no <person> in the reply"
        for _ in range(self.attempts):
            try:
                reply = self.chat(self.messages(text))
            except InputError as e:
                problem = str(e)
                continue
            reply = str(reply).strip().strip('"“”').strip()
            if self._valid(reply, text):
                return fill_person_slot(reply, token)
        self.fallbacks += 1
        if self.fallback == "raise":
            raise InputError(f"the rewrite model gave no usable answer in {self.attempts} attempts: {problem}")
        return RulesRewriter().rewrite(text, token, position) if self.fallback == "rules" else text


def _llm(chat: Callable[[list[dict]], str] | None = None, base_url: str | None = None, model: str | None = None,
         **kwargs) -> LLMRewriter:
    if chat is not None:
        return LLMRewriter(chat, **kwargs)
    if base_url is None or model is None:
        raise ConfigError("the llm rewriter needs chat= (a callable) or base_url= and model=")
    return LLMRewriter.from_endpoint(base_url, model, **kwargs)


REWRITERS: dict[str, Callable[..., Rewriter]] = {"rules": RulesRewriter, "llm": _llm}


def make_rewriter(name: str, **kwargs) -> Rewriter:
    """Build a rewriter by registry name (``rules``, ``llm``)."""
    if name not in REWRITERS:
        raise unknown_choice("rewriter", name, REWRITERS)
    return REWRITERS[name](**kwargs)
