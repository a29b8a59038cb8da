"""QA pairs: the paper's templates (supp. Tables 2-6), make_qa for 1-3 people, captioners, rewrite."""

from __future__ import annotations

import itertools
import json
import random
import re

import numpy as np
import pytest

from pvchat.errors import ConfigError, InputError
from pvchat.qa import (
    ClipFacts,
    PersonFacts,
    PersonMeasurements,
    QARecipe,
    clip_from_dict,
    clip_to_dict,
    get_recipe,
    make_captioner,
    make_qa,
    make_rewriter,
    qa_for_clips,
    qa_from_record,
)
from pvchat.qa.captioners import CaptionRequest, OpenAICaptioner, VLMCaptioner, build_prompt, parse_answer
from pvchat.qa.describe import describe
from pvchat.qa.endpoint import ChatEndpoint
from pvchat.qa.facts import Relation
from pvchat.qa.generate import existence_pairs
from pvchat.qa.measure import colour_name, facts_from_measurements, movement_words
from pvchat.qa.rewrite import REWRITE_INSTRUCTION, LLMRewriter, RulesRewriter
from pvchat.qa.templates import descriptive_questions, existence_table, fill, placeholders, questions_of
from pvchat.qa.worldfacts import facts_from_world_record

# ------------------------------------------------------------------ an independent reading of answers

_NEG = re.compile(r"\b(?:not|no|never|neither|nor|none|cannot|absent|nowhere|missing)\b|n't\b", re.IGNORECASE)
_CLAUSE = re.compile(r",?\s*\b(?:but|while|though|although|however|whereas)\b|;|(?<=\.)\s+", re.IGNORECASE)
_TOKEN = re.compile(r"<[A-Za-z][A-Za-z0-9_\-]*>")


def claims(answer: str) -> dict[str, bool]:
    """token → what the answer says about its presence (a clause with a negation says absent)."""
    out = {}
    for clause in _CLAUSE.split(answer):
        for tok in _TOKEN.findall(clause or ""):
            out[tok] = not _NEG.search(clause)
    return out


# ------------------------------------------------------------------ templates


def test_template_counts():
    t1, t2, t3 = existence_table(1), existence_table(2), existence_table(3)
    assert len(t1.questions) == 25 and {k: len(v) for k, v in t1.answers.items()} == {"present": 25, "absent": 25}
    assert len(t2.questions) == 25
    assert {k: len(v) for k, v in t2.answers.items()} == {"all": 25, "first_only": 25, "none": 25}
    assert dict(t2.paper_rows) == {"questions": 25, "all": 25, "first_only": 15, "none": 15}
    assert {k: len(v) for k, v in t3.answers.items()} == {"all": 25, "first_two": 25, "first_only": 25, "none": 25}
    assert len(descriptive_questions(include_duplicates=True)) == 16
    assert [len(questions_of(t)) for t in ("action", "appearance", "location")] == [5, 5, 5]
    for t in (t1, t2, t3):  # no repeats within a set
        assert len(set(t.questions)) == 25 and all(len(set(v)) == 25 for v in t.answers.values())


