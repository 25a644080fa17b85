"""The GPU boundary: every piece of a request's torch work, as generator functions that ZeroGPU runs
in a worker forked from the server (`@spaces.GPU`) and that run in place elsewhere.

Each takes one job (`iqa.app.jobs`): names resolved here against the registry built at start-up
(`Models`, inherited through fork), photos, prompt texts and the caller's cached features. Each
yields `Progress` while it works and ends with a reply of CPU data that the caller merges into its
caches (`iqa.app.calls`): state changed in a ZeroGPU worker is lost with it. Generators are
streamed back by ZeroGPU yield by yield, so progress, an adaptation's steps and its stop work there
as they do in one process. Durations are computed from the job (`job.seconds()`).
"""

from __future__ import annotations

import functools
import pickle
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from iqa.app.jobs import (
    ADAPT_CEILING_S,
    AdaptDone,
    AdaptJob,
    AdaptStep,
    CalibrateJob,
    CalibrateReply,
    CheckpointJob,
    EncodeJob,
    Failed,
    LabelledJob,
    LabJob,
    LabReply,
    MapJob,
    MapReply,
    Progress,
    ScoreJob,
    ScoreReply,
    SearchJob,
    SearchReply,
    WeightsJob,
    WeightsReply,
    clamp,
)
from iqa.app.models import REGISTRIES, Models
from iqa.app.zerogpu import gpu
from iqa.clip.backbones import BackboneUnavailable
from iqa.clip.features import FeatureStore, ProgressFn
from iqa.errors import InputError, IQAError
from iqa.lab.prompt_lab import LabelledFeatures, LabelledPhotos, labelled_image_features, rank_pairs
from iqa.lab.search import make_target, search_pairs
from iqa.lab.weights import learn_weights
from iqa.methods.clipiqa.quality_map import map_scorer, quality_map
from iqa.methods.clipiqa.scorer import combine, pair_features, pair_probabilities
from iqa.methods.grmp.checkpoint import checkpoint_content
from iqa.methods.grmp.train import adapt_seed
from iqa.methods.prompts import usable_pairs
from iqa.methods.scoring import Scorer
from iqa.photos.photo import Photo, PhotoKey

T = TypeVar("T")
Item = TypeVar("Item")


def _registry(job) -> Models:
    return REGISTRIES[job.registry]


def _prepared(job: ScoreJob | MapJob | LabJob | LabelledJob) -> tuple[Models, FeatureStore, tuple[set, set]]:
    """The job's registry, its backbone's store with the caller's cached features merged in, and a
    mark of the store's content for `added_since` (what the reply hands back)."""
    models = _registry(job)
    store = models.store(job.backbone)
    store.merge(job.known)
    return models, store, store.keys()


def _failures_as_values(call: Callable[[Any], Iterator]) -> Callable[[Any], Iterator]:
    """`call`, yielding `Failed` instead of raising an error the visitor can act on."""

    @functools.wraps(call)
    def forwarding(job):
        try:
            yield from call(job)
        except (IQAError, ValueError, OSError) as err:
            yield Failed(_picklable(err))

    return forwarding


def _picklable(err: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # noqa: BLE001 - any exception that cannot make the trip goes as its message
        return InputError(str(err))
    return err


def _encode(store: FeatureStore, photos: Sequence[Photo | PhotoKey], desc: str) -> Iterator[Progress]:
    """Encode the photos `store` has no features for, a batch at a time, saying how far it got."""
    missing = store.missing(photos)
    for start in range(0, len(missing), store.batch_size):
        store.image_features(missing[start : start + store.batch_size])
        yield Progress(min(start + store.batch_size, len(missing)), len(missing), desc)


def _streamed(work: Callable[[Callable[[Item], None]], T], wait: float = 0.1) -> Generator[Item, None, T]:
    """Run `work(emit)` in a thread of this call, yielding what it emits as it comes; returns its result.

    When the caller stops reading (a visitor's Stop: the generator is closed), the work's next
    `emit` raises, so the thread ends with it instead of running on unseen.
    """
    items: queue.Queue[Item] = queue.Queue()
    stop = threading.Event()

    def emit(item: Item) -> None:
        if stop.is_set():
            raise _Stopped
        items.put(item)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="iqa-gpu") as pool:
        future = pool.submit(work, emit)
        try:
            while not (future.done() and items.empty()):
                try:
                    yield items.get(timeout=wait)
                except queue.Empty:
                    continue
        finally:
            stop.set()
    return future.result()


