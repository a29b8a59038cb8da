"""pvchat.faces: detection, embeddings, clustering, quality, demographics and `pvchat analyze` (paper §3.2)."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from pvchat.cli import main as cli_main
from pvchat.errors import ConfigError, InputError
from pvchat.faces import FaceEngine, demographics as D, face_distance, quality as Q
from pvchat.faces.analysis_dir import load_embedding, load_summary
from pvchat.faces.analyze import analyze_video
from pvchat.faces.cluster import DBSCAN_STEPS, OFFICIAL_FACENET_STEPS, cluster_embeddings
from pvchat.faces.samples import astronaut, grace_hopper, lfw_faces
from pvchat.io import load_tensors
from pvchat.video import write_video


@pytest.fixture(scope="module")
def engine():
    return FaceEngine()


@pytest.fixture(scope="module")
def photos(engine):
    """{name: (image, its one Face with embedding)} for the two offline portrait photos."""
    out = {}
    for name, img in (("astronaut", astronaut()), ("grace_hopper", grace_hopper())):
        faces = engine.detect(img)
        assert len(faces) == 1, name
        out[name] = (img, faces[0])
    return out


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return ix * iy / (area(a) + area(b) - ix * iy)


# --- detection and embeddings --------------------------------------------------------------------


def test_detects_the_real_faces_with_landmarks_and_embeddings(photos):
    expect = {"astronaut": (175, 76, 266, 167), "grace_hopper": (180, 139, 367, 326)}  # dlib at full res
    for name, (_img, f) in photos.items():
        assert _iou(f.box, expect[name]) > 0.8, (name, f.box)
        assert f.landmarks.shape == (68, 2) and f.landmarks.dtype == np.float32
        x0, y0, x1, y1 = f.box
        inside = (f.landmarks[:, 0] > x0 - 10) & (f.landmarks[:, 0] < x1 + 10) & (f.landmarks[:, 1] > y0 - 10)
        assert inside.mean() > 0.95
        assert f.embedding.shape == (128,) and f.embedding.dtype == np.float32
        assert f.score > 0.5


def test_downscaled_detection_maps_boxes_back(photos):
    img, full = photos["astronaut"]
    small = FaceEngine(detect_max_side=256).detect(img, embed=False)
    assert len(small) == 1 and small[0].embedding is None
    assert _iou(small[0].box, full.box) > 0.7  # box is in the original image's pixels
    assert np.abs(small[0].landmarks - full.landmarks).mean() < 4  # landmarks fitted at full resolution


def test_same_person_is_close_and_different_people_are_far(engine, photos):
    ast_img, ast = photos["astronaut"]
    _, hopper = photos["grace_hopper"]
    # The same person: mirrored, and shifted + rescaled (a different frame of a video).
    mirrored = engine.detect(np.ascontiguousarray(ast_img[:, ::-1]))[0]
    moved = cv2.resize(np.roll(ast_img, (17, -23), axis=(0, 1)), None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    moved_face = engine.detect(moved)[0]
    assert face_distance(ast, mirrored) < 0.4
    assert face_distance(ast, moved_face) < 0.4
    assert face_distance(ast, hopper) > 0.6
    lfw = lfw_faces()[:6]  # six different LFW people, upscaled 6x
    others = [f for img in lfw for f in engine.detect(img)[:1]]
    assert len(others) >= 4
    assert min(face_distance(ast, o) for o in others) > 0.6
    assert min(face_distance(hopper, o) for o in others) > 0.6


def test_face_distance_needs_embeddings(engine, photos):
    img, _ = photos["astronaut"]
    f = engine.detect(img, embed=False)[0]
    with pytest.raises(ValueError):
        face_distance(f, f)
    engine.embed(img, f)
    assert face_distance(f, photos["astronaut"][1]) < 1e-4


# --- clustering -----------------------------------------------------------------------------------


def _views(engine, img, n):
    """n embeddings of one photo: shifted, rescaled, slightly rotated (like frames of a video)."""
    out = []
    for k in range(n):
        m = cv2.getRotationMatrix2D((img.shape[1] / 2, img.shape[0] / 2), 3 * (k - n / 2), 0.8 + 0.08 * k)
        m[:, 2] += (9 * k, -7 * k)
        out.append(engine.detect(cv2.warpAffine(img, m, img.shape[1::-1], borderMode=cv2.BORDER_REFLECT))[0].embedding)
    return out


def test_dbscan_separates_two_people(engine, photos):
    a = _views(engine, photos["astronaut"][0], 5)
    b = _views(engine, photos["grace_hopper"][0], 4)
    c = cluster_embeddings(np.stack(a + b))
    assert c.num_people == 2 and c.eps == DBSCAN_STEPS[0][0]
    assert list(c.labels) == [0] * 5 + [1] * 4  # numbered by size
    # The official FaceNet eps (cosine 0.6) merges everyone on dlib's scale: why ours differ.
    assert cluster_embeddings(np.stack(a + b), OFFICIAL_FACENET_STEPS).num_people == 1


def test_dbscan_fallback_ladder(engine, photos):
    a = _views(engine, photos["astronaut"][0], 2)
    two = cluster_embeddings(np.stack(a))  # too few for min_samples 3: the second step clusters them
    assert two.num_people == 1 and (two.eps, two.min_samples) == DBSCAN_STEPS[1]
    one = cluster_embeddings(np.stack(a[:1]))  # still noise: the official all-in-one fallback
    assert one.num_people == 1 and one.eps is None
    weighted = cluster_embeddings(np.stack(a), sample_weight=np.array([4.0, 4.0]))  # each stands for 4 faces
    assert (weighted.eps, weighted.min_samples) == DBSCAN_STEPS[0]


# --- quality --------------------------------------------------------------------------------------


def _close_eyes(img, face):
    """Paint cheek skin over both eyes and draw a closed-lid line (a real photo, eyes shut)."""
    out = img.copy()
    for eye in (Q.RIGHT_EYE, Q.LEFT_EYE):
        (x0, y0), (x1, y1) = face.landmarks[eye].min(0), face.landmarks[eye].max(0)
        w, h = x1 - x0, y1 - y0
        ys, ye, xs, xe = int(y0 - 1.2 * h), int(y1 + 1.2 * h), int(x0 - 0.15 * w), int(x1 + 0.15 * w)
        cheek = img[ye + int(0.8 * h) : ye + int(0.8 * h) + (ye - ys), xs:xe]
        out[ys:ye, xs:xe] = cv2.GaussianBlur(cheek, (0, 0), 2)
        cv2.line(out, (int(x0), int((y0 + y1) / 2)), (int(x1), int((y0 + y1) / 2)), (60, 40, 40), 2)
    return out


def test_quality_open_eyes_pass_closed_eyes_fail(engine, photos):
    for img, face in photos.values():
        q = Q.assess(img, face)
        assert q.passed and min(q.ear_left, q.ear_right) >= Q.EAR_MIN
        assert abs(q.yaw) < 20 and abs(q.roll) < 10 and q.frontal > 0.9 and q.visibility == 1.0
        shut = _close_eyes(img, face)
        f2 = engine.detect(shut, embed=False)[0]
        q2 = Q.assess(shut, f2)
        assert min(q2.ear_left, q2.ear_right) < Q.EAR_MIN and not q2.passed and "eyes closed" in q2.reason
        assert Q.rank_key(q2) < Q.rank_key(q)


def test_quality_blur_lowers_sharpness_and_score(photos):
    img, face = photos["grace_hopper"]
    blurred = cv2.GaussianBlur(img, (0, 0), 2.5)
    q, qb = Q.assess(img, face), Q.assess(blurred, face)
    assert qb.sharpness < 0.5 * q.sharpness
    assert qb.score < q.score


def test_quality_pose_visibility_and_size(photos):
    img, face = photos["astronaut"]
    rot = Q.head_pose(face.landmarks @ np.array([[0.94, -0.34], [0.34, 0.94]], np.float32).T, img.shape[:2])
    assert abs(rot[2] - Q.head_pose(face.landmarks, img.shape[:2])[2]) > 12  # roll follows an in-plane rotation
    cut = img[:, : int(face.landmarks[:, 0].mean())]  # half the face outside the frame
    assert Q.visibility(face.landmarks, cut.shape[:2]) < Q.VISIBILITY_MIN
    assert not Q.assess(img, face, min_size=200).passed  # 91 px face < 200 px


# --- demographics ---------------------------------------------------------------------------------


def test_demographics_parsing():
    assert D.parse_gender("Female, young.") == "female"
    assert D.parse_gender("male, elderly") == "male"
    assert D.parse_gender("The woman looks middle-aged") == "female"
    assert D.parse_gender("no idea") is None and D.parse_gender("a man and a woman") is None
    assert D.parse_age("female, middle aged") == "middle-aged"
    assert D.parse_age("Young") == "young" and D.parse_age("an old man") == "elderly"
    assert D.parse_age("young or elderly") is None


class FakeVLM:
    def __init__(self, answers):
        self.answers, self.prompts = list(answers), []

    def __call__(self, frames, prompt):
        assert frames.ndim == 4
        self.prompts.append(prompt)
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a


FRAMES = np.zeros((8, 16, 16, 3), np.uint8)


def test_vlm_backend_uses_the_paper_prompt_and_bounded_retries():
    one = FakeVLM(["Female, young."])
    d = D.estimate_demographics("vlm", frames=FRAMES, ask=one)
    assert (d.gender, d.age, d.source) == ("female", "young", "vlm") and one.prompts == [D.PROMPT]
    follow = FakeVLM(["a woman", "She looks middle-aged (35-60)."])
    d = D.estimate_demographics("vlm", frames=FRAMES, ask=follow)
    assert (d.gender, d.age) == ("female", "middle-aged") and follow.prompts == [D.PROMPT, D.AGE_PROMPT]
    junk = FakeVLM(["hmm"] * 10)
    d = D.estimate_demographics("vlm", frames=FRAMES, ask=junk, max_tries=3)
    assert (d.gender, d.age) == (None, None) and len(junk.prompts) == 3  # no endless loop, no default
    broken = FakeVLM([RuntimeError("oom"), "male, elderly"])
    d = D.estimate_demographics("vlm", frames=FRAMES, ask=broken)
    assert (d.gender, d.age) == ("male", "elderly")
    user_wins = D.estimate_demographics("vlm", frames=FRAMES, ask=FakeVLM(["male, young"]), gender="female")
    assert (user_wins.gender, user_wins.age, user_wins.source) == ("female", "young", "given+vlm")


def test_vlm_time_budget_stops_asking():
    t = [0.0]

    def slow(frames, prompt):
        t[0] += 200.0  # each answer takes 200 s
        return "unclear"

    d = D.ask_demographics(slow, FRAMES, max_tries=10, time_budget_s=300, clock=lambda: t[0])
    assert d.gender is None and t[0] == 400.0  # third try not started: budget exhausted


def test_demographics_backends_and_validation(tmp_path, monkeypatch):
    assert D.estimate_demographics("none") is None
    assert D.estimate_demographics("given", gender="Female", age="middle aged").to_dict() == {
        "gender": "female", "age": "middle-aged", "source": "given"}
    with pytest.raises(ConfigError):
        D.estimate_demographics("given")
    with pytest.raises(ConfigError):
        D.estimate_demographics("given", gender="robot")
    with pytest.raises(ConfigError):
        D.estimate_demographics("oracle")
    monkeypatch.delenv("PVCHAT_VLM_DIR", raising=False)
    with pytest.raises(ConfigError):
        D.estimate_demographics("vlm", frames=FRAMES)
    with pytest.raises(InputError):  # a directory that is not a model: clear error, no download
        D.estimate_demographics(f"vlm:{tmp_path}", frames=FRAMES)


# --- analyze ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analysed(two_people_video, tmp_path_factory, photos):
    out = tmp_path_factory.mktemp("analyze") / "out"
    code = cli_main(["analyze", str(two_people_video), str(out), "--demographics", "given", "--gender", "female"])
    assert code == 0
    return out


def test_analyze_writes_the_documented_files(analysed, photos):
    summary = load_summary(analysed)
    assert [p["faces"] for p in summary["people"]] == [24, 18]  # astronaut in all 24 frames, Hopper in 18
    assert summary["subject"] == 0 and summary["subject_reason"] == "seen most"
    assert summary["demographics"] == {"gender": "female", "age": None, "source": "given"}
    assert summary["frames_analyzed"] == 24 and summary["settings"]["fps"] == 8.0
    for k, name in enumerate(("astronaut", "grace_hopper")):
        d = analysed / f"person_{k}"
        best = np.asarray(Image.open(d / "best_face.png"))
        assert best.ndim == 3 and min(best.shape[:2]) > 60
        goods = sorted((d / "good_faces").glob("*.png"))
        assert 1 <= len(goods) <= 8
        emb = load_tensors(d / "embedding.safetensors")["embedding"]
        assert emb.shape == (128,)
        assert face_distance(emb.numpy(), photos[name][1]) < 0.45  # the mean embedding is that person's
        track = json.loads((d / "track.json").read_text())
        quality = json.loads((d / "quality.json").read_text())
        assert len(track) == len(quality) == summary["people"][k]["faces"]
        assert {"frame", "time", "box"} <= track[0].keys()
        assert {"ear_left", "yaw", "frontal", "sharpness", "visibility", "score", "passed"} <= quality[0].keys()
        x0, y0, x1, y1 = track[0]["box"]
        assert (x1 + x0) / 2 < 160 if k == 0 else (x1 + x0) / 2 > 160  # astronaut left, Hopper right
    assert np.allclose(load_embedding(analysed), load_embedding(analysed, 0))
    sheet = np.asarray(Image.open(analysed / "contact_sheet.png"))
    assert sheet.shape[0] > 2 * 100  # one row per person


def test_analyze_reports_the_person_choice(two_people_video, tmp_path, capsys):
    assert cli_main(["analyze", str(two_people_video), str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "person_0" in text and "person_1" in text and "subject: person_0 (seen most)" in text
    assert cli_main(["analyze", str(two_people_video), str(tmp_path / "b"), "--person", "1"]) == 0
    text = capsys.readouterr().out
    assert "subject: person_1 (chosen with --person)" in text
    assert load_summary(tmp_path / "b")["subject"] == 1
    assert cli_main(["analyze", str(two_people_video), str(tmp_path / "c"), "--person", "5"]) == 2
    assert "no person 5" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert cli_main(["analyze", str(two_people_video), str(tmp_path / "b")]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["no_face", "not_a_video", "truncated"])
def test_analyze_bad_input_fails_and_writes_nothing(tmp_path, two_people_video, capsys, kind):
    video = tmp_path / "in.mp4"
    if kind == "no_face":
        yy, xx = np.mgrid[0:120, 0:160]
        frame = np.stack([xx, yy, xx + yy], axis=2).astype(np.uint8)
        write_video(video, [np.roll(frame, k, axis=1) for k in range(16)], fps=8)
    elif kind == "not_a_video":
        video.write_text("hello\n" * 100)
    else:
        data = two_people_video.read_bytes()
        video.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out"
    assert cli_main(["analyze", str(video), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pvchat analyze: error:") and "\n" not in err
    if kind == "no_face":
        assert "no detectable face" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]  # no temp dirs left behind
    with pytest.raises(InputError):
        analyze_video(video, progress=False)


def test_a_person_who_leaves_and_returns_is_one_person(tmp_path):
    from pvchat.faces.samples import Appearance, head, render_frames

    video = tmp_path / "back.mp4"
    ast = head("astronaut")
    people = [Appearance(ast, (0.3, 0.5), 0.55, start=0, stop=6), Appearance(ast, (0.7, 0.5), 0.55, start=18)]
    write_video(video, render_frames(people, 24, (320, 240)), fps=8)
    a = analyze_video(video, progress=False)
    assert len(a.people) == 1 and a.people[0].num_faces == 12
    assert len({r.track for r in a.people[0].faces}) == 2  # two tracks, merged by their embeddings


def test_boxes_are_reported_in_source_pixels(two_people_video):
    from pvchat.faces.records import AnalyzeSettings

    full = analyze_video(two_people_video, progress=False)
    half = analyze_video(two_people_video, settings=AnalyzeSettings(frame_max_side=200), progress=False)
    assert [p.num_faces for p in half.people] == [p.num_faces for p in full.people]
    for pf, ph in zip(full.people, half.people):
        for rf, rh in zip(pf.faces, ph.faces):
            assert rf.frame == rh.frame and _iou(rf.box, rh.box) > 0.6


def test_no_face_passing_the_gates_is_said_not_hidden(tmp_path, engine):
    from pvchat.faces.samples import Appearance, head, render_frames

    ast = head("astronaut")
    shut = _close_eyes(ast, engine.detect(ast, embed=False)[0])
    video = tmp_path / "shut.mp4"
    write_video(video, render_frames([Appearance(shut, (0.5, 0.5), 0.7)], 12, (320, 240)), fps=8)
    a = analyze_video(video, progress=False)
    assert len(a.people) == 1 and not a.people[0].best.quality.passed
    assert any("eyes closed" in n for n in a.notes)


def _tiny_local_vlm(path):
    """A random-weight LLaVA (tiny CLIP + tiny Llama, word-level tokenizer) saved to ``path``: no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    words = ["<unk>", "<pad>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:"] + (
        "male female young middle-aged elderly the person video , .".split())
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                "{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1, image_seq_length=16,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    LlavaForConditionalGeneration(config).save_pretrained(path)
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8, chat_template=template,
                   vision_feature_select_strategy="full", num_additional_image_tokens=0).save_pretrained(path)