def test_paper_wording_exact():
    t1, t2 = existence_table(1), existence_table(2)
    assert t1.questions[0] == "Is there any trace of <sks> in this footage?"
    assert t1.answers["present"][0] == "Yes, <sks> is in this video."
    assert t1.questions[11] == "Can you confirm <sks>'s presence?"
    assert t1.answers["present"][24] == "<sks> is clearly visible."
    assert t1.answers["absent"][10] == "I've checked, <sks> is not present."
    assert t1.answers["absent"][24] == "There is no <sks> here."
    assert t2.questions[2] == "Do <sks1> or <sks2> show up anywhere in this recording?"
    assert t2.answers["all"][15] == "Both figures, <sks1> and <sks2>, are visible."
    assert t2.answers["first_only"][0] == "I can confirm that <sks1> appears, but <sks2> is not present."
    assert t2.answers["none"][0] == "Neither <sks1> nor <sks2> appear in this video."
    assert t2.answers["first_only"][14] == "The clip features <sks1>, but there's no sign of <sks2>."
    assert t2.answers["none"][14] == "The video does not contain <sks1> or <sks2>."
    rows = {q.index: q for q in descriptive_questions(include_duplicates=True)}
    assert rows[5].question == "Can you describe <sks>'s behavior in this sequence?" and rows[5].type == "action"
    assert rows[8].question == "What color and style of clothing is <sks> dressed in?"
    assert rows[12].question == rows[8].question and 12 not in {q.index for q in descriptive_questions()}
    assert rows[13].question == "Can you describe <sks>'s location relative to others?"
    assert rows[15].question == "How does <sks>'s position change throughout the video?"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_every_existence_answer_says_what_its_set_means(n):
    table = existence_table(n)
    slots = ["<sks>"] if n == 1 else [f"<sks{k}>" for k in range(1, n + 1)]
    present_count = {"present": 1, "absent": 0, "all": n, "none": 0, "first_only": 1, "first_two": 2}
    for q in table.questions:
        assert sorted(set(placeholders(q))) == sorted(slots)
    for key, answers in table.answers.items():
        k = present_count[key]
        for a in answers:
            assert sorted(set(placeholders(a))) == sorted(slots), a
            said = claims(a)
            assert said == {s: i < k for i, s in enumerate(slots)}, (key, a, said)


def test_fill_and_missing_token():
    assert fill("Can you see <sks1> or <sks2>?", ["<A>", "<B>"]) == "Can you see <A> or <B>?"
    assert fill("Is <sks> here?", ["<A>"]) == "Is <A> here?"
    with pytest.raises(ConfigError):
        fill("<sks1> and <sks2>", ["<A>"])
    with pytest.raises(ConfigError):
        existence_table(4)


# ------------------------------------------------------------------ make_qa


def _clip() -> ClipFacts:
    return ClipFacts(
        people=(
            PersonFacts("Anna", gender="female", age="young", position="left", action="waving a hand",
                        clothing="a red coat", appearance="long black hair"),
            PersonFacts("Ben", present=False),
            PersonFacts("Cara", gender="female", position="right", depth="front", action="reading a book",
                        clothing="a green dress"),
            PersonFacts(None, gender="male", position="centre", depth="behind", action="walking",
                        clothing="a blue jacket"),
        ),
        scene="in a park",
        clip_id="c1",
    )


PRESENT = {"Anna": True, "Ben": False, "Cara": True, "Dan": False}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_make_qa_mixed_presence_is_correct(n):
    clip = _clip()
    recipe = QARecipe(existence=6, existence_each=2, appearance=2, action=2, location=3)
    for subjects in itertools.permutations(PRESENT, n):
        pairs = make_qa(clip, list(subjects), stage=2, rng=7, recipe=recipe)
        num_present = sum(PRESENT[s] for s in subjects)
        assert len(pairs) == recipe.per_clip(2, n, num_present)
        for p in pairs:
            if p.type == "existence":
                assert p.presence == tuple(PRESENT[s] for s in p.subjects)
                assert p.label == any(p.presence)
                assert claims(p.answer) == {f"<{s}>": PRESENT[s] for s in p.subjects}, p
                assert set(_TOKEN.findall(p.question)) == {f"<{s}>" for s in p.subjects}
            else:
                (s,) = p.subjects
                assert PRESENT[s], f"question about absent {s}: {p}"
                assert p.label is None and f"<{s}>" in p.question and f"<{s}>" in p.answer
        joint = [p for p in pairs if p.type == "existence" and len(p.subjects) == n]
        assert len(joint) == recipe.existence and all(p.subjects == subjects for p in joint)


