"""ConsisID backend: identity-preserving text-to-video through diffusers' ``ConsisIDPipeline``.

PVChat's strongest text-driven positives come from ConsisID (paper Table 4: + ConsisID lifts
accuracy 0.584 → 0.781). The official PVChat release (research/generators.md §3) runs, per subject,
10 prompts from a gender × age prompt library, each with the subject's high-quality face, seed 42,
50 steps, CFG 6.0, 49 frames at 720×480 (8 fps), ``use_dynamic_cfg=False``; prompts end with "He/She
has the same facial structure and skin color as the reference image."

Weights: ``huggingface-cli download BestWishYsh/ConsisID-preview --local-dir DIR`` gives the
diffusers pipeline *and* its face models under ``DIR/face_encoder`` (antelopev2, RetinaFace, BiSeNet,
EVA02-CLIP). The face conditioning (``consisid_utils.process_face_embeddings_infer``) needs the
packages ``insightface``, ``facexlib``, ``consisid_eva_clip``, ``onnxruntime`` and ``torchvision``
(a GPU install; torchvision is unusable on this project's CPU machine). A different face
conditioner can be passed as ``face_conditioner`` (the tests pass one for tiny random models).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from pvchat.errors import ConfigError
from pvchat.synth.base import ClipRequest, GeneratedClip, Identity
from pvchat.synth.personalvideo import resolve_device
from pvchat.synth.prompts import PromptLibrary, subject_words

DOWNLOAD_HINT = ("download it with: huggingface-cli download BestWishYsh/ConsisID-preview --local-dir DIR "
                 "and pass model_dir=DIR")
FACE_PACKAGES = ("insightface", "facexlib", "consisid_eva_clip", "onnxruntime", "torchvision")


@dataclass
class FaceCondition:
    """What ConsisID is conditioned on: the global ID embedding (antelopev2 ⊕ EVA-CLIP), the EVA-CLIP
    hidden states, the aligned face image the video starts from, and optional keypoints."""

    id_cond: torch.Tensor  # (1, D_id)
    id_vit_hidden: list[torch.Tensor]  # each (1, N, D_vit)
    image: np.ndarray  # (H, W, 3) uint8
    kps: Any = None


FaceConditioner = Callable[[np.ndarray], FaceCondition]


@dataclass
class ConsisIDConfig:
    """ConsisID settings (official PVChat values as defaults).

    Attributes:
        model_dir: local ``BestWishYsh/ConsisID-preview`` directory.
        steps: denoising steps (50).
        guidance: classifier-free guidance scale (6.0).
        use_dynamic_cfg: CogVideoX's dynamic CFG (off).
        identity_suffix: append the official "same facial structure" sentence to library prompts.
        max_sequence_length: T5 prompt length (226).
        device: torch device ("auto": cuda when available; ConsisID on CPU is impractically slow).
        dtype: "bfloat16" (official), "float16" or "float32".
        cpu_offload: "none", "model" or "sequential" (≈ 25 GB / 7 GB of GPU memory instead of 44 GB).
        vae_tiling: decode the VAE in tiles and slices (less memory).
    """

    model_dir: str | None = None
    steps: int = 50
    guidance: float = 6.0
    use_dynamic_cfg: bool = False
    identity_suffix: bool = True
    max_sequence_length: int = 226
    device: str = "auto"
    dtype: str = "bfloat16"
    cpu_offload: str = "none"
    vae_tiling: bool = False

    def __post_init__(self):
        self.device = resolve_device(self.device, "consisid")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if self.cpu_offload not in ("none", "model", "sequential"):
            raise ConfigError(f"cpu_offload must be none, model or sequential, got {self.cpu_offload!r}")


def official_request(seed: int = 42, prompt: str | None = None) -> ClipRequest:
    """The official clip settings: 49 frames at 720×480, 8 fps, seed 42."""
    return ClipRequest(prompt=prompt, num_frames=49, width=720, height=480, fps=8.0, seed=seed)


def consisid_face_conditioner(model_dir: str | Path, device: str = "cuda", dtype: torch.dtype = torch.bfloat16) -> FaceConditioner:
    """ConsisID's own face pipeline (diffusers ``consisid_utils``) with the models in ``model_dir/face_encoder``."""
    missing = [p for p in FACE_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(f"consisid face conditioning needs the packages {', '.join(missing)} "
                          f"(pip install {' '.join(missing)} on the GPU machine)")
    face_dir = Path(model_dir) / "face_encoder"
    if not face_dir.is_dir():
        raise ConfigError(f"consisid: no face models in {face_dir}; {DOWNLOAD_HINT}")
    from diffusers.pipelines.consisid import consisid_utils as cu  # optional (pvchat[gen]): diffusers

    helper1, helper2, clip_model, mean, std, app = cu.prepare_face_models(str(model_dir), device, dtype)

    def condition(face_rgb: np.ndarray) -> FaceCondition:
        id_cond, id_vit_hidden, image, kps = cu.process_face_embeddings_infer(
            helper1, clip_model, helper2, mean, std, app, device, dtype, np.ascontiguousarray(face_rgb), is_align_face=True)
        return FaceCondition(id_cond=id_cond, id_vit_hidden=list(id_vit_hidden), image=np.asarray(image), kps=kps)

    return condition


class ConsisIDGenerator:
    """The ``consisid`` backend. Options are :class:`ConsisIDConfig` fields plus ``face_conditioner``."""

    name = "consisid"

    def __init__(self, face_conditioner: FaceConditioner | None = None, **options: Any):
        self.config = ConsisIDConfig(**options)
        self._conditioner = face_conditioner
        self.pipe = None
        self.identity: Identity | None = None
        self.condition: FaceCondition | None = None

    def load(self) -> None:
        """Load the pipeline from ``model_dir`` (once); a missing download is a ConfigError."""
        if self.pipe is not None:
            return
        c = self.config
        if not c.model_dir or not (Path(c.model_dir).expanduser() / "model_index.json").is_file():
            raise ConfigError(f"consisid: no ConsisID pipeline at {c.model_dir!r} (model_index.json missing); {DOWNLOAD_HINT}")
        from diffusers import ConsisIDPipeline  # optional (pvchat[gen]): diffusers

        dtype = getattr(torch, c.dtype)
        try:
            pipe = ConsisIDPipeline.from_pretrained(str(Path(c.model_dir).expanduser()), dtype=dtype)
        except (OSError, ValueError) as e:
            raise ConfigError(f"consisid: cannot load {c.model_dir} ({str(e).splitlines()[0]}); {DOWNLOAD_HINT}") from None
        if c.cpu_offload == "model":
            pipe.enable_model_cpu_offload(device=c.device)
        elif c.cpu_offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=c.device)
        else:
            pipe.to(c.device)
        if c.vae_tiling:
            pipe.vae.enable_slicing()
            pipe.vae.enable_tiling()
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe

    def prepare(self, identity: Identity, workdir: Path | None = None) -> None:
        """Compute the face condition of the subject's best face (``identity.faces[0]``)."""
        self.load()
        if self._conditioner is None:
            self._conditioner = consisid_face_conditioner(self.config.model_dir, self.config.device,
                                                          getattr(torch, self.config.dtype))
        self.identity = identity
        self.condition = self._conditioner(identity.faces[0])

    def prompt_for(self, request: ClipRequest) -> str:
        """The request's prompt, or a library prompt for the subject's gender and age (+ the ID sentence)."""
        ident = self.identity
        words = subject_words(ident.gender, ident.age)
        if request.prompt:
            return request.prompt.replace("{subject}", words)
        lib = PromptLibrary.load()
        return lib.render(lib.sample(ident.gender, ident.age, rng=request.seed), words,
                          identity_suffix=self.config.identity_suffix)

    def generate(self, request: ClipRequest) -> GeneratedClip:
        """One clip: ``num_frames`` must be 4k + 1 (CogVideoX's temporal compression; 49 official)."""
        if self.condition is None:
            raise ConfigError("consisid: call prepare(identity) before generate()")
        if (request.num_frames - 1) % 4:
            raise ConfigError(f"consisid: num_frames must be 4k+1 (49 official), got {request.num_frames}")
        if request.width % 16 or request.height % 16:
            raise ConfigError(f"consisid: width and height must be multiples of 16, got {request.width}x{request.height}")
        c, cond = self.config, self.condition
        prompt = self.prompt_for(request)

        out = self.pipe(
            image=Image.fromarray(np.ascontiguousarray(cond.image)), prompt=prompt, height=request.height, width=request.width,
            num_frames=request.num_frames, num_inference_steps=c.steps, guidance_scale=c.guidance,
            use_dynamic_cfg=c.use_dynamic_cfg, generator=torch.Generator().manual_seed(int(request.seed)),
            id_vit_hidden=cond.id_vit_hidden, id_cond=cond.id_cond, kps_cond=cond.kps,
            max_sequence_length=c.max_sequence_length, output_type="np",
        )
        video = np.asarray(out.frames[0])  # (F, H, W, 3) float in [0, 1]
        frames = (np.clip(video, 0, 1) * 255).round().astype(np.uint8)
        return GeneratedClip(frames=frames, fps=request.fps, request=request, backend=self.name,
                             info={"prompt": prompt, "steps": c.steps, "guidance": c.guidance, "seed": request.seed})
