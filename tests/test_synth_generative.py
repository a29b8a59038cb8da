"""Generative backends on tiny random models of the real architectures (no weights, no network).

PersonalVideo: AnimateDiff (UNetMotionModel = UNet2DConditionModel + MotionAdapter) + AutoencoderKL +
CLIPTextModel + a character-level CLIPTokenizer, saved with save_pretrained and loaded back, and a
tiny IResNet face encoder.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pvchat.errors import ConfigError, InputError
from pvchat.synth.base import ClipRequest, Generator, Identity, get_generator
from pvchat.synth.consisid import FaceCondition
from test_synth_metrics import textured, tiny_clip_tokenizer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run ~10x faster on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_animatediff(tmp_path_factory):
    """A saved AnimateDiff pipeline dir, a MotionAdapter dir and a face encoder dir, all tiny."""
    from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pvchat.synth.pv_face import FaceEncoder, FaceEncoderConfig, save_face_encoder

    root = tmp_path_factory.mktemp("pv")
    torch.manual_seed(0)
    tok = tiny_clip_tokenizer()
    tok.model_max_length = 24
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=24, eos_token_id=1,
                                        bos_token_id=0, pad_token_id=1))
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=4)
    motion = MotionAdapter(block_out_channels=(8, 16), motion_layers_per_block=1,
                           motion_transformer_layers_per_block=1, motion_num_attention_heads=2,
                           motion_norm_num_groups=4, motion_max_seq_length=32, use_motion_mid_block=False)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=32)
    sched = DDIMScheduler(beta_schedule="linear", clip_sample=False, steps_offset=1)
    pipe = AnimateDiffPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, motion_adapter=motion,
                               scheduler=sched)
    pipe.save_pretrained(root / "animatediff")
    motion.save_pretrained(root / "motion")
    from diffusers import StableDiffusionPipeline  # the real layout: an SD1.5 dir + a separate MotionAdapter

    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(root / "sd15")
    enc = FaceEncoder(FaceEncoderConfig(layers=(1, 1, 1, 1), width=4, embedding_dim=16, input_size=32))
    for m in enc.modules():  # BN statistics of random images, so that embeddings are centred and differ
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        enc.train()(torch.rand(64, 3, 32, 32) * 2 - 1)
    save_face_encoder(enc.eval(), root / "face")
    return root


def _options(root, **kw):
    base = dict(model_dir=str(root / "animatediff"), face_encoder_dir=str(root / "face"), face_crop="box",
                face_box=(0.0, 0.0, 1.0, 1.0), rank=4, ti_steps=2, ti_batch=2, sia_steps=2, tune_steps=2,
                tune_frames=2, tune_height=32, tune_width=32, tune_scheduler="lcm", infer_steps=4, guidance=2.0,
                prompts=("{subject} walks in a park",), save_every=1)
    base.update(kw)
    return base


def _identity():
    face = textured(48, 5)
    return Identity(name="anna", faces=[face], gender="female", age="young")


def test_adapter_only_on_spatial_self_attention(tiny_animatediff):
    gen = get_generator("personalvideo", **_options(tiny_animatediff))
    gen.load()
    trainable = [n for n, p in gen.unet.named_parameters() if p.requires_grad]
    assert trainable and set(trainable) == set(gen.adapter_parameters())
    pat = re.compile(r"^(down_blocks|up_blocks)\.\d+\.attentions\.\d+\.transformer_blocks\.\d+\.attn1\.to_[qkv]\.lora_[AB]\."
                     r"|^mid_block\.attentions\.0\.transformer_blocks\.\d+\.attn1\.to_[qkv]\.lora_[AB]\.")
    assert all(pat.match(n) for n in trainable), [n for n in trainable if not pat.match(n)]
    assert not any("motion_modules" in n or "attn2" in n or "to_out" in n for n in trainable)
    # every spatial self-attention q/k/v got one (down, mid and up), none of the temporal ones
    wanted = {n for n, _ in gen.unet.named_modules()
              if re.search(r"\.attentions\.\d+\.transformer_blocks\.\d+\.attn1\.to_[qkv]$", n) and "lora" not in n}
    adapted = {n.split(".lora_")[0] for n in trainable}
    assert adapted == wanted and any(n.startswith("mid_block") for n in adapted)
    assert sum(n.startswith("down_blocks") for n in adapted) and sum(n.startswith("up_blocks") for n in adapted)


def test_tuning_lowers_identity_loss_and_keeps_base_weights(tiny_animatediff):
    from pvchat.synth.personalvideo import PersonalVideoGenerator

    # a toy target: one prompt, one fixed noise, no jitter → a deterministic objective
    gen = PersonalVideoGenerator(**_options(tiny_animatediff, ti_steps=0, sia_steps=10, sia_lr=0.3, l2_weight=0.0,
                                            noise_seeds=1, ref_jitter=0.0, tune_frames=1))
    gen.load()
    frozen = {n: p.detach().clone() for n, p in gen.unet.named_parameters() if ".lora_" not in n}
    gen.tune(_identity())
    losses = [h["loss"] for h in gen.history if h["phase"] == 1]
    assert len(losses) == 10
    assert np.mean(losses[-3:]) < losses[0] - 0.005, losses
    assert all(torch.equal(p, frozen[n]) for n, p in gen.unet.named_parameters() if ".lora_" not in n)
    assert float(gen.adapter_delta_norm().detach()) > 0


def _adapter(gen):
    return {n: p.detach().clone() for n, p in gen.adapter_parameters().items()}


def test_prepare_resumes_and_saves_per_person(tiny_animatediff, tmp_path):
    from pvchat.synth.personalvideo import ADAPTER_FILE, STATE_FILE, PersonalVideoGenerator

    ident = _identity()
    straight = PersonalVideoGenerator(**_options(tiny_animatediff, sia_steps=4))
    straight.load()
    text_before = {n: p.detach().clone() for n, p in straight.text_encoder.named_parameters()}
    straight.tune(ident)
    # textual inversion moved the token away from its init word ("woman") and nothing else of the text encoder
    emb = straight.text_encoder.get_input_embeddings().weight
    init = emb[straight.tokenizer("woman", add_special_tokens=False).input_ids].mean(0)
    assert not torch.allclose(straight.token_vec, init) and [h["phase"] for h in straight.history] == [0, 0, 1, 1, 1, 1]
    assert all(torch.equal(p, text_before[n]) for n, p in straight.text_encoder.named_parameters()
               if n in text_before and p.shape == text_before[n].shape)
    # an interrupted run: TI done, 2 of 4 adapter steps checkpointed
    first = PersonalVideoGenerator(**_options(tiny_animatediff, sia_steps=2))
    first.load()
    first.identity = ident
    first.tune(ident, tmp_path / "personalvideo" / "anna")
    assert (tmp_path / "personalvideo" / "anna" / STATE_FILE).is_file()
    resumed = PersonalVideoGenerator(**_options(tiny_animatediff, sia_steps=4))
    resumed.prepare(ident, tmp_path)
    assert [(h["phase"], h["step"]) for h in resumed.history] == [(1, 2), (1, 3)]
    a, b = _adapter(straight), _adapter(resumed)
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    assert torch.allclose(straight.token_vec, resumed.token_vec, atol=1e-6)
    assert (tmp_path / "personalvideo" / "anna" / ADAPTER_FILE).is_file()
    assert not (tmp_path / "personalvideo" / "anna" / STATE_FILE).exists()
    again = PersonalVideoGenerator(**_options(tiny_animatediff, sia_steps=4))
    again.prepare(ident, tmp_path)  # loads the saved adapter, no tuning
    assert again.history == [] and all(torch.equal(b[n], p) for n, p in _adapter(again).items())
    with pytest.raises(InputError, match="delete it to retune"):
        PersonalVideoGenerator(**_options(tiny_animatediff, rank=2)).prepare(ident, tmp_path)


def test_generate_shapes_and_adapter_off_is_base(tiny_animatediff, tmp_path):
    from diffusers import AnimateDiffPipeline, DDIMScheduler

    from pvchat.synth.personalvideo import adapter_start

    assert adapter_start(25, 0.25) == 19 and adapter_start(4, 0.25) == 3 and adapter_start(4, 0.0) == 4
    gen = get_generator("personalvideo", **_options(tiny_animatediff, sia_steps=3, sia_lr=0.3))
    gen.prepare(_identity(), tmp_path)
    clip = gen.generate(ClipRequest(prompt="{subject} rides a bike", num_frames=3, width=32, height=24 + 8, seed=1))
    assert clip.frames.shape == (3, 32, 32, 3) and clip.frames.dtype == np.uint8 and clip.backend == "personalvideo"
    assert "<anna>" in clip.info["prompt"] and clip.info["adapter_from_step"] == 3
    wide = gen.generate(ClipRequest(num_frames=2, width=48, height=32, seed=2))  # a library prompt
    assert wide.frames.shape == (2, 32, 48, 3) and "<anna>" in wide.info["prompt"]
    with pytest.raises(ConfigError, match="multiples of 4"):
        gen.generate(ClipRequest(num_frames=2, width=30, height=32))
    # adapter off = the base model: same frames as diffusers' own AnimateDiffPipeline
    prompt = "a woman walks"
    off = gen.sample(prompt, 2, 32, 32, seed=4, adapter=False, steps=8)
    on = gen.sample(prompt, 2, 32, 32, seed=4, adapter=True, steps=8)  # adapter in the last 2 of 8 steps
    pipe = AnimateDiffPipeline.from_pretrained(str(tiny_animatediff / "animatediff"))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, beta_schedule="linear", clip_sample=False,
                                               timestep_spacing="linspace", steps_offset=1)  # AnimateDiff's recipe
    latents = gen._noise(2, 32, 32, 4)
    ref = pipe(prompt, num_frames=2, height=32, width=32, num_inference_steps=8, guidance_scale=2.0,
               latents=latents, output_type="np").frames[0]  # (F, H, W, 3) in [0, 1]
    assert np.abs(off.astype(np.float32) - ref * 255).max() <= 1.0
    assert np.abs(on.astype(np.int16) - off).max() > 0


def test_loads_sd15_dir_plus_motion_adapter(tiny_animatediff):
    from diffusers import UNetMotionModel

    gen = get_generator("personalvideo", **_options(tiny_animatediff, model_dir=str(tiny_animatediff / "sd15"),
                                                    motion_adapter_dir=str(tiny_animatediff / "motion")))
    gen.load()
    assert isinstance(gen.unet, UNetMotionModel) and any("motion_modules" in n for n, _ in gen.unet.named_modules())
    assert gen.sample("a man", 2, 32, 32, seed=0, steps=2).shape == (2, 32, 32, 3)
    with pytest.raises(ConfigError, match="no motion modules"):
        get_generator("personalvideo", model_dir=str(tiny_animatediff / "sd15")).load()


def test_missing_weights_are_config_errors(tiny_animatediff, tmp_path):
    with pytest.raises(ConfigError, match="huggingface-cli download"):
        get_generator("personalvideo", model_dir=str(tmp_path / "none")).load()
    with pytest.raises(ConfigError, match="MotionAdapter"):
        get_generator("personalvideo", model_dir=str(tiny_animatediff / "animatediff"),
                      motion_adapter_dir=str(tmp_path)).load()
    gen = get_generator("personalvideo", **_options(tiny_animatediff, face_encoder_dir=None))
    with pytest.raises(ConfigError, match="import_arcface_torch"):
        gen.prepare(_identity())
    with pytest.raises(ConfigError, match="face_crop"):
        get_generator("personalvideo", face_crop="eyes")
    for name in ("personalvideo", "consisid", "liveportrait", "photomaker"):  # constructing loads nothing
        assert isinstance(get_generator(name), Generator) and get_generator(name).name == name
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert get_generator("personalvideo").config.device == get_generator("consisid").config.device == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            get_generator("consisid", device="cuda")


# ---------------------------------------------------------------------------------------- ConsisID


@pytest.fixture(scope="module")
def tiny_consisid(tmp_path_factory):
    """A tiny random ConsisIDPipeline (T5 + CogVideoX VAE + ConsisID transformer with face modules)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, ConsisIDPipeline, ConsisIDTransformer3DModel
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    torch.manual_seed(0)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(ch, -1.0) for ch in "▁abcdefghijklmnopqrstuvwxyz,."]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    text = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4))
    transformer = ConsisIDTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16, use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=True, cross_attn_interval=1, is_kps=False, is_train_face=True,
        cross_attn_dim_head=1, cross_attn_num_heads=1, LFE_id_dim=2, LFE_vit_dim=2, LFE_depth=5, LFE_dim_head=8,
        LFE_num_heads=2, LFE_num_id_token=1, LFE_num_querie=1, LFE_output_dim=21, LFE_ff_mult=1, LFE_num_scale=1)
    vae = AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
                                 up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                 latent_channels=4, layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
    pipe = ConsisIDPipeline(tokenizer=tok, text_encoder=text, vae=vae, transformer=transformer,
                            scheduler=CogVideoXDPMScheduler())
    root = tmp_path_factory.mktemp("consisid")
    pipe.save_pretrained(root)
    return root