def _reporting(work: Callable[[ProgressFn], T], desc: str) -> Generator[Progress, None, T]:
    """`work(progress)` streamed (`_streamed`), its progress reports as `Progress` items."""
    return _streamed(lambda emit: work(lambda done, total: emit(Progress(done, total, desc))))


@gpu(duration=lambda job: clamp(job.seconds()))
@_failures_as_values
def score(job: ScoreJob) -> Iterator[Progress | ScoreReply]:
    """Each method of the job on its photos, each built by its registry entry (`Models.scorer_for`):
    the page's backbone store encodes the photos the methods reading it lack, a method with its own
    tower (or a checkpoint it cannot share features with) encodes its own."""
    models, store, mark = _prepared(job)
    shared = sorted({i for call in job.methods if not call.own_encoder for i in call.photos})
    yield from _encode(store, [job.photos[i] for i in shared], "encoding photos")
    reply = ScoreReply({}, ({}, {}))
    for call in job.methods:
        try:
            scorer = models.scorer_for(call.name, store, call.options)
        except (BackboneUnavailable, ValueError, OSError) as err:  # ValueError: CheckpointError, CheckpointMismatch
            reply.errors[call.name] = str(err)
            continue
        photos = [job.photos[i] for i in call.photos]
        if call.own_encoder:
            yield from _encode(scorer.store, photos, f"encoding photos for {call.name}")
        reply.results[call.name] = scorer.score(photos)
        reply.descriptions[call.name] = description(scorer)
    reply.added = store.added_since(mark)
    yield reply


def description(scorer: Scorer) -> str:
    """What a scorer scores on, in words: its model's own description where it has one (a
    checkpoint's backbone and where its weights came from), else its backbone's."""
    model = getattr(scorer, "model", None)
    return str(getattr(model, "description", "")) or scorer.backbone.description


@gpu(duration=lambda job: clamp(job.seconds()))
@_failures_as_values
def load_checkpoint(job: CheckpointJob) -> Iterator[str]:
    """Load a checkpoint (kept where the GPU work runs); yields the backbone it scores on, in words."""
    yield description(_registry(job).scorer(job.checkpoint))


@gpu(duration=lambda job: clamp(job.seconds()))
@_failures_as_values
def encode(job: EncodeJob) -> Iterator[Progress | tuple[dict, dict]]:
    """The features of photos only: one part of a request too big for one call."""
    store = _registry(job).store(job.backbone)
    mark = store.keys()
    yield from _encode(store, job.photos, "encoding photos")
    yield store.added_since(mark)


@gpu(duration=lambda job: clamp(job.seconds()))
@_failures_as_values
def draw_map(job: MapJob) -> Iterator[Progress | MapReply]:
    """The quality map of one photo; its window features come back for the caller's cache."""
    _, store, mark = _prepared(job)
    scorer = map_scorer(store, job.pairs, job.temperature)
    qmap = yield from _reporting(lambda progress: quality_map(job.photo, scorer, progress=progress), "encoding windows")
    yield MapReply(qmap, store.added_since(mark))


@gpu(duration=lambda job: clamp(job.seconds()))
@_failures_as_values
def rank(job: LabJob) -> Iterator[Progress | LabReply]:
    """The Prompt lab: every pair ranked against the labels."""
    models, store, mark = _prepared(job)
    if job.photos is None:
        assert models.lab_set is not None  # the caller offers the server's set only when there is one
        labelled: LabelledPhotos | LabelledFeatures = models.lab_set
    else:
        yield from _encode(store, job.photos, "encoding labelled photos")
        labelled = LabelledPhotos(list(job.photos), list(job.scores))
    report = rank_pairs(store, job.pairs, labelled, job.temperature)
    yield LabReply(report, store.added_since(mark))


