"""The real-weight path, once: the small preset built from the carrier packages' weights.

The carriers are installed by scripts/setup.sh; the first run converts SmolLM2's GGUF once (~20 s)
into the weights cache ($PVCHAT_WEIGHTS, default ~/.cache/pvchat/weights). No accuracy is asserted
here: the base is not aligned yet (README, Status); this checks that the real parts load, fit
together and answer.
"""

import time

import pytest
import torch

from pvchat import weights
from pvchat.model.person_tower import PRESENT
from pvchat.model.presets import get_preset
from pvchat.model.prompt import SYSTEM
from pvchat.model.pvchat import PVChat
from pvchat.video import snippet_indices, to_model_input

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return PVChat.from_config(get_preset("small")).eval()


def test_carriers_resolve_once_and_are_checked():
    first = weights.smollm2()
    t = time.perf_counter()
    assert weights.smollm2() == first and time.perf_counter() - t < 1.0  # converted once, then reused
    assert (first / "config.json").is_file() and (first / weights.STAMP).is_file()
    assert weights.efficientnet_lite0().suffix == ".safetensors"


def test_real_small_preset_reads_a_clip_and_answers(small):
    from pvchat.offline.world.api import make_world
    from pvchat.offline.world.faces import face_split

    assert sum(p.numel() for p in small.llm.parameters()) > 130e6  # SmolLM2-135M, not a tiny stand-in
    tok = small.tokenizer
    ref = tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}],
                                  tokenize=False, add_generation_prompt=True)
    assert small.template.chatml_text("Hi", [], "", 0).replace("<video>" * small.template.G + "\n", "") == ref
    world = make_world(people=3, seed=5, faces=face_split("held_out"), num_frames=16, max_people_per_clip=1)
    frames = world.render_clip(0).frames
    idx = snippet_indices(len(frames), small.config.num_frames, small.frames_per_step)  # 8 steps of 2 frames
    feats = small.encode_video(to_model_input(frames[idx], size=small.vision.image_size)[None])
    assert feats.shape[:2] == (1, 8) and feats[0, :, 4, PRESENT].sum() >= 6  # the person found in most frames
    answer = small.generate(["What is the person wearing?"], vision_features=feats, max_new_tokens=12)[0]
    assert isinstance(answer, str) and answer


def test_the_shipped_alignment_fits_the_model_the_code_builds(small):
    """`pvchat pretrain --install` shipped the small base's alignment (fp16) and its card, which says how
    to rebuild it; it loads into the preset's model as built here."""
    from importlib import resources

    from pvchat.io import read_json
    from pvchat.train.alignment import alignment_state, apply_alignment
    from pvchat.train.stages import shipped_alignment

    state = shipped_alignment("small")
    assert state is not None and any(k.startswith("readout.") for k in state)
    apply_alignment(small, state)
    ours = alignment_state(small)
    assert torch.equal(ours["readout.heads.top.weight"], state["readout.heads.top.weight"].float())
    card = read_json(resources.files("pvchat") / "assets" / "small_alignment.json")
    assert card["command"].startswith("pvchat pretrain") and card["readout"]["accuracy"]["top"] > 0.5
