"""The PVChat model (paper §3.3, Fig. 4): attention, Q-former, vision tower, LLM, losses, presets.

The names below load their module on first use (PEP 562), so importing a light part of the
package (the name grammar of :mod:`pvchat.model.prompt`, used by ``qa/`` and ``web/``) does not
import transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HeadRoutedAttention": "attention", "RoutingStats": "attention",
    "LLMConfig": "config", "PVChatConfig": "config", "QFormerConfig": "config", "VisionConfig": "config",
    "SparsityController": "losses", "SparsityLossConfig": "losses",
    "get_preset": "presets", "list_presets": "presets",
    "PVChat": "pvchat", "PVChatOutput": "pvchat", "count_parameters": "pvchat",
    "QFormer": "qformer",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