class _Stopped(Exception):
    """The caller stopped reading the adaptation's steps or a job's progress (the visitor pressed Stop)."""


@gpu(duration=lambda job: clamp(job.seconds(), ADAPT_CEILING_S))
@_failures_as_values
def adapt(job: AdaptJob) -> Generator[AdaptStep | AdaptDone, None, None]:
    """Few-shot adaptation, yielding every step; the adapted weights come back as a checkpoint's content.

    Training runs in a thread of this call whose steps this generator yields; when the caller
    stops reading (ZeroGPU closes the generator), the training stops at its next step.
    """
    store = _registry(job).store(job.backbone)

    def train(emit: Callable[[AdaptStep], None]):
        def on_step(step: int, loss: float, val_srcc: float | None) -> None:
            emit(AdaptStep(step, loss, val_srcc))

        return adapt_seed(store, list(job.images), job.steps, job.lam, on_step=on_step)

    model, _ = yield from _streamed(train, wait=0.2)
    yield AdaptDone(*checkpoint_content(model))


def _labelled(
    models: Models, store: FeatureStore, job: LabelledJob
) -> Generator[Progress, None, LabelledPhotos | LabelledFeatures]:
    """The job's labelled set, its photos encoded (the server's set: its features, read at start)."""
    if job.photos is None:
        assert models.lab_set is not None  # the caller offers the server's set only when there is one
        return models.lab_set
    yield from _encode(store, job.photos, "encoding labelled photos")
    return LabelledPhotos(list(job.photos), list(job.scores), keep=list(job.keep))


@gpu(duration=lambda job: clamp(job.seconds()))
@_failures_as_values
def calibrate(job: CalibrateJob) -> Iterator[Progress | CalibrateReply]:
    """CLIP-IQA's score and each pair's p for every labelled photo, for the filter's calibration."""
    models, store, mark = _prepared(job)
    labelled = yield from _labelled(models, store, job)
    images = labelled_image_features(store, labelled)
    pairs = usable_pairs(list(job.pairs), store.backbone.tokenizer)
    t = store.backbone.logit_scale if job.temperature is None else job.temperature
    _, _, p = pair_probabilities(images, *pair_features(store, pairs), t)
    scores = combine(p, torch.tensor([pair.weight for pair in pairs]))
    names = [photo.name for photo in labelled.photos] if isinstance(labelled, LabelledPhotos) else labelled.names
    yield CalibrateReply(names, scores, p, pairs, list(labelled.keep), store.added_since(mark))


@gpu(duration=lambda job: clamp(job.seconds()))
@_failures_as_values
def search(job: SearchJob) -> Iterator[Progress | SearchReply]:
    """Pair search: candidates ranked, a set selected, both cross-validated; stops when the caller does."""
    models, store, mark = _prepared(job)
    labelled = yield from _labelled(models, store, job)
    images = labelled_image_features(store, labelled)
    target = make_target(labelled.scores, labelled.keep, job.metric, job.folds, job.seed)
    baselines = dict(job.baselines)

    def work(progress: ProgressFn):
        return search_pairs(
            store, images, target, job.candidates, baselines, job.temperature, job.max_pairs, progress=progress
        )

    report = yield from _reporting(work, "encoding candidate pairs")
    yield SearchReply(report, store.added_since(mark))


@gpu(duration=lambda job: clamp(job.seconds()))
@_failures_as_values
def fit_weights(job: WeightsJob) -> Iterator[Progress | WeightsReply]:
    """Non-negative weights for the table's pairs, fitted on the labels and cross-validated."""
    models, store, mark = _prepared(job)
    labelled = yield from _labelled(models, store, job)
    images = labelled_image_features(store, labelled)
    target = make_target(labelled.scores, labelled.keep, job.metric, job.folds, job.seed)
    yield WeightsReply(learn_weights(store, images, job.pairs, target, job.temperature), store.added_since(mark))
