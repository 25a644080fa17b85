"""The scorer contract, and the one factory that builds scorers from a spec.

Every method (CLIP-IQA, GRMP-IQA, and any added later) is a `Scorer`: it turns photos into one
`ScoreResult` each. The command line, the evaluation and the benchmarks build them with
`build_scorers`; `grmp_scorer` and `shares_backbone` / `shares_features` hold the only rule for
when a GRMP-IQA model reuses CLIP-IQA's backbone and cached image features.

This module imports torch and the models only when a scorer is built, so that the command line's
parser can import it cheaply.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from iqa.errors import UsageError
from iqa.methods.prompts import DEFAULT_PRESET
from iqa.names import CLIP_IQA, DEFAULT_BACKBONE, DEFAULT_MAX_SIDE, DEFAULT_PRETRAINED, GRMP_IQA, METHODS

if TYPE_CHECKING:
    import torch

    from iqa.clip.backbones import Backbone
    from iqa.clip.features import FeatureStore, ProgressFn
    from iqa.methods.prompts import PromptPair
    from iqa.methods.results import ScoreResult
    from iqa.photos.photo import Photo, PhotoKey

logger = logging.getLogger(__name__)


class Scorer(Protocol):
    """What every scoring method offers."""

    @property
    def method(self) -> str:
        """One of `iqa.names.METHODS`: the key of its results."""

    @property
    def label(self) -> str:
        """The method as people read it, e.g. "GRMP-IQA (seed)"."""

    @property
    def backbone(self) -> Backbone:
        """The CLIP backbone it scores on (`backbone.is_test`: meaningless scores)."""

    def score(self, photos: Sequence[Photo | PhotoKey], progress: ProgressFn | None = None) -> list[ScoreResult]:
        """One result per photo, in the order of `photos`; `progress(done, total)` follows image encoding."""

    @property
    def store(self) -> FeatureStore:
        """Where its image features come from: the streaming pipeline (`iqa.engine.pipeline`) encodes into it."""

    def score_features(
        self, features: torch.Tensor, names: Sequence[str], notes: Sequence[list[str]] | None = None
    ) -> list[ScoreResult]:
        """One result per row of `features` (image features of `store`), named by `names`."""


@dataclass(frozen=True)
class ScorerSpec:
    """What to build: the methods, CLIP-IQA's backbone and prompts, GRMP-IQA's checkpoint."""

    methods: tuple[str, ...] = (CLIP_IQA,)
    backbone: str = DEFAULT_BACKBONE
    pretrained: str | None = DEFAULT_PRETRAINED
    weights: str | os.PathLike | None = None  # a local backbone checkpoint instead of `pretrained`
    device: str | None = None
    dtype: str | None = None
    max_side: int | None = DEFAULT_MAX_SIDE
    batch_size: int = 16
    pairs: str | Sequence[PromptPair] = DEFAULT_PRESET  # a preset name, a JSON/CSV file, or the pairs
    temperature: float | None = None
    checkpoint: str | os.PathLike | None = None  # GRMP-IQA

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise UsageError(f"unknown method {unknown or '(none)'}; choose among {', '.join(METHODS)}")
        if GRMP_IQA in self.methods and not self.checkpoint:
            raise UsageError("GRMP-IQA needs a checkpoint (--checkpoint PATH; see `python -m iqa train`)")


def build_scorers(spec: ScorerSpec, store: FeatureStore | None = None) -> dict[str, Scorer]:
    """The scorers `spec` asks for, keyed by method, in the order of `spec.methods`.

    CLIP-IQA scores on `store` when one is given (its backbone then stands for the spec's), else
    on a new store of the spec's backbone. GRMP-IQA loads `spec.checkpoint` onto CLIP-IQA's
    backbone and shares its features where `grmp_scorer` allows, else on a backbone of its own.
    """
    scorers: dict[str, Scorer] = {}
    if CLIP_IQA in spec.methods:
        store = store or feature_store(spec)
        scorers[CLIP_IQA] = clip_iqa_scorer(spec, store)
    if GRMP_IQA in spec.methods:
        from iqa.methods.grmp.scorer import grmp_scorer

        assert spec.checkpoint is not None  # checked by ScorerSpec
        scorers[GRMP_IQA] = grmp_scorer(spec.checkpoint, store, spec.device, spec.dtype, spec.batch_size)
    return {method: scorers[method] for method in spec.methods}


def feature_store(spec: ScorerSpec) -> FeatureStore:
    """A feature cache over the spec's backbone (loaded here)."""
    from iqa.clip.backbones import load_backbone
    from iqa.clip.features import FeatureStore

    backbone = load_backbone(spec.backbone, spec.pretrained, spec.weights, spec.device, spec.dtype)
    return FeatureStore(backbone, batch_size=spec.batch_size, max_side=spec.max_side)


def clip_iqa_scorer(spec: ScorerSpec, store: FeatureStore) -> Scorer:
    from iqa.methods.clipiqa.scorer import CLIPIQA
    from iqa.methods.prompts import load_pairs

    pairs = load_pairs(spec.pairs) if isinstance(spec.pairs, (str, os.PathLike)) else list(spec.pairs)
    return CLIPIQA(store, pairs, spec.temperature)
