"""The scorer contract, and the one factory that builds scorers from a spec.

Every method (CLIP-IQA, GRMP-IQA, and any added later) is a `Scorer`: it turns photos into one
`ScoreResult` each. The command line, the engines, the evaluation and the benchmarks build them
with `build_scorers`, which asks each method's registry entry (`iqa.methods.registry`) to build it.

This module imports torch and the models only when a scorer is built, so that the command line's
parser can import it cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from iqa.errors import UsageError
from iqa.methods import registry
from iqa.names import CLIP_IQA, DEFAULT_BACKBONE, DEFAULT_MAX_SIDE, DEFAULT_PRETRAINED

if TYPE_CHECKING:
    import torch

    from iqa.clip.backbones import Backbone
    from iqa.clip.features import FeatureStore, ProgressFn
    from iqa.methods.results import ScoreResult
    from iqa.photos.photo import Photo, PhotoKey


class Scorer(Protocol):
    """What every scoring method offers."""

    @property
    def method(self) -> str:
        """A registered method's name (`iqa.methods.registry`): the key of its results."""

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
    """What to build: the methods (names in `iqa.methods.registry`), the backbone they share, and
    each method's own options by method name (CLIP-IQA: `pairs`, `temperature`; GRMP-IQA:
    `checkpoint`)."""

    methods: tuple[str, ...] = (CLIP_IQA,)
    backbone: str = DEFAULT_BACKBONE
    pretrained: str | None = DEFAULT_PRETRAINED
    weights: str | os.PathLike | None = None  # a local backbone checkpoint instead of `pretrained`
    device: str | None = None
    dtype: str | None = None
    max_side: int | None = DEFAULT_MAX_SIDE
    batch_size: int = 16
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.methods:
            raise UsageError(f"no method; choose among {', '.join(registry.names())}")
        for name in self.methods:
            missing = registry.method(name).missing(self.options_for(name))
            if missing:
                raise UsageError(missing[0])

    def options_for(self, method: str) -> Mapping[str, Any]:
        """`method`'s own options (none given: empty)."""
        return self.options.get(method, {})


def build_scorers(spec: ScorerSpec, store: FeatureStore | None = None) -> dict[str, Scorer]:
    """The scorers `spec` asks for, keyed by method, in the order of `spec.methods`.

    Every method is built on `store` when one is given (its backbone then stands for the spec's),
    else on one new store of the spec's backbone, which they share; a method that does not need one
    (`Method.needs_store` False, e.g. GRMP-IQA loading a backbone of its own) is built without it
    when it is alone.
    """
    methods = [registry.method(name) for name in spec.methods]
    if store is None and any(m.needs_store for m in methods):
        store = feature_store(spec)
    return {m.name: m.scorer(spec, store) for m in methods}


def feature_store(spec: ScorerSpec) -> FeatureStore:
    """A feature cache over the spec's backbone (loaded here)."""
    from iqa.clip.backbones import load_backbone
    from iqa.clip.features import FeatureStore

    backbone = load_backbone(spec.backbone, spec.pretrained, spec.weights, spec.device, spec.dtype)
    return FeatureStore(backbone, batch_size=spec.batch_size, max_side=spec.max_side)


def score_from_store(
    scorer: Scorer, photos: Sequence[Photo | PhotoKey], progress: ProgressFn | None
) -> list[ScoreResult]:
    """The usual `Scorer.score`: the photos' features from the scorer's store, then `score_features`
    (with each photo's preprocessing notes)."""
    features = scorer.store.image_features(photos, progress)
    return scorer.score_features(features, [p.name for p in photos], [scorer.store.notes(p) for p in photos])
