"""The PVChat model (paper §3.3, Fig. 4): attention, Q-former, vision tower, LLM, losses, presets."""

from pvchat.model.attention import HeadRoutedAttention, RoutingStats
from pvchat.model.config import LLMConfig, PVChatConfig, QFormerConfig, VisionConfig
from pvchat.model.losses import SparsityController, SparsityLossConfig
from pvchat.model.presets import get_preset, list_presets
from pvchat.model.pvchat import PVChat, PVChatOutput, count_parameters
from pvchat.model.qformer import QFormer

__all__ = [
    "HeadRoutedAttention", "RoutingStats", "LLMConfig", "PVChatConfig", "QFormerConfig", "VisionConfig",
    "SparsityController", "SparsityLossConfig", "get_preset", "list_presets", "PVChat", "PVChatOutput",
    "count_parameters", "QFormer",
]