def _tiny_condition(face):
    """Stands in for antelopev2 + EVA-CLIP: an ID vector and ViT tokens derived from the face pixels."""
    v = torch.from_numpy(face.astype(np.float32)).mean(dim=(0, 1)) / 255  # (3,)
    return FaceCondition(id_cond=v[:2].view(1, 2), id_vit_hidden=[v[1:].view(1, 1, 2).repeat(1, 2, 1)],
                         image=np.ascontiguousarray(face[:16, :16]))


def test_consisid_generates_from_local_pipeline(tiny_consisid):
    from pvchat.synth.consisid import official_request

    opts = dict(model_dir=str(tiny_consisid), device="cpu", dtype="float32", steps=2, max_sequence_length=16)
    gen = get_generator("consisid", face_conditioner=_tiny_condition, **opts)
    gen.prepare(_identity())
    req = ClipRequest(num_frames=9, width=16, height=16, seed=3)
    clip = gen.generate(req)
    assert clip.frames.shape == (9, 16, 16, 3) and clip.frames.dtype == np.uint8 and clip.backend == "consisid"
    # a library prompt for a young woman, with the official identity sentence
    assert "young woman" in clip.info["prompt"].lower() and "reference image" in clip.info["prompt"]
    assert np.array_equal(gen.generate(req).frames, clip.frames)  # seeded
    other = get_generator("consisid", face_conditioner=_tiny_condition, **opts)
    other.prepare(Identity(name="bo", faces=[255 - _identity().faces[0]], gender="male", age="elderly"))
    assert not np.array_equal(other.generate(ClipRequest(prompt="x", num_frames=9, width=16, height=16, seed=3)).frames,
                              gen.generate(ClipRequest(prompt="x", num_frames=9, width=16, height=16, seed=3)).frames)
    with pytest.raises(ConfigError, match="4k\\+1"):
        gen.generate(ClipRequest(num_frames=8, width=16, height=16))
    off = official_request()
    assert (off.num_frames, off.width, off.height, off.seed) == (49, 720, 480, 42)
    assert gen.config.guidance == 6.0 and get_generator("consisid").config.steps == 50


