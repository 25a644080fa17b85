"""Finding low-quality photos with CLIP: CLIP-IQA and GRMP-IQA."""
from .backbones import (Backbone, BackboneUnavailable, CheckpointMismatch, DEFAULT_BACKBONE,
                        DEFAULT_PRETRAINED, load_backbone)
from .clipiqa import CLIPIQA, pair_probabilities
from .features import FeatureStore
from .photos import Photo, PhotoError, open_photo, open_photos
from .prompts import PRESETS, PromptError, PromptPair, load_pairs, save_pairs
from .results import PairScore, ScoreResult
from .test_backbone import TEST_BACKBONE_WARNING

__all__ = [
    "Backbone", "BackboneUnavailable", "CheckpointMismatch", "DEFAULT_BACKBONE", "DEFAULT_PRETRAINED",
    "load_backbone", "CLIPIQA", "pair_probabilities", "FeatureStore", "Photo", "PhotoError", "open_photo",
    "open_photos", "PRESETS", "PromptError", "PromptPair", "load_pairs", "save_pairs", "PairScore",
    "ScoreResult", "TEST_BACKBONE_WARNING",
]