def test_two_people_one_present_names_the_right_one():
    clip = _clip()
    for subjects in (["Anna", "Ben"], ["Ben", "Anna"]):
        pairs = existence_pairs(subjects, [clip.is_present(s) for s in subjects], 25, random.Random(0), "index")
        for p in pairs:
            assert p.question.index(f"<{subjects[0]}>") < p.question.index(f"<{subjects[1]}>")
            first = _TOKEN.findall(p.answer)[0]
            assert first == "<Anna>", p.answer  # the present one is named first, as in Table 5
            assert claims(p.answer) == {"<Anna>": True, "<Ben>": False}


def test_descriptive_answers_follow_the_facts():
    clip = _clip()
    pairs = make_qa(clip, ["Anna", "Cara"], stage=2, rng=3, recipe=QARecipe(existence=0, appearance=5, action=5,
                                                                          location=5))
    by = {(p.type, p.subjects[0]): [] for p in pairs}
    for p in pairs:
        by[(p.type, p.subjects[0])].append(p.answer)
    assert all("red coat" in a for a in by[("appearance", "Anna")])
    assert all("green dress" in a and "red coat" not in a for a in by[("appearance", "Cara")])
    assert all("waving a hand in a park" in a for a in by[("action", "Anna")])
    loc = " ".join(by[("location", "Anna")])
    assert "left" in loc and "<Cara>" in loc and "a man in a blue jacket" in loc
    assert not re.search(r"\b(she|her|the woman|the lady)\b", " ".join(a for v in by.values() for a in v), re.I)


def test_relations_are_grouped_per_person():
    clip = ClipFacts(people=(
        PersonFacts("Anna", gender="female", position="left", depth="front",
                    relations=(Relation("in front of", 1), Relation("left of", 1), Relation("left of", 2))),
        PersonFacts("Ben", gender="male", position="centre", depth="behind"),
        PersonFacts(None, gender="female", position="right", clothing="a red coat, with a hat"),
    ))
    text = describe("location", clip, 0, {"Anna": "<Anna>", "Ben": "<Ben>"}, random.Random(0), row=11)
    assert "in front of and to the left of <Ben>, and to the left of a woman in a red coat." in text


def test_stage1_types_and_negative_clip():
    clip = _clip()
    pairs = make_qa(clip, ["Anna"], stage=1, rng=0)
    assert {p.type for p in pairs} == {"existence", "appearance"}
    assert len(pairs) == 15 + 5
    negative = make_qa(clip, ["Ben"], stage=2, rng=0)
    assert len(negative) == 15 and all(p.type == "existence" and p.label is False for p in negative)
    with pytest.raises(ConfigError):
        make_qa(clip, ["Anna"], stage=3)


def test_deterministic_from_seed_and_roundtrip():
    clip = _clip()
    a = make_qa(clip, ["Anna", "Ben"], rng=11, recipe="demo")
    b = make_qa(clip, ["Anna", "Ben"], rng=random.Random(11), recipe="demo")
    c = make_qa(clip, ["Anna", "Ben"], rng=12, recipe="demo")
    assert a == b and a != c
    assert [qa_from_record(json.loads(json.dumps(p.to_dict()))) for p in a] == a
    assert all(p.to_dict()["is_special"] == (p.type == "existence") for p in a)
    assert clip_from_dict(json.loads(json.dumps(clip_to_dict(clip)))) == clip


def test_pairs_fit_the_training_manifest():
    from pvchat.data import ClipRecord

    pairs = make_qa(_clip(), ["Anna", "Ben"], rng=0, recipe="tiny")
    rec = ClipRecord.from_dict({"clip": "c1.mp4", "people": ["Anna"], "qa": [p.to_manifest() for p in pairs]})
    assert [(q.type, q.question, q.answer, q.label) for q in rec.qa] == \
        [(p.type, p.question, p.answer, p.label) for p in pairs]


