"""Shared pytest fixtures. Append-only: several engineers add fixtures here."""

import pytest


# --- video and faces (tests/test_video.py, tests/test_faces.py) ---------------------------------


@pytest.fixture(scope="session")
def two_people_video(tmp_path_factory):
    """A 3 s, 8 fps, 320×240 h264 clip: the astronaut in all 24 frames, Grace Hopper in the last 18."""
    from pvchat.faces.samples import two_people_clip

    path = tmp_path_factory.mktemp("videos") / "two_people.mp4"
    two_people_clip(path, num_frames=24, size=(320, 240), fps=8.0, second_from=0.25)
    return path


# --- synthesis (tests/test_synth_classic.py) ------------------------------------------------------


@pytest.fixture(scope="session")
def two_people_analysis(two_people_video, tmp_path_factory):
    """``pvchat analyze`` output for ``two_people_video`` (subject: the astronaut, seen most)."""
    from pvchat.faces.analyze import analyze_video, write_analysis

    out = tmp_path_factory.mktemp("analysis") / "an"
    write_analysis(analyze_video(two_people_video), out)
    return out