def test_consisid_missing_weights_and_face_packages(tiny_consisid, tmp_path):
    with pytest.raises(ConfigError, match="BestWishYsh/ConsisID-preview"):
        get_generator("consisid", model_dir=str(tmp_path)).load()
    gen = get_generator("consisid", model_dir=str(tiny_consisid), device="cpu", dtype="float32")
    with pytest.raises(ConfigError, match="insightface|face_encoder"):
        gen.prepare(_identity())  # no face packages / face models here


# ---------------------------------------------------------------------------- LivePortrait / PhotoMaker

FAKE_LIVEPORTRAIT = r'''
import argparse, os, sys
import cv2, numpy as np
p = argparse.ArgumentParser()
p.add_argument("-s"); p.add_argument("-d"); p.add_argument("-o")
p.add_argument("--flag-force-cpu", action="store_true")
a = p.parse_args()
with open(os.path.join(os.path.dirname(__file__), "calls.txt"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n")
if os.path.basename(a.s).startswith("still") and os.environ.get("FAKE_LP_FAIL"):
    print("loading models", flush=True)
    sys.stderr.write("Traceback ...\nRuntimeError: CUDA out of memory\n")
    sys.exit(3)
src = cv2.imread(a.s)
h, w = src.shape[:2]
motion = os.path.splitext(os.path.basename(a.d))[0]
os.makedirs(a.o, exist_ok=True)
stem = os.path.splitext(os.path.basename(a.s))[0] + "--" + motion
for name in (stem + ".mp4", stem + "_concat.mp4"):
    vw = cv2.VideoWriter(os.path.join(a.o, name), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
    for t in range(50):  # 2 s at 25 fps: a nod moves the face down and up, a shake left and right
        d = int(round(6 * np.sin(2 * np.pi * t / 25)))
        m = np.float32([[1, 0, d if motion == "no" else 0], [0, 1, d if motion == "yes" else 0]])
        vw.write(cv2.warpAffine(src, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
    vw.release()
'''