def test_local_vlm_loads_from_a_directory_and_answers(tmp_path, monkeypatch):
    import torch

    torch.manual_seed(0)
    _tiny_local_vlm(tmp_path / "vlm")
    vlm = D.LocalVLM(tmp_path / "vlm", max_new_tokens=6)
    frames = np.random.default_rng(0).integers(0, 255, (8, 48, 64, 3), dtype=np.uint8)
    answer = vlm(frames, D.PROMPT)  # random weights: arbitrary (maybe empty) text, but a real generate() over 8 frames
    assert isinstance(answer, str)
    monkeypatch.setenv("PVCHAT_VLM_DIR", str(tmp_path / "vlm"))
    d = D.estimate_demographics("vlm", frames=frames, max_tries=2)
    assert d.source == "vlm" and d.gender in (None, *D.GENDERS) and d.age in (None, *D.AGES)


def test_analyze_asks_the_vlm_about_the_chosen_subject(two_people_video, monkeypatch):
    seen = []

    class Fake:
        def __init__(self, model_dir):
            assert str(model_dir) == "/models/vlm"

        def __call__(self, frames, prompt):
            seen.append(frames.shape)
            return "female, elderly"

    monkeypatch.setattr(D, "LocalVLM", Fake)
    a = analyze_video(two_people_video, person=1, demographics="vlm:/models/vlm", progress=False)
    assert (a.demographics.gender, a.demographics.age, a.demographics.source) == ("female", "elderly", "vlm")
    n = seen[0][0] if seen else 0
    assert seen == [(n, 224, 224, 3)] and 1 <= n <= 8  # two people: the subject's face crops, asked once