def test_qa_for_clips_paper_scale_counts_and_order_independence():
    pos = [ClipFacts(people=(PersonFacts("Anna", gender="female", position="centre", action="walking",
                                         clothing=f"a coat number {k}"),), clip_id=f"pos{k}") for k in range(16)]
    neg = [ClipFacts(people=(PersonFacts(None, gender="male", clothing="a suit", action="sitting"),),
                     clip_id=f"neg{k}") for k in range(65)]
    sets = qa_for_clips(pos + neg, ["Anna"], stage=2, seed=4)
    assert sum(map(len, sets)) == 1455 and len(sets) == 81  # the paper's per-subject scale
    assert all(p.label is False for s in sets[16:] for p in s)
    again = qa_for_clips(list(reversed(pos + neg)), ["Anna"], stage=2, seed=4)
    assert again[::-1] == sets


def test_paper_scale_recipe():
    paper = get_recipe("paper")
    assert paper.total(positives=16, negatives=65) == 1455  # paper §4.1 / pvchat-official.md §5.4
    assert round(1455 / 81) == 18
    assert make_qa(_clip(), ["Anna"], recipe="tiny", existence=3, location=0).__len__() == 3 + 1 + 1


def test_pairing_index_keeps_table_rows():
    pairs = existence_pairs(["Anna"], [True], 25, random.Random(0), "index")
    t = existence_table(1)
    for p in pairs:
        q = t.questions.index(p.question.replace("<Anna>", "<sks>"))
        assert p.answer == t.answers["present"][q].replace("<sks>", "<Anna>")


def test_bad_inputs_raise_user_errors():
    clip = _clip()
    with pytest.raises(InputError):
        make_qa(clip, ["Anna", "Ben", "Cara", "Dan"])
    with pytest.raises(InputError):
        make_qa(clip, ["not a name!"])
    with pytest.raises(InputError):
        make_qa(clip, ["Anna", "Anna"])
    with pytest.raises(ConfigError, match="choose one of: facts, openai, rules, vlm"):
        make_qa(clip, ["Anna"], captioner="nope")
    with pytest.raises(ConfigError, match="llm, rules"):
        make_rewriter("nope")
    with pytest.raises(ConfigError, match="demo, paper, tiny"):
        get_recipe("huge")
    with pytest.raises(ConfigError):
        make_qa(clip, ["Anna"], apples=3)
    with pytest.raises(ConfigError):
        QARecipe(existence=-1)
    with pytest.raises(InputError):
        PersonFacts("Anna", position="upstairs")
    with pytest.raises(InputError):
        ClipFacts(people=(PersonFacts("Anna"), PersonFacts("Anna")))
    with pytest.raises(InputError, match="no clothing"):
        make_qa(ClipFacts(people=(PersonFacts("Anna"),)), ["Anna"], stage=1)
    partial = make_qa(ClipFacts(people=(PersonFacts("Anna", action="waving"),)), ["Anna"], on_missing="skip")
    assert [p.type for p in partial].count("action") == 5 and [p.type for p in partial].count("appearance") == 0
    with pytest.raises(ConfigError):
        make_qa(clip, ["Anna"], on_missing="ignore")


# ------------------------------------------------------------------ rewrite


@pytest.mark.parametrize("text,expected", [
    ("She is wearing a red coat.", "<Anna> is wearing a red coat."),
    ("The woman is holding her red bag.", "<Anna> is holding <Anna>'s red bag."),
    ("The elderly man's hat is brown.", "<Anna>'s hat is brown."),
    ("They are standing to the left of a man in a blue jacket.",
     "<Anna> is standing to the left of a man in a blue jacket."),
    ("He waves and they also smile at the camera.", "<Anna> waves and <Anna> also smiles at the camera."),
    ("No one else appears next to her.", "No one else appears next to <Anna>."),
    ("The person in the video is raising his hand.", "<Anna> is raising <Anna>'s hand."),
    ("A woman in a red coat walks in. Another person stands nearby.",
     "<Anna> in a red coat walks in. Another person stands nearby."),
    ("She's smiling; they aren't moving.", "<Anna>'s smiling; <Anna> isn't moving."),
    ("They are dressed all in black, with their bag.", "<Anna> is dressed all in black, with <Anna>'s bag."),
    ("They walked in, then they sat down and they watch TV.", "<Anna> walked in, then <Anna> sat down and <Anna> watches TV."),
])
def test_rules_rewrite(text, expected):
    assert RulesRewriter().rewrite(text, "<Anna>") == expected


