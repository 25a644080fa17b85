"""GRMP-IQA: learned quality prompts on CLIP (the "paper" and "seed" variants)."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .model import PRESETS, SCENE_PROMPTS, GRMPConfig, GRMPModel, GRMPOutput, GRMPScorer, zero_shot_scene_logits
from .official import OfficialCheckpointError, download_official, import_official

__all__ = [
    "PRESETS",
    "SCENE_PROMPTS",
    "GRMPConfig",
    "GRMPModel",
    "GRMPOutput",
    "GRMPScorer",
    "zero_shot_scene_logits",
    "CheckpointError",
    "load_checkpoint",
    "save_checkpoint",
    "OfficialCheckpointError",
    "download_official",
    "import_official",
]
