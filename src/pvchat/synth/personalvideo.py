"""PersonalVideo backend: a Spatial Identity Adapter tuned by an identity loss on generated videos.

PersonalVideo (papers/personalvideo-paper.txt; research/generators.md §1) personalises a
text-to-video model — AnimateDiff motion modules on a Stable Diffusion 1.5 UNet — without
reconstructing the reference:

1. **Textual inversion** (§4.4, step 1): a new token ``<name>`` is learnt with the video model
   frozen (noise-prediction loss on the reference face shown as a still clip; lr 1e-3, batch 4).
2. **Spatial Identity Adapter** (§4.2, Eq. 3): LoRA ``W + A_down A_up`` on the query, key and value
   of the *spatial self-attention* (``attentions.*.transformer_blocks.*.attn1.to_{q,k,v}``), never the
   cross-attention nor the motion modules. It is trained (§4.1, Eq. 2 and 4) on videos sampled from
   pure noise with a few-step sampler (4 steps; AnimateLCM in the paper): the first steps run
   without the adapter and without gradients, the **last step** with the adapter; the predicted
   clean latents of one random frame are decoded, the face is cropped differentiably and embedded
   by a PyTorch face encoder, and the loss is ``1 − cos(φ(ref), φ(frame)) + λ‖ΔW‖²``.
3. **Simulated prompt augmentation** (§4.3): one prompt of a set (50 in the paper; here drawn from
   pvchat's prompt library by gender and age) is sampled per step.
4. **Inference** (§4.4, A.1): DDIM, 25 steps, CFG 7.5, 16 frames; the adapter is active only in the
   **final quarter** of the steps.

The paper tunes with AnimateLCM's 4-step sampler and reports 25-step DDIM inference (whether for
PersonalVideo itself or only its baselines is unclear; research/generators.md §1.2). Here the
adapter can be tuned on an AnimateLCM model and used on the AnimateDiff one — it transfers because
both share the SD1.5 spatial layers. Build the tuning model once with diffusers and point
``tune_model_dir`` at it::

    pipe = AnimateDiffPipeline.from_pretrained(SD15_DIR, motion_adapter=MotionAdapter.from_pretrained(ANIMATELCM_DIR))
    pipe.load_lora_weights(ANIMATELCM_DIR, weight_name="AnimateLCM_sd15_t2v_lora.safetensors", adapter_name="lcm")
    pipe.fuse_lora(lora_scale=0.8); pipe.unload_lora_weights(); pipe.save_pretrained(TUNE_DIR)

The face encoder (ArcFace R100 / Glint360K in the paper) is a local directory made by
:func:`pvchat.synth.pv_face.import_arcface_torch` from arcface_torch's ``backbone.pth``.

Everything loads with ``from_pretrained(local_dir)``. Tuning is resumable: the token, the adapter
and the optimizer moments are saved to ``workdir/personalvideo/<name>/state.safetensors`` every
``save_every`` steps, and the finished adapter to ``adapter.safetensors`` beside it.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from tqdm.auto import tqdm

from pvchat.errors import ConfigError, InputError
from pvchat.io import load_tensors, save_tensors
from pvchat.synth.base import ClipRequest, GeneratedClip, Identity
from pvchat.synth.prompts import PromptLibrary, subject_words
from pvchat.synth.pv_face import box_matrix, color_jitter, face_matrix_for, load_face_encoder, warp_face

# PEFT matches target_modules strings against the full module name.
SIA_TARGETS = r"(.*\.)?attentions\.\d+\.transformer_blocks\.\d+\.attn1\.to_(q|k|v)"
ADAPTER_NAME = "identity"
STATE_FILE = "state.safetensors"
ADAPTER_FILE = "adapter.safetensors"
TI_TEMPLATES = ("a photo of {s}", "a close-up photo of {s}", "a portrait of {s}", "a video of {s}")
DOWNLOAD_HINT = (
    "download a diffusers AnimateDiff setup, e.g. SG161222/Realistic_Vision_V5.1_noVAE to model_dir and "
    "guoyww/animatediff-motion-adapter-v1-5-3 to motion_adapter_dir (huggingface-cli download ID --local-dir DIR)"
)


@dataclass
class PersonalVideoConfig:
    """PersonalVideo settings (paper values as defaults where the paper gives them).

    Attributes:
        model_dir: a diffusers SD1.5 pipeline dir (with ``motion_adapter_dir``) or a saved AnimateDiff pipeline.
        motion_adapter_dir: a diffusers ``MotionAdapter`` dir (AnimateDiff motion modules).
        tune_model_dir, tune_motion_adapter_dir: the few-step model the adapter is tuned on (AnimateLCM,
            same SD base; see the module docstring); None tunes on the inference model.
        face_encoder_dir: the PyTorch face encoder (pv_face format; ArcFace R100 in the paper).
        face_crop: "detect" (dlib landmarks → ArcFace alignment) or "box" (``face_box`` always).
        face_box: fallback face box as fractions (x0, y0, x1, y1) of the frame.
        rank: LoRA rank of the adapter (not given by the paper).
        alpha: LoRA alpha (None → rank).
        l2_weight: λ of Eq. 4 on ‖ΔW‖² (not given by the paper).
        ti_steps, ti_lr, ti_batch: textual inversion (paper: ~400 steps, 1e-3, batch 4).
        sia_steps, sia_lr, weight_decay: adapter tuning (paper: 400 steps, 1e-4, AdamW wd 1e-2).
        tune_scheduler: "lcm" or "ddim" few-step sampler while tuning.
        tune_steps: denoising steps while tuning (paper: 4; the adapter is on in the last one).
        tune_frames, tune_height, tune_width, tune_guidance: the clips sampled while tuning.
        infer_steps, guidance: DDIM steps and CFG at inference (paper: 25, 7.5).
        beta_schedule, timestep_spacing: scheduler overrides (AnimateDiff's motion modules and AnimateLCM
            use a "linear" beta schedule, not SD1.5's "scaled_linear"; None keeps the model's).
        adapter_fraction: final fraction of inference steps with the adapter (paper: 0.25).
        num_prompts: simulated prompts drawn from the prompt library (paper: 50).
        prompts: explicit simulated prompts (``{subject}`` slot) instead of the library.
        init_word: word whose embedding initialises the token (None → man / woman / person).
        ref_jitter: colour-jitter strength on the reference faces (§4.1).
        noise_seeds: 0 draws fresh noise every adapter step; n > 0 cycles through n fixed noises
            (with one prompt this makes the objective deterministic: an overfitting check).
        gradient_checkpointing: recompute UNet activations in the backward of the adapter step
            (the last step sees all frames at full size; this is what makes 16×512² fit).
        save_every: checkpoint period in steps.
        seed: tuning seed.
        device, dtype: torch device ("auto": cuda when available) and dtype of the frozen models.
    """

    model_dir: str | None = None
    motion_adapter_dir: str | None = None
    tune_model_dir: str | None = None
    tune_motion_adapter_dir: str | None = None
    face_encoder_dir: str | None = None
    face_crop: str = "detect"
    face_box: tuple[float, float, float, float] = (0.25, 0.1, 0.75, 0.6)
    rank: int = 8
    alpha: float | None = None
    l2_weight: float = 1e-2
    ti_steps: int = 400
    ti_lr: float = 1e-3
    ti_batch: int = 4
    sia_steps: int = 400
    sia_lr: float = 1e-4
    weight_decay: float = 1e-2
    tune_scheduler: str = "lcm"
    tune_steps: int = 4
    tune_frames: int = 16
    tune_height: int = 512
    tune_width: int = 512
    tune_guidance: float = 1.0
    infer_steps: int = 25
    guidance: float = 7.5
    beta_schedule: str | None = "linear"
    timestep_spacing: str | None = "linspace"
    adapter_fraction: float = 0.25
    num_prompts: int = 50
    prompts: tuple[str, ...] | None = None
    init_word: str | None = None
    ref_jitter: float = 0.1
    noise_seeds: int = 0
    gradient_checkpointing: bool = True
    save_every: int = 50
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self):
        self.device = resolve_device(self.device, "personalvideo")
        if self.face_crop not in ("detect", "box"):
            raise ConfigError(f"face_crop must be detect or box, got {self.face_crop!r}")
        if self.tune_scheduler not in ("lcm", "ddim"):
            raise ConfigError(f"tune_scheduler must be lcm or ddim, got {self.tune_scheduler!r}")
        if not 0.0 <= self.adapter_fraction <= 1.0:
            raise ConfigError(f"adapter_fraction must be in [0, 1], got {self.adapter_fraction}")
        if self.rank < 1 or self.tune_steps < 1 or self.infer_steps < 1:
            raise ConfigError("rank, tune_steps and infer_steps must be >= 1")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}")


def resolve_device(device: str, who: str) -> str:
    """"auto" → "cuda" when available else "cpu"; an unavailable CUDA device is a ConfigError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{who}: device {device!r} asked for but no CUDA GPU is available (use device='cpu')")
    return device