def test_rules_rewrite_leaves_unrelated_text():
    r = RulesRewriter()
    for text in ("A red car is parked near a tree.", "The other person is talking.",
                 "The dog runs across the lawn.", "<He> is here.", "Thermal mugs are on the shelf."):
        assert r.rewrite(text, "<Anna>") == text
    assert r.rewrite("They talk to each other while she smiles.", "<Anna>") == \
        "They talk to each other while <Anna> smiles."
    with pytest.raises(InputError):
        r.rewrite("She waves.", "Anna")


def test_rules_rewrite_uses_the_subject_position():
    text = "The person on the left is wearing a red coat, while the man on the right wears a blue shirt."
    assert RulesRewriter().rewrite(text, "<Anna>", position="left") == \
        "<Anna> is wearing a red coat, while the man on the right wears a blue shirt."
    assert RulesRewriter().rewrite(text, "<Ben>", position="right") == \
        "The person on the left is wearing a red coat, while <Ben> wears a blue shirt."


def test_llm_rewrite_prompt_bounds_and_fallback():
    seen = []

    def chat(messages):
        seen.append(messages)
        return "The <person> is wearing a red coat and <person>'s bag is blue."

    out = LLMRewriter(chat).rewrite("The woman is wearing a red coat and her bag is blue.", "<Anna>")
    assert out == "<Anna> is wearing a red coat and <Anna>'s bag is blue."
    assert seen[0][0]["content"] == "You are a helpful assistant."
    assert seen[0][1]["content"].startswith(REWRITE_INSTRUCTION) and "such as human, he, she" in REWRITE_INSTRUCTION

    calls = []

    def chatty(messages):
        calls.append(1)
        return "Sure! " * 200 + "<person>"

    rw = LLMRewriter(chatty, attempts=2)
    assert rw.rewrite("She waves.", "<Anna>") == "<Anna> waves."  # rules fallback
    assert len(calls) == 2 and rw.fallbacks == 1
    assert LLMRewriter(lambda m: "no slot here", fallback="keep").rewrite("She waves.", "<Anna>") == "She waves."
    with pytest.raises(InputError):
        LLMRewriter(lambda m: "", attempts=1, fallback="raise").rewrite("She waves.", "<Anna>")
    rw2 = make_rewriter("llm", chat=lambda m: "<person> waves.")
    assert rw2.rewrite("She waves.", "<Bo>") == "<Bo> waves."


# ------------------------------------------------------------------ rules captioner (measurements)


def test_colour_names():
    cases = {(200, 30, 30): "red", (20, 40, 200): "blue", (30, 160, 60): "green", (250, 250, 250): "white",
             (10, 10, 10): "black", (128, 128, 128): "grey", (240, 220, 40): "yellow", (120, 70, 30): "brown",
             (240, 150, 20): "orange", (130, 40, 170): "purple", (245, 160, 190): "pink",
             (25, 35, 90): "navy", (30, 140, 140): "teal", (215, 195, 155): "beige"}
    for rgb, name in cases.items():
        assert colour_name(rgb) == name, rgb


def test_movement_words_from_tracks():
    box, size = (100, 100, 160, 180), (640, 360)
    walk = PersonMeasurements(box, size, track=tuple((100 + 40 * k, 140) for k in range(8)))
    assert movement_words(walk) == ("walking to the right", "walks from the left to the centre of the frame")
    nod = PersonMeasurements(box, size, track=tuple((130, 140 + (12 if k % 2 else 0)) for k in range(8)))
    assert movement_words(nod)[0] == "nodding"
    shake = PersonMeasurements(box, size, track=tuple((130 + (12 if k % 2 else 0), 140) for k in range(8)))
    assert movement_words(shake)[0] == "shaking the head"
    still = PersonMeasurements(box, size, track=tuple((130 + k % 2, 140) for k in range(8)))
    assert movement_words(still) == ("standing still", None)
    sit = PersonMeasurements(box, size, track=tuple((130, 140 + 12 * k) for k in range(8)))
    assert movement_words(sit)[0] == "sitting down"
    jump = PersonMeasurements(box, size, track=tuple((130, 140 - (40 if 2 <= k <= 4 else 0)) for k in range(8)))
    assert movement_words(jump)[0] == "jumping"


