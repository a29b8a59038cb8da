"""``pvchat analyze``: the people of a reference video, their best faces, the subject."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from pvchat.choices import AGES, DEMOGRAPHICS, GENDERS
from pvchat.commands import OneOf
from pvchat.errors import InputError


def analyze(
    video: Path,
    out: Path,
    person: int | None = None,
    fps: float = 8.0,
    demographics: Annotated[str, OneOf(DEMOGRAPHICS, "vlm:DIR")] = "none",
    gender: Annotated[str, OneOf(GENDERS)] | None = None,
    age: Annotated[str, OneOf(AGES)] | None = None,
    overwrite: bool = False,
) -> int:
    """Find the people in a reference video, their best faces and the subject to learn.

    Writes OUT/person_K/ (best_face.png, good_faces/, embedding.safetensors, track.json,
    quality.json) for every person, OUT/contact_sheet.png and OUT/summary.json. People are
    numbered by how often they are seen; the subject is person 0 unless --person says otherwise.

    Args:
        video: The reference video (mp4, mov, mkv, ...).
        out: Output directory (written atomically; must not exist unless --overwrite).
        person: Which person is the subject (0 = seen most).
        fps: Frames analysed per second of video (the paper uses 8).
        demographics: Gender/age backend: given takes --gender/--age; vlm:DIR asks a local model.
        gender: The subject's gender, with --demographics given.
        age: The subject's age group.
        overwrite: Replace OUT if it exists.
    """
    # lazy, so that `pvchat --help` stays fast: dlib, cv2, torch
    from pvchat.faces.analysis_dir import write_analysis
    from pvchat.faces.analyze import analyze_video
    from pvchat.faces.records import AnalyzeSettings

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists (pass --overwrite to replace it)")
    a = analyze_video(video, person=person, settings=AnalyzeSettings(fps=fps), demographics=demographics,
                      gender=gender, age=age, progress=sys.stderr.isatty())
    write_analysis(a, out, overwrite=overwrite)
    print(f"{a.frames_analyzed} frames analysed, {a.faces_detected} faces, {len(a.people)} "
          f"{'person' if len(a.people) == 1 else 'people'} ({a.seconds:.1f} s):")
    for p in a.people:
        mark = "  <- subject" if p.id == a.subject else ""
        print(f"  person_{p.id}: {p.num_faces} faces, {p.faces[0].time:.1f}-{p.faces[-1].time:.1f} s, "
              f"best face score {p.best.quality.score:.1f}{mark}")
    if len(a.people) > 1:
        how = "seen most" if a.subject_reason == "seen most" else "chosen with --person"
        print(f"subject: person_{a.subject} ({how}); pass --person K to choose another")
    for note in a.notes:
        print(f"note: {note}")
    if a.demographics:
        print(f"demographics ({a.demographics.source}): gender={a.demographics.gender}, age={a.demographics.age}")
    print(f"wrote {out}")
    return 0
