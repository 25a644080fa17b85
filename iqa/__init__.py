"""Finding low-quality photos with CLIP: CLIP-IQA and GRMP-IQA.

The names below are imported on first use (PEP 562), so that `import iqa` and the command line's
`--help` do not load torch and open_clip.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import IQAError
from .names import CLIP_IQA, DEFAULT_BACKBONE, DEFAULT_PRETRAINED, GRMP_IQA

_LAZY = {
    "Backbone": "backbones",
    "BackboneUnavailable": "backbones",
    "CheckpointMismatch": "backbones",
    "load_backbone": "backbones",
    "CLIPIQA": "clipiqa",
    "pair_probabilities": "clipiqa",
    "FeatureStore": "features",
    "Photo": "photos",
    "PhotoError": "photos",
    "open_photo": "photos",
    "open_photos": "photos",
    "PRESETS": "prompts",
    "PromptError": "prompts",
    "PromptPair": "prompts",
    "load_pairs": "prompts",
    "save_pairs": "prompts",
    "PairScore": "results",
    "ScoreResult": "results",
    "Scorer": "scoring",
    "ScorerSpec": "scoring",
    "build_scorers": "scoring",
    "TEST_BACKBONE_WARNING": "tiny_backbones",
}

__all__ = [
    "CLIP_IQA",
    "DEFAULT_BACKBONE",
    "DEFAULT_PRETRAINED",
    "GRMP_IQA",
    "IQAError",
    "Backbone",
    "BackboneUnavailable",
    "CheckpointMismatch",
    "load_backbone",
    "CLIPIQA",
    "pair_probabilities",
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
    from .backbones import Backbone, BackboneUnavailable, CheckpointMismatch, load_backbone
    from .clipiqa import CLIPIQA, pair_probabilities
    from .features import FeatureStore
    from .photos import Photo, PhotoError, open_photo, open_photos
    from .prompts import PRESETS, PromptError, PromptPair, load_pairs, save_pairs
    from .results import PairScore, ScoreResult
    from .scoring import Scorer, ScorerSpec, build_scorers
    from .tiny_backbones import TEST_BACKBONE_WARNING


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'iqa' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
