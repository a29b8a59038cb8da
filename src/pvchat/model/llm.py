"""The causal LLM: build or load it, wrap it with LoRA.

Paper §3.3/§4.1 and the official code (pvchat-official.md §2.5–2.6): Mistral-7B-Instruct-v0.3,
LoRA r=16, α=32, dropout 0.1 on every attention and MLP projection, one new token per subject
(``<sks>``), and ``[PERSON]``/``[/PERSON]`` around each name when several people are in play.

The subject-token rows (the trainable ``<sks>`` rows beside the frozen tables, and why they are not
PEFT's ``trainable_token_indices``) are :mod:`pvchat.model.subject_tokens`; :func:`apply_lora` keeps
them trainable and :func:`trainable_parameter_groups` gives them their own learning-rate group.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from pvchat.errors import ConfigError, InputError, unknown_choice
from pvchat.model.subject_tokens import (
    SubjectEmbedding,
    SubjectHead,
    new_token_parameters,
)
from pvchat.model.vision import validated_config

LLM_CONFIGS: dict[str, type[PretrainedConfig]] = {
    "mistral": MistralConfig,
    "llama": LlamaConfig,
    "qwen2": Qwen2Config,
}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def list_llms() -> list[str]:
    return sorted(LLM_CONFIGS)


# ------------------------------------------------------------------ build / load
def build_llm(model_type: str = "mistral", **config_kwargs) -> PreTrainedModel:
    """A randomly initialised causal LM from a config in :data:`LLM_CONFIGS`.

    Unknown config keys raise (HF configs would silently keep a misspelled key as an attribute).
    Works under ``with torch.device("meta"):`` for parameter counts at the paper's sizes.
    """
    if model_type not in LLM_CONFIGS:
        raise unknown_choice("llm model_type", model_type, LLM_CONFIGS)
    config = validated_config(LLM_CONFIGS[model_type], config_kwargs, model_type)
    return AutoModelForCausalLM.from_config(config)


def load_llm(path: str | Path, torch_dtype: torch.dtype | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a LOCAL directory (nothing is downloaded)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: no language model here (expected a local directory with config.json)")
    kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kwargs)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: no usable tokenizer files next to the model ({e.__class__.__name__})") from None
    return model, tokenizer


# ---------------------------------------------------------------------- LoRA
def _lora_target_pattern(model: nn.Module, target_modules: Sequence[str], within: str = "") -> str:
    """A regex for PEFT: leaf names in ``target_modules`` (under the module ``within`` when given: a
    VLM's language model, not its vision tower); a targeted wrapper resolves to its ``.base``."""
    wrappers = [n for n, m in model.named_modules() if isinstance(m, (SubjectEmbedding, SubjectHead))]
    wrapper_leaves = {n.rsplit(".", 1)[-1] for n in wrappers}
    plain = [re.escape(t) for t in target_modules if t not in wrapper_leaves]
    wrapped = [re.escape(n + ".base") for n in wrappers if n.rsplit(".", 1)[-1] in target_modules]
    scope = rf"{re.escape(within)}\.(?:.*\.)?" if within else r"(?:.*\.)?"
    parts = ([rf"{scope}(?:{'|'.join(plain)})"] if plain else []) + wrapped
    return "|".join(f"(?:{p})" for p in parts)


def apply_lora(
    model: PreTrainedModel,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.1,
    target_modules: Sequence[str] = LORA_TARGETS,
    within: str = "",
) -> PeftModel:
    """Wrap with PEFT LoRA (paper/official defaults r=16, α=32, dropout 0.1, §2.5).

    PEFT freezes every non-LoRA parameter; new-token rows that were trainable before are made
    trainable again. ``"lm_head"``/``"embed_tokens"`` in ``target_modules`` put LoRA on the frozen
    base table inside the subject wrappers. ``within`` limits the plain targets to the modules under
    that name (``"model.language_model"``: the LLM of a VLM, whose vision tower has ``up_proj`` too).
    """
    if isinstance(model, PeftModel):
        raise ConfigError("the model already has LoRA adapters")
    if r < 1 or alpha <= 0 or not 0 <= dropout < 1 or not target_modules:
        raise ConfigError(f"invalid LoRA settings r={r}, alpha={alpha}, dropout={dropout}, targets={list(target_modules)}")
    trainable_rows = [p for p in new_token_parameters(model) if p.requires_grad]
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", task_type="CAUSAL_LM",
        target_modules=_lora_target_pattern(model, list(target_modules), within),
    )
    try:
        with warnings.catch_warnings():  # PEFT calls a transformers method deprecated in v5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            peft_model = get_peft_model(model, config)
    except ValueError as e:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(f"LoRA targets {list(target_modules)} do not fit this model ({e}); linear layers: {', '.join(leaves)}") from None
    for p in trainable_rows:
        p.requires_grad_(True)
    return peft_model


def lora_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """The LoRA weights only, float32 on CPU.

    PEFT's own ``get_peft_model_state_dict`` (and ``PeftModel.save_pretrained``) compare
    ``config.vocab_size`` with the base checkpoint's; once subject tokens extend the vocabulary they
    would save the whole embedding and head tables (≈ 0.5 GB for Mistral-7B). Subject rows are
    saved separately (:func:`subject_token_state`), so embedding saving is turned off here.
    """
    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    return {k: v.detach().float().cpu().clone() for k, v in state.items()}


def load_lora_state(model: PeftModel, state: Mapping[str, torch.Tensor]) -> None:
    """Load :func:`lora_state` output; every LoRA weight of the model must be present."""
    result = set_peft_model_state_dict(model, dict(state))
    missing = sorted(k for k in result.missing_keys if "lora_" in k)
    if missing or result.unexpected_keys:
        raise InputError(f"LoRA state does not match the model (missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})")


def trainable_parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable LLM parameters by learning-rate group (official §4.2: tokens 1e-4, LoRA 1e-5).

    Returns ``{"subject_tokens": [...], "lora": [...], "other": [...]}``; "other" is whatever else
    was unfrozen by hand. Each parameter appears once.
    """
    rows = {id(p) for p in new_token_parameters(model)}
    groups: dict[str, list[nn.Parameter]] = {"subject_tokens": [], "lora": [], "other": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = "subject_tokens" if id(p) in rows else "lora" if "lora_" in name else "other"
        groups[key].append(p)
    return groups
