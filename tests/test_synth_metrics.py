"""VideoAlchemy metrics (Text-S, Vid-S, Subj-S, Face-S, Dync-D) and the per-subject quality filter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pvchat.errors import ConfigError, InputError
from pvchat.synth import dynamics, encoders, identity_metrics, metrics as M, quality_filter


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run much faster on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_clip_tokenizer():
    """A CLIP BPE tokenizer over single characters (no merges): enough for tiny CLIP text models."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789,.":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def save_tiny_clip(path) -> str:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    tok = tiny_clip_tokenizer()
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, eos_token_id=1, bos_token_id=0,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def textured(size=128, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)).astype(np.float32), (0, 0), 3)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def test_dync_static_zero_and_moving_dynamic():
    base = textured(180)
    static = np.stack([base[:128, :128]] * 8)
    moving = np.stack([base[:128, 4 * t : 4 * t + 128] for t in range(8)])  # 4 px/frame → 8 px at 256
    s, m = dynamics.dynamic_degree(static, fps=8), dynamics.dynamic_degree(moving, fps=8)
    assert s.score < 0.05 and not s.dynamic
    assert m.score > 6.0 and m.dynamic and m.score > 100 * max(s.score, 1e-3)
    assert len(m.pair_scores) == 7 and m.threshold == pytest.approx(6.0)
    # 24 fps is resampled to ~8 fps: every 3rd frame, so 7 pairs of 6 px (12 px at 256)
    fast = np.stack([base[:128, t : t + 128] for t in range(0, 48, 2)])  # 2 px/frame
    f = dynamics.dynamic_degree(fast, fps=24)
    assert len(f.pair_scores) == 7 and f.dynamic
    with pytest.raises(InputError):
        dynamics.dynamic_degree(static[:1])


def test_clip_text_and_video_similarity(tmp_path):
    from transformers import CLIPModel

    d = save_tiny_clip(tmp_path / "clip")
    clip = encoders.ClipEncoder(d)
    a, b = textured(64, 1), textured(64, 2)
    frames = np.stack([a, a, a])
    assert M.video_similarity(frames, frames[:1], clip) == pytest.approx(1.0, abs=1e-5)
    assert M.video_similarity(frames, np.stack([b]), clip) < 0.999
    ts = M.text_similarity(frames, "a woman reads a book", clip)
    # the same number from CLIP's own forward: logits_per_image = scale * cos
    model = CLIPModel.from_pretrained(d).eval()
    tok = clip.tokenizer(["a woman reads a book"], return_tensors="pt")
    px = encoders._to_pixels([encoders.square_center_crop(a)], 32, encoders.CLIP_MEAN, encoders.CLIP_STD)
    with torch.no_grad():
        out = model(input_ids=tok.input_ids, pixel_values=px)
        expected = (out.logits_per_image[0, 0] / model.logit_scale.exp()).item()
    assert ts == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ConfigError, match="clip-vit-large-patch14"):
        encoders.ClipEncoder(tmp_path / "nothing")


def test_subject_similarity_counts_missing_as_zero(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                       image_size=32, patch_size=8)).save_pretrained(tmp_path / "dino")
    enc = encoders.ImageEncoder(tmp_path / "dino")
    ref = textured(40, 3)
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[10:50, 20:60] = ref
    frames = np.stack([frame] * 3)
    box = (20, 10, 60, 50)
    assert identity_metrics.subject_similarity(frames, [ref], enc, [box] * 3) == pytest.approx(1.0, abs=1e-5)
    assert identity_metrics.subject_similarity(frames, [ref], enc, [box, None, box]) == pytest.approx(2 / 3, abs=1e-5)
    assert identity_metrics.subject_similarity(frames, [ref], enc, [None] * 3) == 0.0
    sb = identity_metrics.subject_box_from_face((40, 40, 60, 60), (100, 100))
    assert sb[0] < 40 and sb[2] > 60 and sb[1] < 40 and sb[3] == 100