def adapter_start(num_steps: int, fraction: float) -> int:
    """First step index (0-based) with the adapter on: the final ``fraction`` of ``num_steps``."""
    return num_steps - int(round(fraction * num_steps)) if fraction > 0 else num_steps


def insert_token(words: str, token: str) -> str:
    """Put the identity token before the class noun: "a young woman" → "a young <anna> woman"."""
    parts = words.split()
    return " ".join(parts[:-1] + [token, parts[-1]]) if parts else token


class PersonalVideoGenerator:
    """The ``personalvideo`` backend (see the module docstring). Options are :class:`PersonalVideoConfig` fields."""

    name = "personalvideo"

    def __init__(self, **options: Any):
        self.config = PersonalVideoConfig(**options)
        self._loaded = False
        self.identity: Identity | None = None
        self.token: str | None = None
        self.token_id: int | None = None
        self.token_vec: torch.nn.Parameter | None = None
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        """Load the frozen AnimateDiff components from the local directories (once)."""
        if self._loaded:
            return
        c = self.config
        pipe = self._load_pipe(c.model_dir, c.motion_adapter_dir)
        dtype = getattr(torch, c.dtype)
        self.vae = pipe.vae.to(c.device, dtype).eval().requires_grad_(False)
        self.text_encoder = pipe.text_encoder.to(c.device, dtype).eval().requires_grad_(False)
        self.tokenizer = pipe.tokenizer
        self.scheduler_config = dict(pipe.scheduler.config)
        self.unet = self.infer_unet = self._prepare_unet(pipe.unet)
        self._tune_unet = None
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.size_multiple = self.vae_scale * 2 ** (len(self.unet.config.block_out_channels) - 1)
        self.max_length = int(self.text_encoder.config.max_position_embeddings)
        self._hook_embeddings()
        self._loaded = True

    @staticmethod
    def _load_pipe(model_dir: str | None, motion_adapter_dir: str | None):
        """An ``AnimateDiffPipeline`` from a saved AnimateDiff dir, or an SD1.5 dir + a MotionAdapter dir."""
        if not model_dir or not Path(model_dir).expanduser().is_dir():
            raise ConfigError(f"personalvideo: model_dir {model_dir!r} is not a directory; {DOWNLOAD_HINT}")
        if motion_adapter_dir and not (Path(motion_adapter_dir).expanduser() / "config.json").is_file():
            raise ConfigError(f"personalvideo: no MotionAdapter at {motion_adapter_dir}; {DOWNLOAD_HINT}")
        index = Path(model_dir).expanduser() / "model_index.json"
        if not index.is_file():
            raise ConfigError(f"personalvideo: no model_index.json in {model_dir}; {DOWNLOAD_HINT}")
        unet_cls = (json.loads(index.read_text()).get("unet") or [None, None])[1]
        if not motion_adapter_dir and unet_cls != "UNetMotionModel":
            # diffusers would silently add *random* motion modules here
            raise ConfigError(f"personalvideo: {model_dir} has no motion modules; set motion_adapter_dir. {DOWNLOAD_HINT}")
        from diffusers import AnimateDiffPipeline, MotionAdapter  # optional (pvchat[gen]): diffusers

        kwargs: dict[str, Any] = {}
        if motion_adapter_dir:
            kwargs["motion_adapter"] = MotionAdapter.from_pretrained(str(Path(motion_adapter_dir).expanduser()))
        try:
            return AnimateDiffPipeline.from_pretrained(str(Path(model_dir).expanduser()), **kwargs)
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"personalvideo: cannot load {model_dir} ({str(e).splitlines()[0]}); {DOWNLOAD_HINT}") from None

    def _prepare_unet(self, unet):
        """Frozen, on device, checkpointed, with the (off) identity adapter added."""
        c = self.config
        unet = unet.to(c.device, getattr(torch, c.dtype)).eval().requires_grad_(False)
        if c.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self._add_adapter(unet)
        return unet

    def tuning_unet(self):
        """The UNet the adapter is tuned on: ``tune_model_dir`` (AnimateLCM) if set, else the inference one."""
        c = self.config
        if not c.tune_model_dir:
            return self.infer_unet
        if self._tune_unet is None:
            pipe = self._load_pipe(c.tune_model_dir, c.tune_motion_adapter_dir)
            self._tune_unet = self._prepare_unet(pipe.unet)
        return self._tune_unet

    @staticmethod
    def _copy_adapter(src, dst) -> None:
        """Copy the identity adapter between two UNets of the same architecture (same parameter names)."""
        params = {n: p for n, p in src.named_parameters() if ".lora_" in n}
        with torch.no_grad():
            for n, p in dst.named_parameters():
                if ".lora_" in n:
                    p.copy_(params[n])

    def _hook_embeddings(self) -> None:
        """(Re-)attach the token hook to the current input embeddings (a resize replaces the module)."""
        if getattr(self, "_hook", None) is not None:
            self._hook.remove()
        self._hook = self.text_encoder.get_input_embeddings().register_forward_hook(self._token_hook)

    def _add_adapter(self, unet) -> None:
        """Eq. 3: LoRA on q/k/v of the spatial self-attention only (motion modules untouched)."""
        c = self.config
        cfg = LoraConfig(r=c.rank, lora_alpha=c.alpha or c.rank, target_modules=SIA_TARGETS, lora_dropout=0.0,
                         init_lora_weights=True)
        with torch.random.fork_rng(devices=[]):  # A's random init depends on the seed only
            torch.manual_seed(c.seed)
            unet.add_adapter(cfg, adapter_name=ADAPTER_NAME)
        for n, p in unet.named_parameters():
            if ".lora_" in n:
                p.data = p.data.float()
        self.set_adapter(False, unet)

    def set_adapter(self, on: bool, unet=None) -> None:
        """Switch the adapter on or off; its parameters stay trainable either way (PEFT's switch
        would freeze them when off)."""
        unet = self.unet if unet is None else unet
        (unet.enable_adapters if on else unet.disable_adapters)()
        for n, p in unet.named_parameters():
            p.requires_grad_(".lora_" in n)

    def adapter_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The adapter's trainable parameters by name."""
        return {n: p for n, p in self.unet.named_parameters() if ".lora_" in n}

    def adapter_delta_norm(self) -> torch.Tensor:
        """Σ‖ΔW‖² = Σ‖scale·B·A‖² over adapted layers (the weight-space penalty of Eq. 4)."""
        total = torch.zeros((), device=self.config.device)
        for m in self.unet.modules():
            if isinstance(m, LoraLayer) and ADAPTER_NAME in m.lora_A:
                delta = m.lora_B[ADAPTER_NAME].weight @ m.lora_A[ADAPTER_NAME].weight  # (out, in)
                total = total + (m.scaling[ADAPTER_NAME] * delta).pow(2).sum()
        return total

    def _token_hook(self, module, args, output):
        """Replace the identity token's embedding row by the trainable vector (textual inversion)."""
        if self.token_vec is None:
            return output
        mask = (args[0] == self.token_id).unsqueeze(-1)  # (B, L, 1)
        return torch.where(mask, self.token_vec.to(output.dtype), output)

    def _ensure_token(self, identity: Identity) -> None:
        token = f"<{re.sub(r'[^A-Za-z0-9_-]+', '_', identity.name)}>"
        if self.token == token:
            return
        self.tokenizer.add_tokens([token])
        self.token_id = self.tokenizer.convert_tokens_to_ids(token)
        emb = self.text_encoder.get_input_embeddings()
        if self.token_id >= emb.weight.shape[0]:
            self.text_encoder.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
            emb = self.text_encoder.get_input_embeddings()
            self._hook_embeddings()
        word = self.config.init_word or {"male": "man", "female": "woman"}.get(identity.gender or "", "person")
        ids = self.tokenizer(word, add_special_tokens=False).input_ids or [self.token_id - 1]
        init = emb.weight[ids].detach().float().mean(0)
        self.token, self.token_vec = token, torch.nn.Parameter(init.clone())

    # ------------------------------------------------------------------ text, prompts, sampling

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompts → (B, L, D) CLIP text hidden states (the identity token uses ``token_vec``)."""
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt").input_ids.to(self.config.device)
        return self.text_encoder(ids).last_hidden_state

    def subject_words(self) -> str:
        ident = self.identity
        words = subject_words(ident.gender, ident.age) if ident else "a person"
        return insert_token(words, self.token) if self.token else words

    def simulated_prompts(self) -> list[str]:
        """§4.3: the prompt set sampled from during tuning, with the token in the subject slot."""
        c = self.config
        words = self.subject_words()
        if c.prompts:
            return [p.replace("{subject}", words) if "{subject}" in p else f"{words}, {p}" for p in c.prompts]
        lib = PromptLibrary.load()
        ident = self.identity
        entries = lib.sample_many(c.num_prompts, ident.gender if ident else None, ident.age if ident else None, rng=c.seed)
        return [lib.render(e, words) for e in entries]

    def _scheduler(self, kind: str):
        from diffusers import DDIMScheduler, LCMScheduler  # optional (pvchat[gen]): diffusers

        c = self.config
        overrides: dict[str, Any] = {"clip_sample": False}
        if c.beta_schedule:
            overrides["beta_schedule"] = c.beta_schedule
        if c.timestep_spacing and kind == "ddim":
            overrides.update(timestep_spacing=c.timestep_spacing, steps_offset=1)
        cls = LCMScheduler if kind == "lcm" else DDIMScheduler
        return cls.from_config({**self.scheduler_config, **overrides})

    def _eps(self, latents: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """CFG noise prediction. latents (B, C, F, h, w); cond (B, L, D) repeated per frame for the UNet."""
        frames = latents.shape[2]
        if uncond is None or guidance == 1.0:
            return self.unet(latents, t, encoder_hidden_states=cond.repeat_interleave(frames, 0)).sample
        both = torch.cat([uncond, cond]).repeat_interleave(frames, 0)
        e_u, e_c = self.unet(torch.cat([latents, latents]), t, encoder_hidden_states=both).sample.chunk(2)
        return e_u + guidance * (e_c - e_u)

    def _check_size(self, height: int, width: int) -> None:
        m = self.size_multiple
        if height % m or width % m:
            raise ConfigError(f"personalvideo: height and width must be multiples of {m}, got {height}x{width}")

    def _noise(self, frames: int, height: int, width: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(seed))
        shape = (1, self.unet.config.in_channels, frames, height // self.vae_scale, width // self.vae_scale)
        return torch.randn(shape, generator=g).to(self.config.device, self.unet.dtype)  # (1, C, F, h, w)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(1, C, F, h, w) latents → (F, 3, H, W) images in [-1, 1]."""
        z = latents[0].permute(1, 0, 2, 3) / self.vae.config.scaling_factor  # (F, C, h, w)
        return self.vae.decode(z).sample.float()

    @torch.no_grad()
    def sample(self, prompt: str, num_frames: int = 16, height: int = 512, width: int = 512, seed: int = 0,
               adapter: bool = True, steps: int | None = None, guidance: float | None = None,
               negative_prompt: str = "") -> np.ndarray:
        """A clip (F, H, W, 3) uint8: DDIM with CFG, the adapter on in the final ``adapter_fraction`` of steps."""
        self.load()
        self._check_size(height, width)
        c = self.config
        steps = steps or c.infer_steps
        guidance = c.guidance if guidance is None else guidance
        sched = self._scheduler("ddim")
        sched.set_timesteps(steps, device=c.device)
        cond = self.encode_text([prompt])
        uncond = self.encode_text([negative_prompt]) if guidance != 1.0 else None
        latents = self._noise(num_frames, height, width, seed) * sched.init_noise_sigma
        start = adapter_start(len(sched.timesteps), c.adapter_fraction) if adapter else len(sched.timesteps)
        try:
            for i, t in enumerate(sched.timesteps):
                self.set_adapter(i >= start)
                eps = self._eps(sched.scale_model_input(latents, t), t, cond, uncond, guidance)
                latents = sched.step(eps, t, latents).prev_sample
        finally:
            self.set_adapter(False)
        video = self.decode(latents)  # (F, 3, H, W)
        return ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()

    # ------------------------------------------------------------------ identity loss

    def _face_encoder(self):
        if getattr(self, "_fenc", None) is None:
            if not self.config.face_encoder_dir:
                raise ConfigError("personalvideo: set face_encoder_dir (an ArcFace R100 converted with "
                                  "pvchat.synth.pv_face.import_arcface_torch) to tune the identity adapter")
            self._fenc = load_face_encoder(self.config.face_encoder_dir).to(self.config.device)
        return self._fenc

    def reference_faces(self, identity: Identity) -> torch.Tensor:
        """(R, 3, S, S) reference faces in [-1, 1], aligned like generated faces when a face is found."""
        size = self._face_encoder().config.input_size
        out = []
        for face in identity.faces:
            img = torch.from_numpy(np.ascontiguousarray(face)).float().permute(2, 0, 1)[None] / 127.5 - 1
            m, found = face_matrix_for(face, size, self.config.face_crop, self.config.face_box)
            if not found:  # a face crop: use all of it
                m = box_matrix((0, 0, face.shape[1], face.shape[0]), size)
            out.append(warp_face(img, m, size))
        return torch.cat(out).to(self.config.device)

    def identity_loss(self, frame: torch.Tensor, ref_embedding: torch.Tensor) -> torch.Tensor:
        """Eq. 2: 1 − cos(φ(ref), φ(face of frame)). frame (1, 3, H, W) in [-1, 1] with gradients."""
        enc = self._face_encoder()
        size = enc.config.input_size
        detached = ((frame[0].detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        m, _ = face_matrix_for(detached, size, self.config.face_crop, self.config.face_box)
        emb = enc(warp_face(frame.float(), m, size))  # (1, D)
        return 1 - F.cosine_similarity(emb, ref_embedding.view(1, -1)).mean()

    # ------------------------------------------------------------------ tuning

    def _state_dir(self, workdir: Path | None) -> Path | None:
        return None if workdir is None else Path(workdir) / "personalvideo" / self.identity.name

    def _save(self, path: Path, phase_steps: tuple[int, int], opt: torch.optim.Optimizer | None = None) -> None:
        tensors = {"token": self.token_vec.detach()}
        tensors.update({f"adapter.{n}": p.detach() for n, p in self.adapter_parameters().items()})
        if opt is not None:
            for i, p in enumerate(opt.param_groups[0]["params"]):
                for k, v in opt.state.get(p, {}).items():
                    tensors[f"opt.{i}.{k}"] = v.detach().reshape(-1) if k == "step" else v.detach()
        meta = {"token": self.token, "ti_step": str(phase_steps[0]), "sia_step": str(phase_steps[1]),
                "config": repr(sorted((k, v) for k, v in asdict(self.config).items() if k not in ("device", "save_every")))}
        save_tensors(path, tensors, metadata=meta)

    def _load(self, path: Path) -> tuple[tuple[int, int], dict[str, torch.Tensor]]:
        tensors = load_tensors(path)
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("token") != self.token:
            raise InputError(f"{path}: adapter for {meta.get('token')!r}, not {self.token!r}")
        with torch.no_grad():
            self.token_vec.copy_(tensors["token"])
            params = self.adapter_parameters()
            for n, p in params.items():
                saved = tensors.get(f"adapter.{n}")
                if saved is None or saved.shape != p.shape:
                    raise InputError(f"{path}: adapter does not match the model or rank ({n}); delete it to retune")
                p.copy_(saved)
        return (int(meta.get("ti_step", 0)), int(meta.get("sia_step", 0))), tensors

    @staticmethod
    def _restore_opt(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
        for i, p in enumerate(opt.param_groups[0]["params"]):
            st = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
            if st:
                st["step"] = st["step"].reshape(())
                opt.state[p] = st

    def prepare(self, identity: Identity, workdir: Path | None = None) -> None:
        """Textual inversion, then the Spatial Identity Adapter (resumable through ``workdir``)."""
        self.load()
        self.identity = identity
        self._ensure_token(identity)
        sdir = self._state_dir(workdir)
        if sdir is not None and (sdir / ADAPTER_FILE).is_file():
            self._load(sdir / ADAPTER_FILE)
            return
        done, tensors = (0, 0), {}
        if sdir is not None and (sdir / STATE_FILE).is_file():
            done, tensors = self._load(sdir / STATE_FILE)
        self.tune(identity, sdir, done, tensors)
        if sdir is not None:
            self._save(sdir / ADAPTER_FILE, (self.config.ti_steps, self.config.sia_steps))
            (sdir / STATE_FILE).unlink(missing_ok=True)

    def tune(self, identity: Identity, state_dir: Path | None = None, done: tuple[int, int] = (0, 0),
             tensors: dict[str, torch.Tensor] | None = None) -> list[dict[str, float]]:
        """Run the two tuning steps from ``done`` = (TI steps, SIA steps); returns per-step losses."""
        c = self.config
        self.load()
        self.identity = identity
        self._ensure_token(identity)
        self._check_size(c.tune_height, c.tune_width)
        total = c.ti_steps + c.sia_steps
        bar = tqdm(total=total, initial=sum(done), desc=f"personalvideo {identity.name}", unit="step",
                   disable=total == 0)
        ti_done, sia_done = done
        if ti_done < c.ti_steps:
            opt = torch.optim.AdamW([self.token_vec], lr=c.ti_lr, weight_decay=c.weight_decay)
            if tensors and sia_done == 0:
                self._restore_opt(opt, tensors)
            for step in range(ti_done, c.ti_steps):
                loss = self._ti_step(identity, step, opt)
                self.history.append({"phase": 0, "step": step, "loss": loss})
                bar.update(1)
                bar.set_postfix(ti=f"{loss:.4f}")
                if state_dir is not None and (step + 1) % c.save_every == 0:
                    self._save(state_dir / STATE_FILE, (step + 1, 0), opt)
            tensors = None
        if sia_done < c.sia_steps:
            tune_unet = self.tuning_unet()  # the fast (AnimateLCM) model when configured
            if tune_unet is not self.infer_unet:
                self._copy_adapter(self.infer_unet, tune_unet)
            self.unet = tune_unet
            try:
                params = list(self.adapter_parameters().values())
                opt = torch.optim.AdamW(params, lr=c.sia_lr, weight_decay=c.weight_decay, betas=(0.9, 0.999), eps=1e-8)
                if tensors:
                    self._restore_opt(opt, tensors)
                ref = self.reference_faces(identity)
                prompts = self.simulated_prompts()
                for step in range(sia_done, c.sia_steps):
                    l_id, l_reg = self._sia_step(step, opt, ref, prompts)
                    self.history.append({"phase": 1, "step": step, "loss": l_id, "reg": l_reg})
                    bar.update(1)
                    bar.set_postfix(id=f"{l_id:.4f}")
                    if state_dir is not None and (step + 1) % c.save_every == 0:
                        self._save(state_dir / STATE_FILE, (c.ti_steps, step + 1), opt)
            finally:
                if tune_unet is not self.infer_unet:
                    self._copy_adapter(tune_unet, self.infer_unet)
                self.unet = self.infer_unet
        bar.close()
        return self.history

    def _ti_step(self, identity: Identity, step: int, opt: torch.optim.Optimizer) -> float:
        """Textual inversion (Gal et al.): noise-prediction loss on reference stills, only the token trains."""
        c = self.config
        g = torch.Generator().manual_seed(c.seed * 1_000_003 + step)
        rng = random.Random(c.seed * 7919 + step)
        sched = self._scheduler("ddim")
        pool = identity.frames or identity.faces
        imgs = [cv2.resize(pool[rng.randrange(len(pool))], (c.tune_width, c.tune_height), interpolation=cv2.INTER_AREA)
                for _ in range(c.ti_batch)]
        x = torch.from_numpy(np.stack(imgs)).float().permute(0, 3, 1, 2).div(127.5).sub(1).to(c.device, self.vae.dtype)
        with torch.no_grad():
            z = self.vae.encode(x).latent_dist.sample(g) * self.vae.config.scaling_factor  # (B, C, h, w)
        z = z.unsqueeze(2)  # (B, C, 1, h, w): a one-frame still video
        noise = torch.randn(z.shape, generator=g).to(z)
        t = torch.randint(0, sched.config.num_train_timesteps, (z.shape[0],), generator=g).to(c.device)
        noisy = sched.add_noise(z, noise, t)
        words = self.subject_words()
        cond = self.encode_text([rng.choice(TI_TEMPLATES).format(s=words) for _ in range(c.ti_batch)])
        pred = self.unet(noisy, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred.float(), noise.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def _sia_step(self, step: int, opt: torch.optim.Optimizer, ref_faces: torch.Tensor, prompts: list[str]) -> tuple[float, float]:
        """One adapter step (Eq. 4): sample from noise, adapter only in the last step, ID loss + λ‖ΔW‖²."""
        c = self.config
        g = torch.Generator().manual_seed(c.seed * 1_000_003 + 500_009 + step)
        rng = random.Random(c.seed * 104_729 + step)
        prompt = rng.choice(prompts)
        sched = self._scheduler(c.tune_scheduler)
        sched.set_timesteps(c.tune_steps, device=c.device)
        noise_seed = c.seed * 1_000_003 + step % c.noise_seeds if c.noise_seeds else int(torch.randint(0, 2**31, (1,), generator=g))
        latents = self._noise(c.tune_frames, c.tune_height, c.tune_width, noise_seed)
        latents = latents * sched.init_noise_sigma
        step_noise = torch.Generator().manual_seed(noise_seed)  # LCM re-noises between steps
        with torch.no_grad():
            cond = self.encode_text([prompt])
            uncond = self.encode_text([""]) if c.tune_guidance != 1.0 else None
            ref = self._face_encoder()(color_jitter(ref_faces, g, c.ref_jitter) if c.ref_jitter else ref_faces)  # (R, D)
            ref = F.normalize(ref, dim=-1).mean(0)
            self.set_adapter(False)
            for t in sched.timesteps[:-1]:
                eps = self._eps(sched.scale_model_input(latents, t), t, cond, uncond, c.tune_guidance)
                latents = sched.step(eps, t, latents, generator=step_noise).prev_sample
        t = sched.timesteps[-1]
        self.set_adapter(True)  # the last step only, with gradients
        try:
            eps = self._eps(sched.scale_model_input(latents, t), t, cond, uncond, c.tune_guidance)
            a = sched.alphas_cumprod.to(c.device)[int(t)]
            x0 = ((latents - (1 - a).sqrt() * eps) / a.sqrt()).to(self.vae.dtype)  # (1, C, F, h, w) predicted clean latents
            i = rng.randrange(c.tune_frames)
            frame = self.vae.decode(x0[:, :, i] / self.vae.config.scaling_factor).sample  # (1, 3, H, W)
            l_id = self.identity_loss(frame, ref)
            l_reg = self.adapter_delta_norm()
            loss = l_id + c.l2_weight * l_reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        finally:
            self.set_adapter(False)
        return float(l_id.detach()), float(l_reg.detach())

    # ------------------------------------------------------------------ generation

    def prompt_for(self, request: ClipRequest) -> str:
        """The request's prompt with the identity token in the subject slot (a library prompt if none)."""
        words = self.subject_words()
        if request.prompt:
            p = request.prompt
            if "{subject}" in p:
                return p.replace("{subject}", words)
            return p if self.token and self.token in p else f"{words}, {p}"
        lib = PromptLibrary.load()
        ident = self.identity
        return lib.render(lib.sample(ident.gender, ident.age, rng=request.seed), words)

    def generate(self, request: ClipRequest) -> GeneratedClip:
        """One clip of the prepared identity (DDIM, CFG, adapter in the final quarter of steps)."""
        if self.identity is None:
            raise ConfigError("personalvideo: call prepare(identity) before generate()")
        prompt = self.prompt_for(request)
        frames = self.sample(prompt, request.num_frames, request.height, request.width, request.seed)
        c = self.config
        return GeneratedClip(frames=frames, fps=request.fps, request=request, backend=self.name,
                             info={"prompt": prompt, "steps": c.infer_steps, "guidance": c.guidance,
                                   "adapter_from_step": adapter_start(c.infer_steps, c.adapter_fraction)})