FAKE_PHOTOMAKER = r'''
import argparse, glob, os, sys, zlib
import cv2, numpy as np
p = argparse.ArgumentParser()
for k in ("--ref-dir", "--prompt", "--negative-prompt", "--out", "--seed", "--steps", "--guidance", "--width", "--height"):
    p.add_argument(k)
a = p.parse_args()
with open(os.path.join(os.path.dirname(__file__), "pm_calls.txt"), "a") as f:
    f.write(repr(sys.argv[1:]) + "\n")
refs = [cv2.imread(f) for f in sorted(glob.glob(os.path.join(a.ref_dir, "*.png")))]
assert refs, "no reference faces"
img = cv2.resize(refs[0], (64, 64))
tint = zlib.crc32(a.prompt.encode()) % 60
cv2.imwrite(a.out, np.clip(img.astype(int) + tint, 0, 255).astype(np.uint8))
'''


@pytest.fixture()
def fake_tools(tmp_path):
    repo = tmp_path / "LivePortrait"
    repo.mkdir()
    (repo / "inference.py").write_text(FAKE_LIVEPORTRAIT)
    driving = repo / "assets" / "examples" / "driving"
    driving.mkdir(parents=True)
    for m in ("yes", "no", "query", "angry", "smile"):
        (driving / f"{m}.mp4").write_bytes(b"driving clip")
    pm = tmp_path / "photomaker_wrapper.py"
    pm.write_text(FAKE_PHOTOMAKER)
    return repo, pm


