"""MA-CLIP (Liao et al., AAAI 2026): CLIP-IQA on views of the photo, fused with a magnitude cue.

Per view (`iqa.clip.views`: the 224 px windows every 128 px, then the whole photo at 224), c is
CLIP-IQA's score from the prompt pairs and m the Box-Cox magnitude cue of the unnormalised feature;
the view scores w_c·c + w_m·m with [w_c, w_m] = softmax([1 + d, 0.6 - d]), d = c - m, and the photo
the plain mean over its views, as pyiqa's `maclip` computes it (in float32, on any device), clipped
to [0, 1] like every score here (pyiqa does not clip; see `_clipped`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from iqa.clip.backbones import Backbone
from iqa.clip.features import FeatureStore, ProgressFn
from iqa.clip.views import ViewStore
from iqa.methods.clipiqa.scorer import check_finite, pair_features, pair_scores, prompt_settings, prompt_setup
from iqa.methods.maclip.method import CONSISTENCY, FUSED, MAGNITUDE, VIEWS, W_C, W_M
from iqa.methods.prompts import DEFAULT_PRESET, PromptPair, load_pairs
from iqa.methods.results import ScoreResult
from iqa.methods.scoring import score_from_store
from iqa.names import MA_CLIP
from iqa.photos.photo import Photo, PhotoKey

if TYPE_CHECKING:
    from iqa.methods.scoring import ScorerSpec

BASE_COS, BASE_NORM, ALPHA = 1.0, 0.6, 1.0  # the fusion's logits: [BASE_COS + ALPHA·d, BASE_NORM - ALPHA·d]


@dataclass
class ViewScores:
    """Every view's figures for N photos of at most V views ([N, V], [N, V, P] for the pairs');
    `valid` marks the views a photo has (the others are padding and count nowhere)."""

    s_pos: torch.Tensor
    s_neg: torch.Tensor
    p: torch.Tensor
    c: torch.Tensor
    m: torch.Tensor
    w_c: torch.Tensor
    w_m: torch.Tensor
    fused: torch.Tensor
    valid: torch.Tensor

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over each photo's own views: [N, V] -> [N], [N, V, P] -> [N, P]."""
        mask = self.valid if values.dim() == 2 else self.valid[..., None]
        return (values * mask).sum(dim=1) / self.valid.sum(dim=1, keepdim=values.dim() == 3)


def view_scores(
    features: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, weights: torch.Tensor, temperature: float
) -> ViewScores:
    """The figures of every view from a views store's features [N, V, D + 1] (NaN rows: padding)."""
    valid = torch.isfinite(features[..., -1])
    images = torch.where(valid[..., None], features[..., :-1], 0.0)
    m = torch.where(valid, features[..., -1], 0.0)
    s_pos, s_neg = images @ positive.T, images @ negative.T
    p = torch.sigmoid(temperature * (s_pos - s_neg))
    c = (p * weights).sum(dim=-1) / weights.sum()
    d = c - m
    w = torch.softmax(torch.stack([BASE_COS + ALPHA * d, BASE_NORM - ALPHA * d], dim=-1), dim=-1)
    w_c, w_m = w[..., 0], w[..., 1]
    return ViewScores(s_pos, s_neg, p, c, m, w_c, w_m, w_c * c + w_m * m, valid)


class MACLIP:
    """MA-CLIP with a set of prompt pairs, on the view store over a shared `FeatureStore` (whose
    backbone and text features it uses; its view features stay cached with that store)."""

    method = label = MA_CLIP

    def __init__(self, store: FeatureStore, pairs: Sequence[PromptPair], temperature: float | None = None):
        self.store = ViewStore.over(store)
        self.pairs, self.temperature = prompt_setup(store.backbone, pairs, temperature)

    @property
    def backbone(self) -> Backbone:
        return self.store.backbone

    def settings(self) -> dict[str, object]:
        """What its scores depend on besides the view features: the pairs, the temperature, the fusion."""
        return {**prompt_settings(self.pairs, self.temperature), "fusion": [BASE_COS, BASE_NORM, ALPHA]}

    def score(self, photos: Sequence[Photo | PhotoKey], progress: ProgressFn | None = None) -> list[ScoreResult]:
        return score_from_store(self, photos, progress)

    def views(self, features: torch.Tensor) -> ViewScores:
        """Every view's figures from the view store's features [N, V, D + 1]."""
        positive, negative = pair_features(self.store, self.pairs)
        weights = torch.tensor([pair.weight for pair in self.pairs])
        return view_scores(features, positive, negative, weights, self.temperature)

    def score_features(
        self, features: torch.Tensor, names: Sequence[str], notes: Sequence[list[str]] | None = None
    ) -> list[ScoreResult]:
        """Scores from cached view features [N, V, D + 1] (the prompt-editing fast path: no image encoded)."""
        views = self.views(features)
        fused = views.mean(views.fused)
        check_finite(fused, names, MA_CLIP)
        scores = fused.clamp(0.0, 1.0)
        s_pos, s_neg, p = views.mean(views.s_pos), views.mean(views.s_neg), views.mean(views.p)
        extras = {key: views.mean(value) for key, value in ((CONSISTENCY, views.c), (MAGNITUDE, views.m))}
        extras |= {W_C: views.mean(views.w_c), W_M: views.mean(views.w_m), VIEWS: views.valid.sum(dim=1).float()}
        extras[FUSED] = fused
        notes = notes or [[] for _ in names]
        return [
            ScoreResult(
                name=name,
                score=float(scores[i]),
                method=MA_CLIP,
                notes=[*notes[i], *_clipped(float(fused[i]), float(extras[MAGNITUDE][i]))],
                temperature=self.temperature,
                pairs=pair_scores(self.pairs, s_pos[i], s_neg[i], p[i]),
                extras={key: float(value[i]) for key, value in extras.items()},
            )
            for i, name in enumerate(names)
        ]


def _clipped(fused: float, magnitude: float) -> list[str]:
    """A note when the mean of the views' scores left [0, 1] (the score is then clipped to it): only
    a magnitude cue beyond 1 does that, as on the test backbones; never on the reference weights."""
    if 0.0 <= fused <= 1.0:
        return []
    return [f"MA-CLIP's mean {fused:.3f} (magnitude cue m = {magnitude:.3f}) is outside [0, 1]: clipped"]


def build(spec: ScorerSpec, store: FeatureStore | None) -> MACLIP:
    """The registry's builder: MA-CLIP over the shared `store`, with the spec's `pairs` (as CLIP-IQA's:
    a preset name, a JSON/CSV file, or the pairs; default: the default preset) and `temperature`."""
    assert store is not None  # MA-CLIP needs a store (Method.needs_store)
    options = spec.options_for(MA_CLIP)
    pairs = options.get("pairs") or DEFAULT_PRESET
    chosen = load_pairs(os.fspath(pairs)) if isinstance(pairs, (str, os.PathLike)) else list(pairs)
    return MACLIP(store, chosen, options.get("temperature"))