def test_camera_pan_is_not_walking():
    size = (640, 360)
    pan = [(-30.0 * k, 0.0) for k in range(8)]  # everything drifts left: the camera pans right
    a = PersonMeasurements((100, 100, 160, 180), size, track=tuple((300 + dx, 140) for dx, _ in pan))
    b = PersonMeasurements((400, 100, 460, 180), size, track=tuple((500 + dx, 140) for dx, _ in pan))
    facts = facts_from_measurements([a, b])
    assert [p.action for p in facts.people] == ["standing still", "standing still"]
    walker = PersonMeasurements((400, 100, 460, 180), size, track=tuple((200 + 40 * k, 140) for k in range(8)))
    still = PersonMeasurements((100, 100, 160, 180), size, track=tuple((130, 140) for _ in range(8)))
    assert [p.action for p in facts_from_measurements([walker, still]).people] == ["walking to the right",
                                                                                   "standing still"]
    assert movement_words(a)[0] == "walking to the left"  # alone, a pan cannot be told from a walk


def test_rules_captioner_end_to_end():
    size = (640, 360)
    ms = (PersonMeasurements((40, 60, 120, 160), size, torso_rgb=(200, 30, 30), garment="jacket"),
          PersonMeasurements((480, 120, 520, 170), size, torso_rgb=(20, 40, 200),
                             track=tuple((500 - 30 * k, 140) for k in range(8))))
    facts = facts_from_measurements(ms, [PersonFacts("Anna", gender="female"), PersonFacts("Ben", gender="male")])
    anna, ben = facts.people
    assert (anna.position, anna.depth, anna.clothing, anna.action) == ("left", "front", "a red jacket", "standing still")
    assert (ben.position, ben.depth, ben.clothing, ben.action) == ("right", "behind", "a blue top", "walking to the left")
    clip = ClipFacts(people=(PersonFacts("Anna", gender="female"), PersonFacts("Ben", gender="male")), measurements=ms)
    pairs = make_qa(clip, ["Anna", "Ben"], rng=0, recipe=QARecipe(existence=1, appearance=1, action=1, location=5),
                    captioner="rules")
    text = {(p.type, p.subjects[0]): p.answer for p in pairs if p.type != "existence"}
    assert "red jacket" in text[("appearance", "Anna")] and "blue top" in text[("appearance", "Ben")]
    assert "walking to the left" in text[("action", "Ben")]
    with pytest.raises(InputError, match="measurements"):
        make_qa(ClipFacts(people=(PersonFacts("Anna", clothing="a coat"),)), ["Anna"], stage=1, captioner="rules")


# ------------------------------------------------------------------ model captioners


def _request(first_frame=False) -> CaptionRequest:
    clip = _clip()
    return CaptionRequest("appearance", "What is the person on the left wearing in this video?", 6, clip, 0,
                          "the person on the left", {"Anna": "<Anna>"}, first_frame)


