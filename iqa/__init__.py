"""Finding low-quality photos with CLIP: CLIP-IQA and GRMP-IQA.

The names below are imported on first use (PEP 562), so that `import iqa` and the command line's
`--help` do not load torch and open_clip.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from iqa.errors import IQAError
from iqa.names import CLIP_IQA, DEFAULT_BACKBONE, DEFAULT_PRETRAINED, GRMP_IQA, MA_CLIP

_LAZY = {
    "Backbone": "clip.backbones",
    "BackboneUnavailable": "clip.backbones",
    "CheckpointMismatch": "clip.backbones",
    "load_backbone": "clip.backbones",
    "CLIPIQA": "methods.clipiqa.scorer",
    "pair_probabilities": "methods.clipiqa.scorer",
    "MACLIP": "methods.maclip.scorer",
    "FeatureStore": "clip.features",
    "Photo": "photos.photo",
    "PhotoError": "photos.photo",
    "open_photo": "photos.photo",
    "open_photos": "photos.photo",
    "PRESETS": "methods.prompts",
    "PromptError": "methods.prompts",
    "PromptPair": "methods.prompts",
    "load_pairs": "methods.prompts",
    "save_pairs": "methods.prompts",
    "PairScore": "methods.results",
    "ScoreResult": "methods.results",
    "Scorer": "methods.scoring",
    "ScorerSpec": "methods.scoring",
    "build_scorers": "methods.scoring",
    "TEST_BACKBONE_WARNING": "clip.test_backbones",
}

__all__ = [
    "CLIP_IQA",
    "DEFAULT_BACKBONE",
    "DEFAULT_PRETRAINED",
    "GRMP_IQA",
    "MA_CLIP",
    "IQAError",
    "Backbone",
    "BackboneUnavailable",
    "CheckpointMismatch",
    "load_backbone",
    "CLIPIQA",
    "pair_probabilities",
    "MACLIP",
    "FeatureStore",
    "Photo",
    "PhotoError",
    "open_photo",
    "open_photos",
    "PRESETS",
    "PromptError",
    "PromptPair",
    "load_pairs",
    "save_pairs",
    "PairScore",
    "ScoreResult",
    "Scorer",
    "ScorerSpec",
    "build_scorers",
    "TEST_BACKBONE_WARNING",
]

if TYPE_CHECKING:
    from iqa.clip.backbones import Backbone, BackboneUnavailable, CheckpointMismatch, load_backbone
    from iqa.clip.features import FeatureStore
    from iqa.clip.test_backbones import TEST_BACKBONE_WARNING
    from iqa.methods.clipiqa.scorer import CLIPIQA, pair_probabilities
    from iqa.methods.maclip.scorer import MACLIP
    from iqa.methods.prompts import PRESETS, PromptError, PromptPair, load_pairs, save_pairs
    from iqa.methods.results import PairScore, ScoreResult
    from iqa.methods.scoring import Scorer, ScorerSpec, build_scorers
    from iqa.photos.photo import Photo, PhotoError, open_photo, open_photos


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'iqa' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
