"""``pvchat world``: render the offline world."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def world(out: Path, people: int | None = None, clips: int = 100, seed: int = 0, max_people_per_clip: int = 3,
          overwrite: bool = False, references: bool = True, variation: float = 0.5, faces: Path | None = None) -> int:
    """Render an offline world of real-face people: query clips, reference videos, ground truth.

    People are real faces that ship offline (the scikit-image LFW subset, scikit-image's
    astronaut, matplotlib's Grace Hopper) with drawn bodies, clothing and accessories; clips show
    1 to 3 of them in rooms and outdoors, moving and acting, with ground truth for existence,
    appearance, action and location questions. A face differs from clip to clip the way real
    footage does (another photo of the person where there is one, head pose, expression, lighting,
    small faces, blur, JPEG, sunglasses/masks/hands, now and then a face hardly visible); the
    ground truth records how. With --faces DIR the people are the user's own: DIR/<person>/*.jpg,
    the folder name is the name, the first photo the reference face. Writes OUT/clips/*.mp4, OUT/clips.jsonl,
    OUT/people.json, OUT/references/*.mp4, OUT/embeddings.safetensors and OUT/people.png.

    Args:
        out: Output directory (written atomically; must not exist unless --overwrite).
        people: How many distinct people (at most the 63 usable real faces that ship offline; default 20,
            or every person folder of --faces).
        clips: How many query clips to render.
        seed: Random seed; the same seed gives the same world.
        max_people_per_clip: At most this many people in one clip (1 to 3).
        overwrite: Replace OUT if it exists.
        references: Also render one reference video per person.
        variation: How much a face differs between query clips and its reference, 0 (never) to 1 (hardest).
        faces: A folder of the user's photos, DIR/<person>/*.jpg, to build the people from.
    """
    # lazy, so that `pvchat --help` stays fast: cv2, dlib, torch (rendering and measuring faces)
    from pvchat.offline.world.api import build_world
    from pvchat.offline.world.faces import folder_faces

    if people is None:
        people = len(folder_faces(faces)) if faces is not None else 20
    start = time.perf_counter()
    w = build_world(out, people=people, clips=clips, seed=seed, max_people_per_clip=max_people_per_clip,
                    references=references, overwrite=overwrite, progress=sys.stderr.isatty(), variation=variation,
                    faces_dir=faces)
    print(f"{len(w.people)} people, {clips} clips{', references' if references else ''} "
          f"in {time.perf_counter() - start:.1f} s -> {out}")
    return 0
