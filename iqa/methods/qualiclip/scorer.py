"""QualiCLIP: its fine-tuned RN50's image features against its seven antonym pairs.

pyiqa 0.1.16's `qualiclip`: for each pair, p = softmax(t·cos / 2) with t the model's logit scale,
and the score is the mean of p. The photo is fed as CLIP-IQA feeds it (CLIP mean/std, its own
resolution, the attention pool without positional embedding), but through QualiCLIP's own
backbone: its features live in a FeatureStore of their own (same preprocessing and caching
machinery, keyed by the weights file's hash). On a test backbone the test backbone stands in for
the fine-tuned model (meaningless scores, every route exercised without a 390 MB download).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from iqa.clip.backbones import Backbone
from iqa.clip.features import FeatureStore, ProgressFn
from iqa.clip.test_backbones import is_test_backbone
from iqa.methods.clipiqa.scorer import check_clip_preprocessing, check_finite, pair_probabilities, pair_scores
from iqa.methods.prompts import PromptPair
from iqa.methods.qualiclip.method import PAIRS, TEMPERATURE_DIVISOR
from iqa.methods.qualiclip.weights import qualiclip_weights
from iqa.methods.results import ScoreResult
from iqa.methods.scoring import score_from_store
from iqa.names import QUALICLIP
from iqa.photos.photo import Photo, PhotoKey

if TYPE_CHECKING:
    from iqa.methods.scoring import ScorerSpec


class QualiCLIPScorer:
    """Scores photos with QualiCLIP's pairs on `store` (its own backbone's, or a test backbone's).

    `prompt_features` are the prompts' normalised text features as its weights file ships them
    [14, D], positive then negative per pair; None: encoded by the store's backbone.
    """

    method = label = QUALICLIP

    def __init__(self, store: FeatureStore, prompt_features: torch.Tensor | None = None, source: str = ""):
        check_clip_preprocessing(store, QUALICLIP)
        self.store = store
        self.source = source or store.backbone.description
        texts = [text for pair in PAIRS for text in pair]
        features = store.text_features(texts) if prompt_features is None else prompt_features
        features = F.normalize(features.float(), dim=-1).cpu()
        self.positive, self.negative = features[0::2], features[1::2]
        self.temperature = store.backbone.logit_scale / TEMPERATURE_DIVISOR
        self.pairs = [PromptPair(positive, negative) for positive, negative in PAIRS]

    @property
    def backbone(self) -> Backbone:
        return self.store.backbone

    def settings(self) -> dict[str, object]:
        """What its scores depend on besides the image features: its weights and the temperature."""
        return {"weights": self.source, "temperature": self.temperature}

    def score(self, photos: Sequence[Photo | PhotoKey], progress: ProgressFn | None = None) -> list[ScoreResult]:
        return score_from_store(self, photos, progress)

    def score_features(
        self, images: torch.Tensor, names: Sequence[str], notes: Sequence[list[str]] | None = None
    ) -> list[ScoreResult]:
        """Scores from image features of `store` that are already computed."""
        s_pos, s_neg, p = pair_probabilities(images, self.positive, self.negative, self.temperature)
        scores = p.mean(dim=1)
        check_finite(scores, names, QUALICLIP)
        notes = notes or [[] for _ in names]
        return [
            ScoreResult(
                name=name,
                score=float(scores[i]),
                pairs=pair_scores(self.pairs, s_pos[i], s_neg[i], p[i]),
                method=QUALICLIP,
                notes=list(notes[i]),
                temperature=self.temperature,
            )
            for i, name in enumerate(names)
        ]


def build(spec: ScorerSpec, store: FeatureStore | None) -> QualiCLIPScorer:
    """The registry's builder: QualiCLIP's own backbone from the spec's `qualiclip_weights` (default:
    the release from the Hub), in a store of its own; on a test backbone without a weights file,
    the test backbone itself (the shared `store` when there is one)."""
    from iqa.methods.scoring import feature_store

    path = spec.options_for(QUALICLIP).get("qualiclip_weights")
    test = store.backbone.is_test if store is not None else is_test_backbone(spec.backbone)
    if path is None and test:
        shared = store if store is not None else feature_store(spec)
        return QualiCLIPScorer(shared, None, f"test backbone {shared.backbone.name} (meaningless scores)")
    weights = qualiclip_weights(os.fspath(path) if path is not None else None, spec.device, spec.dtype)
    own = FeatureStore(weights.backbone, batch_size=spec.batch_size, max_side=spec.max_side)
    return QualiCLIPScorer(own, weights.prompt_features, weights.source)