def test_liveportrait_contract_with_fake_install(fake_tools, tmp_path):
    from pvchat.synth.dynamics import dynamic_degree
    from pvchat.synth.external import driving_motion

    repo, _ = fake_tools
    gen = get_generator("liveportrait", repo_dir=str(repo), force_cpu=True)
    face = textured(64, 7)
    gen.prepare(Identity(name="anna", faces=[face]), tmp_path / "work")
    clip = gen.generate(ClipRequest(motion="nod", num_frames=8, fps=8.0))
    assert clip.frames.shape == (8, 64, 64, 3) and clip.info["driving"] == "yes" and clip.backend == "liveportrait"
    assert clip.info["motion"] == "nod"  # pvchat's motion vocabulary
    assert clip.info["output"].endswith("--yes.mp4") and "work/liveportrait/anna" in clip.info["output"]
    assert np.abs(clip.frames[0].astype(int) - face).mean() < 12  # the source, through a lossy codec
    assert dynamic_degree(clip.frames, fps=8).score > dynamic_degree(np.stack([face] * 8), fps=8).score + 1
    calls = (repo / "calls.txt").read_text().splitlines()
    assert len(calls) == 1 and "--flag-force-cpu" in calls[0] and "/yes.mp4" in calls[0]
    gen.generate(ClipRequest(motion="nod", num_frames=4, fps=8.0))  # cached output, no second call
    assert len((repo / "calls.txt").read_text().splitlines()) == 1
    assert gen.generate(ClipRequest(num_frames=4, seed=1)).info["driving"] == "no"
    assert [driving_motion(m) for m in ("shake", "question", "anger", "frown", "smile")] == \
        ["no", "query", "angry", "angry", "smile"]
    with pytest.raises(ConfigError, match="unknown LivePortrait motion"):
        gen.generate(ClipRequest(motion="dance"))