def test_vlm_prompt_and_parse():
    got = {}

    def generate(frames, prompt):
        got["frames"], got["prompt"] = frames, prompt
        return f"{prompt}\nASSISTANT: The person on the left is wearing a red coat. She smiles. She waves. She sits."

    frames = lambda clip, n: np.zeros((n, 8, 8, 3), np.uint8)  # noqa: E731
    cap = VLMCaptioner(generate, num_frames=4, frames=frames)
    out = cap.caption(_request(), random.Random(0))
    assert out == "The person on the left is wearing a red coat. She smiles. She waves."
    assert got["frames"].shape[0] == 4 and "the person on the left" in got["prompt"]
    assert "What is the person on the left wearing" in got["prompt"] and "3 people" in got["prompt"]
    cap.caption(_request(first_frame=True), random.Random(0))
    assert got["frames"].shape[0] == 1 and got["prompt"].startswith("Look at this image.")
    assert parse_answer('Answer: "a red coat"') == "A red coat."
    with pytest.raises(InputError):
        parse_answer("  ASSISTANT:  ")
    with pytest.raises(InputError):
        make_captioner("vlm", path="/nonexistent/model/dir")
    with pytest.raises(InputError, match="no video path"):
        VLMCaptioner(generate).caption(_request(), random.Random(0))


