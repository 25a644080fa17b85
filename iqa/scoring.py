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

from .errors import UsageError
from .names import CLIP_IQA, DEFAULT_BACKBONE, DEFAULT_MAX_SIDE, DEFAULT_PRETRAINED, GRMP_IQA, METHODS
from .prompts import DEFAULT_PRESET

if TYPE_CHECKING:
    import torch

    from .backbones import Backbone
    from .features import FeatureStore, ProgressFn
    from .grmp.model import GRMPConfig, GRMPModel, GRMPScorer
    from .photos import Photo, PhotoKey
    from .prompts import PromptPair
    from .results import ScoreResult

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
        """Where its image features come from: the streaming pipeline (`iqa.pipeline`) encodes into it."""

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
        assert spec.checkpoint is not None  # checked by ScorerSpec
        scorers[GRMP_IQA] = grmp_scorer(spec.checkpoint, store, spec.device, spec.dtype, spec.batch_size)
    return {method: scorers[method] for method in spec.methods}


def feature_store(spec: ScorerSpec) -> FeatureStore:
    """A feature cache over the spec's backbone (loaded here)."""
    from .backbones import load_backbone
    from .features import FeatureStore

    backbone = load_backbone(spec.backbone, spec.pretrained, spec.weights, spec.device, spec.dtype)
    return FeatureStore(backbone, batch_size=spec.batch_size, max_side=spec.max_side)


def clip_iqa_scorer(spec: ScorerSpec, store: FeatureStore) -> Scorer:
    from .clipiqa import CLIPIQA
    from .prompts import load_pairs

    pairs = load_pairs(spec.pairs) if isinstance(spec.pairs, (str, os.PathLike)) else list(spec.pairs)
    return CLIPIQA(store, pairs, spec.temperature)


def grmp_scorer(
    source: str | os.PathLike | GRMPModel,
    store: FeatureStore | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 16,
) -> GRMPScorer:
    """A GRMP-IQA scorer for a checkpoint (or a model in memory), next to CLIP-IQA's `store`.

    A checkpoint is loaded onto `store`'s backbone when `shares_backbone` allows, else onto the
    backbone its configuration names; the scorer then uses `store`'s cached features when
    `shares_features` allows, else a store of its own.
    """
    from .grmp.checkpoint import load_checkpoint, read_config
    from .grmp.model import GRMPModel, GRMPScorer

    if isinstance(source, GRMPModel):
        model = source
    else:
        config = read_config(source)
        shared = store is not None and shares_backbone(config, store.backbone)
        logger.info(
            "GRMP-IQA checkpoint %s: %s",
            source,
            "on CLIP-IQA's backbone" if shared else f"loading its own backbone {config.backbone}",
        )
        backbone = store.backbone if shared and store is not None else None
        model = load_checkpoint(source, backbone=backbone, device=device, dtype=dtype)
    return GRMPScorer(model, store, batch_size=batch_size)


def shares_backbone(config: GRMPConfig, backbone: Backbone) -> bool:
    """Whether a checkpoint of `config` can be loaded onto an already loaded `backbone`.

    Only onto the backbone it was trained on: the same name and pretrained weights. A paper
    checkpoint without a pretrained tag carries its whole backbone and always loads its own.
    """
    trained_on = (config.backbone, config.pretrained)
    return config.pretrained is not None and trained_on == (backbone.name, backbone.pretrained)


def shares_features_of(config: GRMPConfig, store: FeatureStore) -> bool:
    """`shares_features` decided from a checkpoint's config before its model is built on `store`'s
    backbone (`grmp_scorer(path, store)`): what a process that does not build it (the app's, under
    ZeroGPU) needs to know to send cached features instead of pixels."""
    from .preprocess import preprocessor_for

    return (
        config.variant == "seed"
        and shares_backbone(config, store.backbone)
        and store.preprocessor.key == preprocessor_for(store.backbone).key
    )


def shares_features(model: GRMPModel, store: FeatureStore) -> bool:
    """Whether `model` may score from `store`'s cached image features.

    Only the seed variant, whose image tower is the frozen backbone, and only on the same backbone
    (name, weights, precision) and the same preprocessing. The paper variant's features depend
    on its own prompted image tower.
    """
    return (
        model.features_frozen
        and store.backbone.key == model.backbone.key
        and store.preprocessor.key == model.preprocessor.key
    )
