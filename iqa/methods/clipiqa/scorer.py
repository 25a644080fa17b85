"""CLIP-IQA: zero-shot quality from antonym prompt pairs (Wang, Chan, Loy, AAAI 2023).

For each pair, p = exp(t*s_pos) / (exp(t*s_pos) + exp(t*s_neg)) where s_* are cosine similarities
between the photo and each prompt; the score is the (weighted) mean of p over the pairs, as in the
reference library. t defaults to the checkpoint's logit scale (100 for OpenAI CLIP); t = 1 is the
formula as the source document writes it, under which every p stays close to 0.5.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from iqa.clip.backbones import Backbone
from iqa.clip.features import FeatureStore, ProgressFn
from iqa.clip.preprocess import Preprocessor
from iqa.errors import InputError, IQAError
from iqa.methods.prompts import DEFAULT_PRESET, PromptPair, load_pairs, usable_pairs
from iqa.methods.results import PairScore, ScoreResult
from iqa.methods.scoring import score_from_store
from iqa.names import CLIP_IQA
from iqa.photos.photo import Photo, PhotoKey

if TYPE_CHECKING:
    from iqa.methods.scoring import ScorerSpec


def prompt_setup(
    backbone: Backbone, pairs: Sequence[PromptPair], temperature: float | None
) -> tuple[list[PromptPair], float]:
    """The pairs the backbone's tokenizer can read, and the temperature (None: the backbone's logit
    scale), checked: what every method scoring the prompt table starts from."""
    usable = usable_pairs(list(pairs), backbone.tokenizer)
    t = backbone.logit_scale if temperature is None else float(temperature)
    if not t > 0:
        raise InputError(f"temperature must be > 0, got {temperature!r}")
    return usable, t


def prompt_settings(pairs: Sequence[PromptPair], temperature: float) -> dict[str, object]:
    """The prompt table and temperature as a method's `settings` record them."""
    return {"pairs": [[p.positive, p.negative, p.weight, p.enabled] for p in pairs], "temperature": temperature}


def pair_scores(
    pairs: Sequence[PromptPair], s_pos: torch.Tensor, s_neg: torch.Tensor, p: torch.Tensor
) -> list[PairScore]:
    """One photo's `PairScore` per pair, from its rows of cosines and probabilities."""
    return [
        PairScore(pair.positive, pair.negative, float(s_pos[j]), float(s_neg[j]), float(p[j]), pair.weight)
        for j, pair in enumerate(pairs)
    ]


def check_clip_preprocessing(store: FeatureStore, method: str) -> Preprocessor:
    """The store's preprocessor; refused unless photos are fed as CLIP feeds them (GRMP-IQA's
    official store feeds them otherwise)."""
    if not isinstance(store.preprocessor, Preprocessor):
        raise InputError(f"{method} scores with CLIP's preprocessing, not {type(store.preprocessor).__name__}")
    return store.preprocessor


def pair_probabilities(
    image_features: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosines and p(positive) for N images x P pairs, from L2-normalised features.

    Returns (s_pos, s_neg, p), each [N, P]. The two-way softmax is computed as a sigmoid of the
    difference, which is the same number and does not overflow.
    """
    s_pos = image_features @ positive.T
    s_neg = image_features @ negative.T
    return s_pos, s_neg, torch.sigmoid(temperature * (s_pos - s_neg))


def pair_features(store: FeatureStore, pairs: Sequence[PromptPair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Text features of the positive and of the negative prompts, [P, D] each.

    One call, so that the texts a prompt edit leaves uncached are encoded in one batch.
    """
    texts = store.text_features([p.positive for p in pairs] + [p.negative for p in pairs])
    return texts[: len(pairs)], texts[len(pairs) :]


def combine(p: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of per-pair probabilities: [N, P] -> [N]."""
    return (p * weights).sum(dim=1) / weights.sum()


class ScoringError(IQAError, ValueError):
    """A score came out as NaN or infinite; it is never returned as a number."""


def check_finite(scores: torch.Tensor, names: Sequence[str], method: str = CLIP_IQA) -> None:
    """Raise ScoringError naming the photos whose score is not finite (a NaN must never leave here)."""
    bad = [name for name, ok in zip(names, torch.isfinite(scores).tolist()) if not ok]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ScoringError(
            f"{method} gave no finite score for {shown} (non-finite image features or weights); nothing was scored"
        )


class CLIPIQA:
    """Scores photos with a set of antonym prompt pairs on a shared, cached FeatureStore."""

    method = label = CLIP_IQA

    def __init__(self, store: FeatureStore, pairs: Sequence[PromptPair], temperature: float | None = None):
        self.preprocessor = check_clip_preprocessing(store, CLIP_IQA)
        self.store = store
        self.pairs, self.temperature = prompt_setup(store.backbone, pairs, temperature)

    @property
    def backbone(self) -> Backbone:
        return self.store.backbone

    def settings(self) -> dict[str, object]:
        """What its scores depend on besides the image features: the pairs and the temperature."""
        return prompt_settings(self.pairs, self.temperature)

    def score(self, photos: Sequence[Photo | PhotoKey], progress: ProgressFn | None = None) -> list[ScoreResult]:
        return score_from_store(self, photos, progress)

    def score_features(
        self, images: torch.Tensor, names: Sequence[str], notes: Sequence[list[str]] | None = None
    ) -> list[ScoreResult]:
        """Scores from image features that are already computed (the prompt-editing fast path)."""
        positive, negative = pair_features(self.store, self.pairs)
        s_pos, s_neg, p = pair_probabilities(images, positive, negative, self.temperature)
        weights = torch.tensor([pair.weight for pair in self.pairs])
        scores = combine(p, weights)
        check_finite(scores, names)
        notes = notes or [[] for _ in names]
        return [
            ScoreResult(
                name=name,
                score=float(scores[i]),
                method=CLIP_IQA,
                notes=list(notes[i]),
                temperature=self.temperature,
                pairs=pair_scores(self.pairs, s_pos[i], s_neg[i], p[i]),
            )
            for i, name in enumerate(names)
        ]


def build(spec: ScorerSpec, store: FeatureStore | None) -> CLIPIQA:
    """The registry's builder: CLIP-IQA on the shared `store`, with the spec's `pairs` (a preset
    name, a JSON/CSV file, or the pairs; default: the default preset) and `temperature`."""
    assert store is not None  # CLIP-IQA needs a store (Method.needs_store)
    options = spec.options_for(CLIP_IQA)
    pairs = options.get("pairs") or DEFAULT_PRESET
    chosen = load_pairs(os.fspath(pairs)) if isinstance(pairs, (str, os.PathLike)) else list(pairs)
    return CLIPIQA(store, chosen, options.get("temperature"))
