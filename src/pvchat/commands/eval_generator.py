"""``pvchat eval-generator``: score generated clips, keep or drop each, per backend."""

from __future__ import annotations

from pathlib import Path


def eval_generator(
    data_dir: Path,
    out: Path | None = None,
    clip_dir: str | None = None,
    subject_dir: str | None = None,
    face_encoder: str = "dlib",
    face_threshold: float = 0.9,
    min_text: float | None = None,
    min_dync: float | None = None,
    max_vid_s: float | None = 0.95,
    num_frames: int = 8,
    max_side: int = 512,
    tiles: int = 8,
) -> int:
    """Score generated clips with VideoAlchemy's metrics and keep or drop each, per backend.

    Reads DATA_DIR/clips.jsonl and DATA_DIR/subjects.json (layout in pvchat.synth.report), or a
    'pvchat synthesize' output (manifest.jsonl), and writes report.json, decisions.jsonl and
    contact_sheet.png to OUT. Text-S and Vid-S need a local CLIP
    directory, Subj-S a local DINO-style encoder directory; Face-S uses dlib offline by default.

    Args:
        data_dir: clips.jsonl + subjects.json + their files, or a 'pvchat synthesize' output.
        out: output directory (default DATA_DIR/eval).
        clip_dir: local CLIP model directory for Text-S and Vid-S (paper: ViT-L/14).
        subject_dir: local vision encoder directory for Subj-S (paper: DINO ViT-B/16).
        face_encoder: "dlib" or a PyTorch face encoder directory (pvchat.synth.pv_face format).
        face_threshold: face cosine gate for subjects that cannot be calibrated.
        min_text: drop positives whose Text-S is below this.
        min_dync: drop positives whose Dync-D mean flow score is below this.
        max_vid_s: drop positives more similar than this to the reference video (near-duplicates).
        num_frames: frames per clip for the similarity metrics.
        max_side: longer side frames are downscaled to before scoring.
        tiles: clips shown per contact-sheet row.
    """
    # lazy, so that `pvchat --help` stays fast: cv2, dlib, torch, transformers (CLIP/DINO)
    from pvchat.synth.report import evaluate_generated

    report, out = evaluate_generated(data_dir, out, clip_dir=clip_dir, subject_dir=subject_dir,
                                     face_encoder=face_encoder, face_threshold=face_threshold, min_text=min_text,
                                     min_dync=min_dync, max_vid_s=max_vid_s, num_frames=num_frames,
                                     max_side=max_side, tiles=tiles)

    def fmt(v: float | None) -> str:
        return "   -  " if v is None else f"{v:6.3f}"

    print(f"{'backend':<14} {'clips':>5} {'kept':>5} {'drop':>5}  "
          "Text-S  Vid-S  Subj-S Face-S Dync-D  (means over positives)")
    for b, s in report["backends"].items():
        m = s["mean"]
        print(f"{b:<14} {s['clips']:>5} {s['kept']:>5} {s['dropped']:>5}  {fmt(m['text_s'])} {fmt(m['vid_s'])} "
              f"{fmt(m['subj_s'])} {fmt(m['face_s'])} {fmt(m['dync_d'])}")
    print(f"wrote {out / 'report.json'}, {out / 'decisions.jsonl'}, {out / 'contact_sheet.png'}")
    return 0