def test_liveportrait_errors(fake_tools, tmp_path, monkeypatch):
    repo, pm = fake_tools
    with pytest.raises(ConfigError, match="KwaiVGI/LivePortrait"):
        get_generator("liveportrait", repo_dir=str(tmp_path / "nothing")).prepare(_identity())
    (repo / "assets/examples/driving/smile.mp4").unlink()
    with pytest.raises(ConfigError, match="smile.mp4"):
        get_generator("liveportrait", repo_dir=str(repo)).prepare(_identity())
    (repo / "assets/examples/driving/smile.mp4").write_bytes(b"x")
    g = get_generator("liveportrait", repo_dir=str(repo), python=str(tmp_path / "no-python"))
    g.prepare(_identity(), tmp_path / "w0")
    with pytest.raises(ConfigError, match="cannot execute"):
        g.generate(ClipRequest(motion="yes"))
    monkeypatch.setenv("FAKE_LP_FAIL", "1")
    gen = get_generator("photomaker", script=str(pm), repo_dir=str(repo))
    gen.prepare(_identity(), tmp_path / "w")
    with pytest.raises(ConfigError, match=r"liveportrait failed \(exit 3\): RuntimeError: CUDA out of memory"):
        gen.generate(ClipRequest(num_frames=4))
    with pytest.raises(ConfigError, match="wrapper script"):
        get_generator("photomaker", script=str(tmp_path / "none.py"), repo_dir=str(repo)).prepare(_identity())


def test_photomaker_stills_then_liveportrait(fake_tools, tmp_path):
    repo, pm = fake_tools
    gen = get_generator("photomaker", script=str(pm), repo_dir=str(repo))
    gen.prepare(_identity(), tmp_path / "w")
    clip = gen.generate(ClipRequest(num_frames=6, fps=8.0, seed=0))
    assert clip.frames.shape == (6, 64, 64, 3) and clip.backend == "photomaker"
    assert "young female img" in clip.info["prompt"] and clip.info["driving"] == "yes"
    args = eval((tmp_path / "pm_calls.txt").read_text().splitlines()[0])
    opts = dict(zip(args[::2], args[1::2]))
    assert opts["--steps"] == "50" and opts["--guidance"] == "5.0" and opts["--seed"] == "0"
    assert len(list(Path(opts["--ref-dir"]).glob("*.png"))) == 1
    custom = gen.generate(ClipRequest(prompt="a woman reading in a library", num_frames=4, seed=7, motion="smile"))
    assert custom.info["prompt"] == "a woman img reading in a library" and custom.info["motion"] == custom.info["driving"] == "smile"
    assert not np.array_equal(custom.frames[0], clip.frames[0])


# ---------------------------------------------------------------------------------- face crop / encoder


