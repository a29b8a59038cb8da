"""``pvchat world``: render the offline world."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def world(out: Path, people: int = 20, clips: int = 100, seed: int = 0, max_people_per_clip: int = 3,
          overwrite: bool = False, references: bool = True) -> int:
    """Render an offline world of real-face people: query clips, reference videos, ground truth.

    People are real faces that ship offline (the scikit-image LFW subset, scikit-image's
    astronaut, matplotlib's Grace Hopper) with drawn bodies, clothing and accessories; clips show
    1 to 3 of them in rooms and outdoors, moving and acting, with ground truth for existence,
    appearance, action and location questions. Writes OUT/clips/*.mp4, OUT/clips.jsonl,
    OUT/people.json, OUT/references/*.mp4, OUT/embeddings.safetensors and OUT/people.png.

    Args:
        out: Output directory (written atomically; must not exist unless --overwrite).
        people: How many distinct people (at most the 63 usable real faces that ship offline).
        clips: How many query clips to render.
        seed: Random seed; the same seed gives the same world.
        max_people_per_clip: At most this many people in one clip (1 to 3).
        overwrite: Replace OUT if it exists.
        references: Also render one reference video per person.
    """
    from pvchat.world.api import build_world  # cv2, dlib, torch: rendering and measuring faces

    start = time.perf_counter()
    w = build_world(out, people=people, clips=clips, seed=seed, max_people_per_clip=max_people_per_clip,
                    references=references, overwrite=overwrite, progress=sys.stderr.isatty())
    print(f"{len(w.people)} people, {clips} clips{', references' if references else ''} "
          f"in {time.perf_counter() - start:.1f} s -> {out}")
    return 0
