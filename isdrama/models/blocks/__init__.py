"""Blocks of the Immersive Drama Transformer: Mamba (+ scan backends), attention, AdaLN-Zero,
Drama-MoE with FAN experts, and the F0 head."""

from isdrama.models.blocks.adaln import AdaLNZero, FinalLayer, TimestepEmbedding, modulate
from isdrama.models.blocks.attention import CrossAttention, GatedCrossAttention, RoPESelfAttention
from isdrama.models.blocks.f0_head import F0Head, f0_loss
from isdrama.models.blocks.mamba import BidirectionalMamba, MambaConfig, MambaLayer, MambaStack
from isdrama.models.blocks.moe import DramaMoE, ExpertGroup, MoEConfig

__all__ = [
    "AdaLNZero",
    "FinalLayer",
    "TimestepEmbedding",
    "modulate",
    "CrossAttention",
    "GatedCrossAttention",
    "RoPESelfAttention",
    "F0Head",
    "f0_loss",
    "BidirectionalMamba",
    "MambaConfig",
    "MambaLayer",
    "MambaStack",
    "DramaMoE",
    "ExpertGroup",
    "MoEConfig",
]