def test_face_similarity_dlib_real_faces():
    from pvchat.faces.samples import head

    astro, grace = head("astronaut"), head("grace_hopper")
    embed = identity_metrics.dlib_face_embedder()
    ref_a, ref_g = embed(astro)[1], embed(grace)[1]
    shifted = np.roll(astro, 6, axis=1)
    blank = np.full_like(astro, 90)
    frames = np.stack([astro, shifted, np.fliplr(astro).copy(), blank])
    same = identity_metrics.face_similarity(frames, ref_a[None], embed)
    other = identity_metrics.face_similarity(frames, ref_g[None], embed)
    assert same.face_rate == pytest.approx(0.75) and same.per_frame[3] is None and same.boxes[3] is None
    assert same.face_s == pytest.approx(same.face_cos * 0.75)
    assert same.face_cos > 0.95 and other.face_cos < same.face_cos - 0.05
    # the calibrated gate separates the subject's own faces from the other person
    th = quality_filter.calibrate_face_threshold(np.stack([ref_a, embed(shifted)[1]]), ref_g[None])
    assert th.separable and other.face_cos < th.face < same.face_cos
    # the one-stop per-subject filter: references embedded and the gate calibrated once
    qf = quality_filter.QualityFilter([astro, shifted], [grace], metrics=M.VideoAlchemyMetrics(face_embedder=embed))
    assert qf.thresholds.face == pytest.approx(th.face, abs=1e-5)
    assert qf(np.stack([shifted, np.fliplr(astro).copy()])).keep
    impostor = qf(np.stack([grace, grace]))
    assert not impostor.keep and "face cos" in impostor.reasons[0] and impostor.scores.face_rate == 1.0
    assert qf(np.stack([grace, grace]), positive=False).keep


def test_calibrate_and_judge():
    rng = np.random.default_rng(0)
    subject = rng.normal(size=32)
    own = subject + 0.3 * rng.normal(size=(6, 32))
    negs = 0.6 * subject + rng.normal(size=(20, 32))
    th = quality_filter.calibrate_face_threshold(own, negs)
    assert th.separable and th.negative_high < th.face < th.own_median
    th.text, th.dync, th.max_vid_s = 0.2, 1.0, 0.95
    good = M.ClipScores(text_s=0.3, vid_s=0.7, face_cos=th.face + 0.05, face_rate=1.0, dync_score=3.0)
    assert quality_filter.judge(good, th).keep
    for change, reason in [({"face_cos": th.face - 0.05}, "face cos"), ({"face_rate": 0.5}, "face found"),
                           ({"text_s": 0.1}, "Text-S"), ({"dync_score": 0.2}, "Dync-D"), ({"vid_s": 0.99}, "Vid-S")]:
        d = quality_filter.judge(M.ClipScores(**{**good.to_dict(), **change}), th)
        assert not d.keep and reason in d.reasons[0]
    # a negative that looks like the subject is label noise: dropped; a clearly different one kept
    assert not quality_filter.judge(good, th, positive=False).keep
    assert quality_filter.judge(M.ClipScores(face_cos=th.negative_high - 0.2, face_rate=1.0), th, positive=False).keep
    overlap = quality_filter.calibrate_face_threshold(own, own)  # negatives as close as the own faces
    assert not overlap.separable and overlap.face == pytest.approx(overlap.own_median)
    with pytest.raises(InputError):
        quality_filter.calibrate_face_threshold(own[:1], negs)


def test_score_clip_with_injected_face_embedder(tmp_path):
    d = save_tiny_clip(tmp_path / "clip")
    ref = np.ones(8, np.float32)

    def embedder(frame):  # a face in bright frames only, its embedding drifting with brightness
        m = frame.mean()
        return None if m < 50 else ((10, 10, 30, 30), ref + np.linspace(0, 1, 8) * (m / 255))

    base = textured(128)
    frames = np.stack([base[:96, 4 * t : 4 * t + 96] for t in range(7)] + [np.zeros((96, 96, 3), np.uint8)])
    scorer = M.VideoAlchemyMetrics(M.MetricsConfig(clip_dir=d, num_frames=8), face_embedder=embedder)
    s = scorer.score(frames, fps=8, prompt="a man", ref_frames=frames[:2], ref_face_embeddings=ref[None])
    assert s.face_rate == pytest.approx(7 / 8) and 0.9 < s.face_cos < 1.0
    assert s.text_s is not None and s.vid_s is not None and s.dynamic is True and s.subj_s is None
    assert set(s.to_dict()) >= {"text_s", "vid_s", "subj_s", "face_s", "dync_score", "dynamic"}


