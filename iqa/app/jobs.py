"""What crosses the GPU boundary (`iqa.app.gpu`): jobs in, progress and replies out, and what each
job may cost.

Under ZeroGPU every job and every value yielded back is pickled (multiprocessing's
`ForkingPickler`), so these hold only plain data: the id of the start-up registry (`Models.id`),
names, prompt pairs, photos (pixels only where the caller's caches lack their features, else a
`PhotoKey`), the caller's cached features for them, and CPU tensors. Never a model, a store or a lock.

Durations: ZeroGPU reserves a call's `duration` from the visitor's daily quota before it starts
(a few minutes a day for free accounts, less for anonymous visitors), so each job's duration is
estimated from its work, between `FLOOR_S` and `CEILING_S`; the caller splits what would exceed
the ceiling into several calls, and refuses an adaptation that cannot fit one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from iqa.app.models import CheckpointRef, checkpoint_in
from iqa.lab.prompt_lab import LabReport
from iqa.lab.search import Metric, SearchReport
from iqa.lab.weights import WeightReport
from iqa.labels.datasets import LabelledImage
from iqa.methods.clipiqa.quality_map import MAX_WINDOWS, QualityMap
from iqa.methods.grmp.checkpoint import checkpoint_paths
from iqa.methods.prompts import PromptPair
from iqa.methods.results import ScoreResult
from iqa.photos.photo import Photo, PhotoKey

FLOOR_S = 10.0  # a worker's start: fork, the start-up weights moved onto the GPU
CEILING_S = 60.0  # one call at most: a free visitor's daily quota holds several
ADAPT_CEILING_S = 100.0  # an adaptation is one call (its steps stream back); anonymous visitors have 120 s a day
STEP_S = 0.03  # one adaptation step of the seed variant on cached features (text tower forward + backward)
TEXT_S = 0.002
LOAD_MB_S = 100.0  # reading, hashing and building a checkpoint's tensors


def photo_seconds(backbone: str) -> float:
    """Estimated GPU-side seconds to preprocess and encode one photo (or one map window) in fp16.

    Upper estimates on a ZeroGPU slice: the CPU side of the worker (resizing, normalising)
    dominates. `python -m benchmarks.space_gpu` measures the real figures on a GPU.
    """
    if backbone.startswith("ViT-L"):
        return 0.03
    if backbone.startswith(("ViT-B", "test-")):
        return 0.015
    return 0.03  # RN50 at native resolution (up to 1024 px) and anything else


def load_seconds(ref: CheckpointRef | None) -> float:
    """Estimated seconds to hash and load a checkpoint where the GPU work runs (a fresh worker has
    only the start-up ones): its files' size at LOAD_MB_S."""
    if ref is None:
        return 0.0
    return sum(path.stat().st_size for path in checkpoint_paths(ref.path) if path.exists()) / 1e6 / LOAD_MB_S


def clamp(seconds: float, ceiling: float = CEILING_S) -> int:
    return int(min(max(seconds, FLOOR_S), ceiling))


@dataclass(frozen=True)
class Progress:
    """Yielded while a job works: `done` of `total` units of `desc`."""

    done: int
    total: int
    desc: str


def pixel_count(photos: tuple[Photo | PhotoKey, ...]) -> int:
    """How many of `photos` travel with their pixels (the ones a job may have to encode)."""
    return sum(isinstance(p, Photo) for p in photos)


@dataclass(frozen=True)
class MethodCall:
    """One registered method of a `ScoreJob`: its name, its options (`Method.arguments`: prompt
    pairs, a temperature, a `CheckpointRef`), and the indices of the job's photos it scores."""

    name: str
    options: dict[str, Any]
    photos: tuple[int, ...]
    own_encoder: bool = False  # it encodes with a tower of its own (its photos travel with pixels)

    @property
    def checkpoint(self) -> CheckpointRef | None:
        return checkpoint_in(self.options)


@dataclass(frozen=True)
class ScoreJob:
    """Score `photos` with each of `methods` (each on its own photos)."""

    registry: str
    backbone: str
    photos: tuple[Photo | PhotoKey, ...]
    known: tuple[dict, dict]  # the backbone store's cached features of these photos and of the pairs' texts
    methods: tuple[MethodCall, ...] = ()

    def texts(self) -> int:
        pairs = {pair for call in self.methods for pair in call.options.get("pairs", ())}
        return 2 * len(pairs) - len(self.known[1])

    def seconds(self) -> float:
        own = sum(len(call.photos) for call in self.methods if call.own_encoder)
        loading = sum(load_seconds(call.checkpoint) for call in self.methods if call.photos)
        encodes = pixel_count(self.photos) + own
        return FLOOR_S + loading + encodes * photo_seconds(self.backbone) + max(self.texts(), 0) * TEXT_S


@dataclass
class ScoreReply:
    results: dict[str, list[ScoreResult]]  # by method, for its call's photos in their order
    added: tuple[dict, dict]  # what the backbone's store cached during the call
    descriptions: dict[str, str] = field(default_factory=dict)  # by method: what it scored on, in words
    errors: dict[str, str] = field(default_factory=dict)  # by method: why it could not score (a checkpoint refused)


