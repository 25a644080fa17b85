"""A toy quality method for `tests/test_plugin_method.py`: how bright CLIP finds a photo, from the
shared feature store (the first feature component, mapped to [0, 1]). Meaningless, and that is fine:
it shows what a method needs and nothing more."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from iqa.clip.features import FeatureStore, ProgressFn
from iqa.methods.results import PairScore, ScoreResult
from iqa.methods.scoring import ScorerSpec
from iqa.photos.photo import Photo, PhotoKey

NAME = "TOY"


class ToyScorer:
    method = label = NAME

    def __init__(self, store: FeatureStore):
        self.store = store
        self.backbone = store.backbone

    def score(self, photos: Sequence[Photo | PhotoKey], progress: ProgressFn | None = None) -> list[ScoreResult]:
        features = self.store.image_features(photos, progress)
        return self.score_features(features, [p.name for p in photos])

    def score_features(
        self, features: torch.Tensor, names: Sequence[str], notes: Sequence[list[str]] | None = None
    ) -> list[ScoreResult]:
        first = features[:, 0].tolist()
        return [
            ScoreResult(name, (x + 1) / 2, [PairScore("toy light", "toy dark", x, -x, (x + 1) / 2)], NAME)
            for name, x in zip(names, first)
        ]


def build(spec: ScorerSpec, store: FeatureStore | None) -> ToyScorer:
    assert store is not None
    return ToyScorer(store)