def _write_eval_data(root):
    """Two backends' clips of the astronaut (subject), Grace Hopper (an impostor) and no one."""
    import json

    from pvchat.faces.samples import Appearance, head, render_frames
    from pvchat.video import write_video

    astro, grace = head("astronaut"), head("grace_hopper")
    (root / "refs").mkdir(parents=True)
    for name, img in [("refs/a0.png", astro), ("refs/a1.png", np.roll(astro, 5, axis=1)), ("refs/g.png", grace)]:
        cv2.imwrite(str(root / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    def clip(name, img, n=12):
        people = [Appearance(img, center=(0.5, 0.5), height=0.8)] if img is not None else []
        frames = list(render_frames(people, n, size=(200, 160), seed=1))
        if img is None:  # no face, but motion
            base = textured(260, 9)
            frames = [base[:160, 5 * t : 5 * t + 200] for t in range(n)]
        write_video(root / name, frames, fps=8)
        return name

    rows = [
        {"path": clip("a.mp4", astro), "backend": "classic", "subject": "astro", "prompt": "a woman smiles"},
        {"path": clip("g.mp4", grace), "backend": "consisid", "subject": "astro"},
        {"path": clip("none.mp4", None), "backend": "consisid", "subject": "astro"},
        {"path": "g.mp4", "backend": "classic", "subject": "astro", "label": "negative"},
    ]
    (root / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "subjects.json").write_text(json.dumps({"astro": {"faces": ["refs/a0.png", "refs/a1.png"],
                                                              "negatives": ["refs/g.png"]}}))


def test_eval_generator_report_and_cli(tmp_path, capsys):
    import json

    from pvchat.cli import main
    from pvchat.commands.eval_generator import eval_generator

    data = tmp_path / "data"
    _write_eval_data(data)
    clip = save_tiny_clip(tmp_path / "clip")
    assert eval_generator(data, tmp_path / "out", clip_dir=clip, min_dync=0.5, num_frames=4) == 0
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    by = {(r["path"], r["label"]): r for r in rep["clips"]}
    assert by[("a.mp4", "positive")]["keep"] and by[("g.mp4", "negative")]["keep"]
    assert not by[("g.mp4", "positive")]["keep"] and "face cos" in by[("g.mp4", "positive")]["reasons"][0]
    assert not by[("none.mp4", "positive")]["keep"] and "face found in 0.00" in by[("none.mp4", "positive")]["reasons"][0]
    assert by[("a.mp4", "positive")]["scores"]["text_s"] is not None  # prompt given → Text-S
    assert rep["backends"]["classic"] == {**rep["backends"]["classic"], "clips": 2, "positives": 1, "negatives": 1,
                                         "kept": 2, "dropped": 0}
    assert rep["backends"]["consisid"]["dropped"] == 2 and rep["thresholds"]["astro"]["separable"]
    assert by[("none.mp4", "positive")]["scores"]["dynamic"] and rep["backends"]["consisid"]["mean"]["dync_d"] == 0.5
    sheet = cv2.imread(str(tmp_path / "out" / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 4 * 100  # 2 backends × kept/dropped rows
    assert len((tmp_path / "out" / "decisions.jsonl").read_text().splitlines()) == 4
    assert "consisid" in capsys.readouterr().out
    # through the CLI, with a reference video: a clip that repeats it is a near-duplicate (Vid-S gate)
    subj = json.loads((data / "subjects.json").read_text())
    subj["astro"]["reference"] = "a.mp4"
    (data / "subjects.json").write_text(json.dumps(subj))
    assert main(["eval-generator", str(data), "--out", str(tmp_path / "out2"), "--clip-dir", clip,
                 "--max-vid-s", "0.99", "--num-frames", "4"]) == 0
    rep2 = json.loads((tmp_path / "out2" / "report.json").read_text())
    a2 = next(r for r in rep2["clips"] if r["path"] == "a.mp4")
    assert not a2["keep"] and "near-duplicate" in a2["reasons"][0] and a2["scores"]["vid_s"] > 0.99
    # a broken listing is a one-line error and exit code 2
    capsys.readouterr()
    (data / "clips.jsonl").write_text('{"path": "missing.mp4", "backend": "x", "subject": "astro"}\n')
    assert main(["eval-generator", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pvchat eval-generator: error:") and "missing.mp4" in err and "\n" not in err


def test_eval_generator_reads_a_synthesize_output(tmp_path, two_people_analysis):
    """A 'pvchat synthesize' directory: faces from the analysis, negative clips as hard negatives."""
    import json

    from pvchat.commands.eval_generator import eval_generator

    data = tmp_path / "synth"
    _write_eval_data(data)
    (data / "clips.jsonl").unlink()
    (data / "settings.json").write_text(json.dumps({"name": "astro", "analysis": str(two_people_analysis),
                                                    "backend": "classic"}))
    recs = [{"clip": "a.mp4", "people": ["astro"], "qa": [], "kind": "positive", "provenance": {"backend": "classic"}},
            {"clip": "none.mp4", "people": ["astro"], "qa": [], "kind": "positive", "provenance": {"backend": "classic"}},
            {"clip": "g.mp4", "people": [], "qa": [], "kind": "negative", "provenance": {"backend": "classic"}}]
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert eval_generator(data, num_frames=4) == 0
    rep = json.loads((data / "eval" / "report.json").read_text())
    keep = {r["path"]: r["keep"] for r in rep["clips"]}
    assert keep == {"a.mp4": True, "none.mp4": False, "g.mp4": True}
    th = rep["thresholds"]["astro"]
    assert th["separable"] and th["negative_high"] < th["face"] < th["own_median"]
    assert rep["backends"]["classic"]["clips"] == 3 and rep["clips"][0]["scores"]["vid_s"] is None  # no CLIP given