def test_openai_captioner_against_local_stub(chat_server):
    url, stub = chat_server
    stub.script = [(503, {"error": "busy"}), (200, stub.completion("She is wearing a red coat."))]
    endpoint = ChatEndpoint(url, "local-vlm", api_key="k", timeout=5, retries=2, backoff=0)
    frames = lambda clip, n: np.full((n, 16, 16, 3), 127, np.uint8)  # noqa: E731
    cap = OpenAICaptioner(endpoint, num_frames=2, frames=frames)
    clip = ClipFacts(people=(PersonFacts("Anna", gender="female", clothing="a red coat"),))
    pairs = make_qa(clip, ["Anna"], stage=1, rng=0, recipe=QARecipe(existence=0, appearance=1), captioner=cap)
    assert [p.answer for p in pairs] == ["<Anna> is wearing a red coat."]
    assert len(stub.bodies) == 2  # one retry after the 503
    path, headers, body = stub.bodies[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer k"
    assert body["model"] == "local-vlm"
    parts = body["messages"][1]["content"]
    assert parts[0]["type"] == "text" and "the person" in parts[0]["text"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 1 and images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_openai_endpoint_errors(chat_server):
    url, stub = chat_server
    stub.script = [(500, {})] * 3
    with pytest.raises(InputError, match="after 3 attempts"):
        ChatEndpoint(url, "m", timeout=5, retries=2, backoff=0).chat([{"role": "user", "content": "hi"}])
    assert len(stub.bodies) == 3
    stub.script = [(404, {"error": "no such model"})]
    with pytest.raises(ConfigError, match="HTTP 404"):
        ChatEndpoint(url, "m", timeout=5, retries=2, backoff=0).chat([{"role": "user", "content": "hi"}])
    assert len(stub.bodies) == 4  # no retry on a 4xx
    stub.script = [(200, {"choices": []})]
    with pytest.raises(InputError, match="malformed"):
        ChatEndpoint(url, "m", timeout=5, retries=0).chat([])
    with pytest.raises(ConfigError):
        ChatEndpoint("ftp://x", "m")
    rw = make_rewriter("llm", base_url=url, model="m", timeout=5, retries=0, attempts=1)
    stub.script = [(200, stub.completion("<person> waves."))]
    assert rw.rewrite("She waves.", "<Anna>") == "<Anna> waves."


def test_model_captioners_get_generic_questions_that_tell_people_apart():
    asked = []

    def generate(frames, prompt):
        asked.append(prompt.split("Question: ")[1])
        return "The person is here."

    cap = VLMCaptioner(generate, frames=lambda clip, n: np.zeros((n, 4, 4, 3), np.uint8))
    make_qa(_clip(), ["Anna", "Cara"], rng=0, recipe=QARecipe(existence=0, appearance=1, action=0, location=0),
            captioner=cap)
    assert len(asked) == 2 and "the person on the left" in asked[0] and "the person on the right" in asked[1]
    assert not any("<" in q for q in asked)
    same_side = ClipFacts(people=(PersonFacts("Anna", position="left", clothing="a red coat, with a hat"),
                                  PersonFacts(None, position="left", clothing="a blue suit")))
    asked.clear()
    make_qa(same_side, ["Anna"], rng=0, recipe=QARecipe(existence=0, appearance=1, action=0, location=0),
            captioner=cap)
    assert "the person in a red coat" in asked[0] and "hat" not in asked[0]


def test_build_prompt_single_person_has_no_crowd_hint():
    clip = ClipFacts(people=(PersonFacts("Anna", clothing="a coat"),))
    req = CaptionRequest("appearance", "What is the person wearing in this video?", 6, clip, 0)
    prompt = build_prompt(req)
    assert "people in this video" not in prompt and prompt.endswith("What is the person wearing in this video?")


# ------------------------------------------------------------------ the offline world's ground truth


def test_world_record_adapter():
    from pvchat.offline.world.api import make_world

    world = make_world(people=4, seed=0, max_people_per_clip=3, num_frames=6)
    spec = next(world.clip_spec(i) for i in range(50) if len(world.clip_spec(i).cast) >= 2)
    truth = world.render_clip(spec).truth  # one clips.jsonl line (without its path)
    truth = json.loads(json.dumps({"path": "clips/c0000.mp4", **truth}))
    entries = truth["people"]
    assert len(entries) >= 2
    subject, stranger = entries[0], entries[1]
    facts = facts_from_world_record(truth, {subject["id"]: "Anna", "p99": "Zed"}, video_root="/w", measure=True)
    assert facts.video == "/w/clips/c0000.mp4" and facts.scene == "in " + truth["scene"]
    anna = facts.people[facts.index_of("Anna")]
    assert (anna.clothing, anna.action, anna.position) == (subject["wearing"], subject["action_phrase"],
                                                           subject["position"])
    assert facts.people[1].name is None and facts.people[1].clothing == stranger["wearing"]
    assert not facts.is_present("Zed") and len(facts.measurements) == len(facts.people)
    rel_others = {r.other for r in facts.relations_of(facts.index_of("Anna"))}
    assert rel_others == set(range(1, len(entries)))
    pairs = make_qa(facts, ["Anna", "Zed"], rng=0, recipe="demo")
    for p in pairs:
        if p.type == "existence":
            assert claims(p.answer) == {f"<{s}>": s == "Anna" for s in p.subjects}
        else:
            assert p.subjects == ("Anna",)
    appearance = [p.answer for p in pairs if p.type == "appearance"]
    assert appearance and all(subject["wearing"] in a for a in appearance)
    by_name = facts_from_world_record(truth, [subject["name"]])
    assert by_name.is_present(subject["name"])
    with pytest.raises(InputError):
        facts_from_world_record({"people": []}, ["Anna"])


def test_decision_first_opens_plain_yes_no_answers_only():
    from pvchat.qa.generate import decision_first

    assert decision_first("<sks> is not shown.", False) == "No, <sks> is not shown."
    assert decision_first("The video contains <sks>.", True) == "Yes, the video contains <sks>."
    assert decision_first("I cannot detect <sks>.", False) == "No, I cannot detect <sks>."
    assert decision_first("Yes, <sks> appears here.", True) == "Yes, <sks> appears here."
    clip = _clip()
    for recipe, decided in (("demo", True), ("paper", False)):
        pairs = make_qa(clip, ["Anna"], rng=3, recipe=recipe) + make_qa(clip, ["Ben"], rng=3, recipe=recipe)
        ex = [p for p in pairs if p.type == "existence"]
        opens = [p.answer.split(",")[0] == ("Yes" if p.label else "No") for p in ex]
        assert all(opens) if decided else not all(opens)
        assert all(claims(p.answer) == {f"<{s}>": p.label for s in p.subjects} for p in ex)
    # a mixed two-person answer is neither yes nor no and keeps its table row
    mixed = [p for p in make_qa(clip, ["Anna", "Ben"], rng=3, recipe="demo") if p.type == "existence" and len(p.subjects) == 2]
    assert mixed and not any(p.answer.startswith(("Yes", "No")) for p in mixed)
