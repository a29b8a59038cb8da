"""Tokenizers: a tiny offline one for tests and the demo, and the chat tokens for real ones.

The chat template (pvchat-official.md §2.6) needs three tokens that are never split:
``[INST]`` and ``[/INST]`` (control tokens 3 and 4 in Mistral-7B-Instruct-v0.3's tokenizer) and the
visual placeholder ``<video>``, one per Q-former output token. Subject tokens (``<sks>``) and the
``[PERSON]``/``[/PERSON]`` delimiters are added with the model rows that train them, in
:mod:`pvchat.model.subject_tokens`.

:func:`build_tiny_tokenizer` trains a byte-level BPE (the ``tokenizers`` library) on a small English
corpus kept in this module (people, clothing, colours, actions, positions, yes/no answers, the
topics of the paper's QA templates, supp. Tables 2–6). Byte-level means any text, in any script,
encodes and decodes back unchanged.
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from pvchat.errors import ConfigError
from pvchat.model.prompt import chat_style
from pvchat.model.subject_tokens import ensure_vocab_size

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
CHAT_TOKENS = ("[INST]", "[/INST]", "<video>")
SPECIAL_TOKENS = (BOS, EOS, UNK, PAD, *CHAT_TOKENS)  # ids 0..6 in the tiny tokenizer
_BYTES = 256

# ------------------------------------------------------------------ corpus (data)
_PEOPLE = ["the woman", "the man", "the girl", "the boy", "the old man", "the young woman", "the person",
           "a tall man", "a short woman", "she", "he", "they", "the child", "the lady", "the guy", "sks"]
_CLOTHING = ["a red shirt", "a blue jacket", "a black coat", "a white dress", "green trousers", "a yellow hat",
             "grey jeans", "a striped sweater", "brown leather shoes", "a pink scarf", "round glasses",
             "a dark suit", "an orange hoodie", "a purple skirt", "a denim jacket", "a checked shirt",
             "white sneakers", "a silver watch", "a baseball cap", "a long beige coat"]
_ACTIONS = ["walking", "running", "sitting on a chair", "standing still", "waving a hand", "talking on the phone",
            "reading a book", "drinking coffee", "dancing", "cooking dinner", "laughing", "looking at the camera",
            "opening a door", "riding a bicycle", "typing on a laptop", "eating an apple", "playing the guitar",
            "carrying a bag", "smiling", "nodding", "turning around", "holding an umbrella", "writing a note",
            "jumping", "sleeping on the sofa", "crossing the road"]
_POSITIONS = ["on the left", "on the right", "in the middle of the frame", "in the background",
              "in the foreground", "next to the window", "near the door", "behind the table",
              "in front of the car", "at the top of the stairs", "beside the tree", "under the lamp",
              "to the left of the other person", "to the right of the other person"]
_SCENES = ["in a kitchen", "in a park", "on a busy street", "in an office", "at the beach", "in a classroom",
           "in a living room", "in a garden", "in a shop", "at a train station", "on a stage", "in the rain"]
_HAIR = ["short black hair", "long blond hair", "curly brown hair", "grey hair", "a red ponytail", "no hair",
         "a beard", "a moustache"]
_QA = [
    "Is the person in this video? Yes.", "Is he in the video? No.", "Can you see her in the clip? Yes, I can.",
    "Does sks appear in this video? No, sks does not appear in this video.",
    "Is sks in the video? Yes, sks is in the video.", "What is she wearing? She is wearing a coat.",
    "What is he doing? He is walking.", "Where is the woman? She is on the left.",
    "Who is on the right? The man is on the right.", "How many people are there? There are 2 people.",
    "What colour is his shirt? It is blue.", "What color are her shoes? They are white.",
    "Describe the video. A woman walks into a room and sits down.",
    "Describe what the man is doing in detail.", "I don't know.", "I am not sure, but I think so.",
    "Yes, that is correct!", "No, that's wrong.", "Please answer the question: yes or no?",
    "The video shows two people talking.", "The clip is 10 seconds long, with 8 frames.",
    "At 0:05 she turns (quickly) and smiles; then she leaves.", "He said: \"Hello, how are you?\"",
    "Their names are Anna, Ben, Chloe & David - friends since 2019.", "Q: Is it raining? A: Yes.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 50% #1 @home $5.",
]


def tiny_corpus() -> list[str]:
    """A few hundred English sentences, built deterministically from the word lists above."""
    lines = list(_QA)
    for i in range(120):
        p, c = _PEOPLE[i % len(_PEOPLE)], _CLOTHING[(i * 7) % len(_CLOTHING)]
        a, s = _ACTIONS[(i * 5) % len(_ACTIONS)], _SCENES[(i * 3) % len(_SCENES)]
        pos, hair = _POSITIONS[(i * 11) % len(_POSITIONS)], _HAIR[i % len(_HAIR)]
        be = "are" if p == "they" else "is"
        lines.append(f"{p.capitalize()} {be} wearing {c} and {be} {a} {s}.")
        lines.append(f"{p.capitalize()} {be} {pos}, {a}.")
        if i % 2 == 0:
            lines.append(f"Is {p} {a}? {'Yes' if i % 4 == 0 else 'No'}, {p} {be} {'' if i % 4 == 0 else 'not '}{a}.")
        if i % 3 == 0:
            lines.append(f"What is {p} wearing? {p.capitalize()} {be} wearing {c}, and has {hair}.")
        if i % 4 == 1:
            lines.append(f"Where is {p}? {p.capitalize()} {be} {pos}.")
    return lines


def build_tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained offline on :func:`tiny_corpus` (deterministic).

    Ids 0–6 are ``<s> </s> <unk> <pad> [INST] [/INST] <video>``; encoding with
    ``add_special_tokens=True`` prepends ``<s>`` as Mistral's tokenizer does.

    Args:
        vocab_size: total size including the 256 byte symbols and the 7 special tokens.
    """
    minimum = _BYTES + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ConfigError(f"tiny tokenizer vocab_size must be ≥ {minimum} (256 bytes + 7 special tokens); got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=list(CHAT_TOKENS),
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )


def _is_single_token(tokenizer: PreTrainedTokenizerBase, token: str) -> bool:
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    return len(ids) == 1 and ids[0] != tokenizer.unk_token_id and tokenizer.convert_ids_to_tokens(ids[0]) == token


def ensure_chat_tokens(tokenizer: PreTrainedTokenizerBase, model=None) -> dict[str, int]:
    """Make ``[INST]``, ``[/INST]`` and ``<video>`` single special tokens; return their ids.

    Mistral v0.3 already has the first two; whatever is missing is added. A tokenizer without a pad
    token gets ``<unk>`` (id 0 in Mistral, the official padding id, §2.6) or else its eos token.
    When ``model`` is given and the tokenizer now has more tokens than the model has embedding
    rows, the model's embeddings are resized; the new rows are frozen like every original row
    (``<video>`` rows are overwritten by visual tokens anyway). Call this before
    :func:`pvchat.model.subject_tokens.add_subject_tokens`.

    Args:
        tokenizer: a Hugging Face tokenizer (modified in place).
        model: optional causal LM whose vocabulary must cover the tokenizer.
    """
    wanted = CHAT_TOKENS if chat_style(tokenizer) == "inst" else ("<video>",)  # ChatML has its own markers
    missing = [t for t in wanted if not _is_single_token(tokenizer, t)]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    if model is not None:
        ensure_vocab_size(model, len(tokenizer))
    return {t: tokenizer.convert_tokens_to_ids(t) for t in wanted}