def test_differentiable_face_crop_and_alignment():
    import cv2

    from pvchat.synth.pv_face import ARCFACE_TEMPLATE, align_matrix, box_matrix, warp_face

    img = textured(64, 11)
    x = torch.from_numpy(img).float().permute(2, 0, 1)[None].requires_grad_(True)  # (1, 3, 64, 64)
    crop = warp_face(x, box_matrix((16, 8, 48, 40), 32), 32)  # a 32x32 box → 32x32: exact pixels
    assert crop.shape == (1, 3, 32, 32)
    assert torch.allclose(crop[0].permute(1, 2, 0), torch.from_numpy(img[8:40, 16:48]).float(), atol=1e-3)
    crop.sum().backward()
    g = x.grad[0].sum(0)
    assert g[8:40, 16:48].min() > 2.9 and g[:7].abs().max() < 1e-4  # gradients reach the face pixels only
    # the 5-point alignment maps the points onto ArcFace's template, and the warp follows cv2.warpAffine
    pts = ARCFACE_TEMPLATE * 0.5 + np.float32([10, 6])
    m = align_matrix(pts, 112)
    mapped = np.c_[pts, np.ones(5)] @ m.T
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 0.5
    ours = warp_face(torch.from_numpy(img).float().permute(2, 0, 1)[None], m, 112)[0].permute(1, 2, 0).numpy()
    ref = cv2.warpAffine(img, m, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    assert np.abs(ours - ref).mean() < 1.5


def test_torch_face_encoder_for_face_s(tiny_animatediff):
    from pvchat.faces.samples import head
    from pvchat.synth import identity_metrics
    from pvchat.synth.pv_face import load_face_encoder

    enc = load_face_encoder(tiny_animatediff / "face")
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
    with pytest.raises(ConfigError, match="import_arcface_torch"):
        load_face_encoder(tiny_animatediff)
    embed = identity_metrics.torch_face_embedder(tiny_animatediff / "face")
    astro = head("astronaut")
    box, emb = embed(astro)
    assert emb.shape == (16,) and box[2] > box[0]
    s = identity_metrics.face_similarity(np.stack([astro, np.full_like(astro, 80)]), emb[None], embed)
    assert s.face_rate == 0.5 and s.face_cos == pytest.approx(1.0, abs=1e-5)


def test_identity_loss_on_detected_aligned_faces(tiny_animatediff):
    """The default face_crop="detect": dlib landmarks on the detached frame → ArcFace alignment → encoder."""
    import torch.nn.functional as F

    from pvchat.faces.samples import head
    from pvchat.synth.personalvideo import PersonalVideoGenerator
    from pvchat.synth.pv_face import face_matrix_for, five_points

    astro, grace = head("astronaut"), head("grace_hopper")
    gen = PersonalVideoGenerator(face_encoder_dir=str(tiny_animatediff / "face"), face_crop="detect")
    ref = gen.reference_faces(Identity(name="astro", faces=[astro]))  # (1, 3, 32, 32) aligned
    emb = F.normalize(gen._face_encoder()(ref), dim=-1).mean(0)
    _, found = face_matrix_for(astro, 32, "detect")
    assert found and ref.shape == (1, 3, 32, 32)

    def as_frame(img):
        return (torch.from_numpy(img).float().permute(2, 0, 1)[None] / 127.5 - 1).requires_grad_(True)

    same, other = as_frame(astro), as_frame(grace)
    l_same, l_other = gen.identity_loss(same, emb), gen.identity_loss(other, emb)
    assert l_same.item() < 1e-4 < l_other.item()
    l_other.backward()
    assert other.grad.abs().sum() > 0
    from pvchat.faces import FaceEngine

    p5 = five_points(FaceEngine().detect(astro, embed=False)[0].landmarks)
    assert p5[0, 0] < p5[2, 0] < p5[1, 0] and p5[2, 1] < p5[3, 1] and p5[3, 0] < p5[4, 0]  # eyes, nose, mouth


def test_token_embedding_is_the_trained_vector(tiny_animatediff):
    gen = get_generator("personalvideo", **_options(tiny_animatediff))
    gen.load()
    gen.identity = _identity()
    gen._ensure_token(gen.identity)
    with torch.no_grad():
        gen.token_vec.fill_(3.0)
        ids = gen.tokenizer(["a <anna> woman"], return_tensors="pt").input_ids
        rows = gen.text_encoder.get_input_embeddings()(ids)[0]  # (L, D)
    where = (ids[0] == gen.token_id).nonzero()[:, 0]
    assert len(where) == 1 and torch.all(rows[where] == 3.0) and not torch.any(rows[ids[0] != gen.token_id] == 3.0)


def test_bfloat16_models_with_float32_adapter(tiny_animatediff):
    gen = get_generator("personalvideo", **_options(tiny_animatediff, ti_steps=1, sia_steps=2, dtype="bfloat16"))
    gen.tune(_identity())
    assert gen.unet.conv_in.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in gen.adapter_parameters().values())
    assert all(np.isfinite(h["loss"]) for h in gen.history) and len(gen.history) == 3
    assert gen.sample("a man", 2, 32, 32, seed=0, steps=4).shape == (2, 32, 32, 3)


def test_tuning_on_a_separate_fast_model_transfers_the_adapter(tiny_animatediff):
    """tune_model_dir (AnimateLCM in the paper) is tuned on; the adapter lands on the inference UNet."""
    plain = get_generator("personalvideo", **_options(tiny_animatediff, ti_steps=0, sia_steps=2, sia_lr=0.1))
    plain.tune(_identity())
    split = get_generator("personalvideo", **_options(
        tiny_animatediff, ti_steps=0, sia_steps=2, sia_lr=0.1, tune_model_dir=str(tiny_animatediff / "sd15"),
        tune_motion_adapter_dir=str(tiny_animatediff / "motion")))
    split.tune(_identity())
    assert split.tuning_unet() is not split.infer_unet and split.unet is split.infer_unet
    a, b = _adapter(plain), _adapter(split)  # same weights in both models here → the same adapter
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a) and any(v.abs().sum() > 0 for k, v in b.items() if "lora_B" in k)
    tuned = {n: p for n, p in split.tuning_unet().named_parameters() if ".lora_" in n}
    assert all(torch.equal(tuned[n], p) for n, p in split.infer_unet.named_parameters() if ".lora_" in n)