@dataclass(frozen=True)
class CheckpointJob:
    """Load a checkpoint where the GPU work runs (an upload: refused there with its reason)."""

    registry: str
    checkpoint: CheckpointRef

    def seconds(self) -> float:
        return FLOOR_S + load_seconds(self.checkpoint)


@dataclass(frozen=True)
class Failed:
    """A job refused for a reason the visitor can act on (an `IQAError`, ValueError or OSError),
    handed back as a value so that its message survives the trip (ZeroGPU reduces an exception
    raised in its worker to the name of its class)."""

    error: Exception


@dataclass(frozen=True)
class EncodeJob:
    """Only encode `photos` (a part of a request too big for one call), for the caller's cache."""

    registry: str
    backbone: str
    photos: tuple[Photo, ...]

    def seconds(self) -> float:
        return FLOOR_S + len(self.photos) * photo_seconds(self.backbone)


@dataclass(frozen=True)
class MapJob:
    """The quality map of `photo` (its windows' cached features in `known`)."""

    registry: str
    backbone: str
    pairs: tuple[PromptPair, ...]
    temperature: float | None
    photo: Photo
    known: tuple[dict, dict]

    def seconds(self) -> float:
        return FLOOR_S + (MAX_WINDOWS - len(self.known[0])) * photo_seconds(self.backbone)


@dataclass
class MapReply:
    qmap: QualityMap
    added: tuple[dict, dict]


@dataclass(frozen=True)
class LabJob:
    """Rank `pairs` against labels: of `photos` with `scores`, or of the server's set when `photos` is None."""

    registry: str
    backbone: str
    pairs: tuple[PromptPair, ...]
    temperature: float | None
    photos: tuple[Photo | PhotoKey, ...] | None
    scores: tuple[float, ...]
    known: tuple[dict, dict]

    def seconds(self) -> float:
        pixels = pixel_count(self.photos) if self.photos is not None else 0
        return FLOOR_S + pixels * photo_seconds(self.backbone) + 2 * len(self.pairs) * TEXT_S


@dataclass
class LabReply:
    report: LabReport
    added: tuple[dict, dict]


@dataclass(frozen=True)
class AdaptJob:
    """Few-shot adaptation of the seed variant on `images` (files on this server, with their labels)."""

    registry: str
    backbone: str
    images: tuple[LabelledImage, ...]
    steps: int
    lam: float

    def seconds(self) -> float:
        return FLOOR_S + len(self.images) * photo_seconds(self.backbone) + self.steps * STEP_S


def max_adapt_steps(backbone: str, images: int) -> int:
    """The most adaptation steps one call can hold within `ADAPT_CEILING_S`."""
    return max(0, int((ADAPT_CEILING_S - FLOOR_S - images * photo_seconds(backbone)) / STEP_S))


@dataclass(frozen=True)
class AdaptStep:
    step: int
    loss: float
    val_srcc: float | None


@dataclass
class AdaptDone:
    """The adapted model as a checkpoint's content (`iqa.methods.grmp.checkpoint.write_checkpoint`)."""

    tensors: dict[str, torch.Tensor]  # on the CPU
    meta: dict


@dataclass(frozen=True)
class LabelledJob:
    """Prompt lab work on labels: of `photos` with their `scores` and `keep` labels, or of the
    server's labelled set when `photos` is None; `pairs` is the prompt table."""

    registry: str
    backbone: str
    pairs: tuple[PromptPair, ...]
    temperature: float | None
    photos: tuple[Photo | PhotoKey, ...] | None
    scores: tuple[float, ...]
    keep: tuple[bool | None, ...]
    known: tuple[dict, dict]

    def texts(self) -> int:
        return 2 * len(self.pairs)

    def seconds(self) -> float:
        pixels = pixel_count(self.photos) if self.photos is not None else 0
        return FLOOR_S + pixels * photo_seconds(self.backbone) + self.texts() * TEXT_S


@dataclass(frozen=True)
class CalibrateJob(LabelledJob):
    """Score the labelled photos with the table's pairs, for the filter's calibration."""


@dataclass
class CalibrateReply:
    names: list[str]
    scores: torch.Tensor  # [N] CLIP-IQA scores
    p: torch.Tensor  # [N, P] p of each usable pair
    pairs: list[PromptPair]  # the usable pairs, in the columns' order
    keep: list[bool | None]
    added: tuple[dict, dict]


@dataclass(frozen=True)
class SearchJob(LabelledJob):
    """Rank `candidates` (pair, tag) against the labels and select up to `max_pairs`, cross-validated
    beside the `baselines` (name, pairs)."""

    candidates: tuple[tuple[PromptPair, str], ...] = ()
    baselines: tuple[tuple[str, tuple[PromptPair, ...]], ...] = ()
    metric: Metric = "auc"
    folds: int = 5
    seed: int = 0
    max_pairs: int = 5

    def texts(self) -> int:
        return 2 * (len(self.candidates) + sum(len(pairs) for _, pairs in self.baselines))


@dataclass
class SearchReply:
    report: SearchReport
    added: tuple[dict, dict]


@dataclass(frozen=True)
class WeightsJob(LabelledJob):
    """Fit non-negative weights for the table's pairs on the labels, cross-validated."""

    metric: Metric = "auc"
    folds: int = 5
    seed: int = 0


@dataclass
class WeightsReply:
    report: WeightReport
    added: tuple[dict, dict]
