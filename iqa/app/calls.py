"""The handlers' side of the GPU boundary: jobs built from this process's caches, run, and their
replies merged back.

A job carries pixels only for photos this process has no features (or remembered result) for, and
the cached features of the others, so a prompt edit sends no pixel and re-encodes nothing even in a
fresh ZeroGPU worker. Calls run in the handler's own thread, never in a pool's: ZeroGPU schedules a
call with the Gradio request of the thread that makes it (the visitor's quota and priority).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from iqa.app import gpu
from iqa.app.jobs import (
    CEILING_S,
    FLOOR_S,
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
    MapJob,
    MethodCall,
    Progress,
    ScoreJob,
    SearchJob,
    SearchReply,
    WeightsJob,
    WeightsReply,
    max_adapt_steps,
    photo_seconds,
)
from iqa.app.method_settings import MethodRequest
from iqa.app.models import CheckpointRef, Models
from iqa.app.zerogpu import on_zerogpu
from iqa.clip.features import FeatureStore
from iqa.errors import InputError
from iqa.lab.prompt_lab import LabelledPhotos, LabReport
from iqa.lab.search import Metric
from iqa.labels.datasets import LabelledImage
from iqa.methods import registry
from iqa.methods.clipiqa.quality_map import QualityMap, map_scorer, window_keys
from iqa.methods.prompts import PromptPair
from iqa.methods.results import ScoreResult
from iqa.photos.photo import Photo, PhotoKey
from iqa.report.compare import ComparedPhoto

ProgressFn = Callable[[Progress], None]
Reply = TypeVar("Reply")


def progress_bar(bar: Callable[..., object]) -> ProgressFn:
    """A GPU call's progress on the page (`bar` is the handler's `gr.Progress`)."""

    def show(item: Progress) -> None:
        bar((item.done, item.total), desc=item.desc)

    return show


def run(call: Callable[..., Iterator[Progress | Reply]], job: object, progress: ProgressFn | None = None) -> Reply:
    """One GPU call: its progress forwarded, its reply returned."""
    reply = None
    for item in call(job):
        if isinstance(item, Failed):
            raise item.error
        if isinstance(item, Progress):
            if progress is not None:
                progress(item)
        else:
            reply = item
    if reply is None:
        raise RuntimeError(f"{getattr(call, '__name__', call)} ended without a reply")
    return reply


class ResultCache:
    """One method's results (with one checkpoint or set of options) remembered per photo content
    (least recently used dropped first)."""

    def __init__(self, max_items: int = 20_000):
        self.description = ""  # what the method scores on, in words, once a call has said
        self._results: OrderedDict[str, ScoreResult] = OrderedDict()
        self._max_items = max_items
        self._lock = threading.Lock()

    def get(self, digest: str) -> ScoreResult | None:
        with self._lock:
            if digest in self._results:
                self._results.move_to_end(digest)
            return self._results.get(digest)

    def put(self, digest: str, result: ScoreResult) -> None:
        with self._lock:
            self._results[digest] = result
            self._results.move_to_end(digest)
            while len(self._results) > self._max_items:
                self._results.popitem(last=False)


class Caches:
    """This process's result caches of the methods that do not follow the prompt table, one per
    method and options (a checkpoint's content, or the backbone and options), the least recent dropped first."""

    def __init__(self, max_checkpoints: int):
        self._caches: OrderedDict[str, ResultCache] = OrderedDict()
        self._max = max_checkpoints
        self._lock = threading.Lock()

    def results(self, key: str) -> ResultCache:
        with self._lock:
            cache = self._caches.setdefault(key, ResultCache())
            self._caches.move_to_end(key)
            while len(self._caches) > self._max:
                self._caches.popitem(last=False)
            return cache


def checkpoint_key(ref: CheckpointRef) -> str:
    """A checkpoint's results' cache: by its content (whichever backbone the page shows)."""
    return f"checkpoint:{ref.digest}"


def result_key(request: MethodRequest, store: FeatureStore) -> str:
    """Where `request`'s results are remembered: its checkpoint's content, or its method, backbone and options."""
    ref = request.checkpoint
    if ref is not None:
        return checkpoint_key(ref)
    return f"{request.name}:{store.backbone.key}:{sorted(request.options.items())!r}"


@dataclass
class Scored:
    rows: list[ComparedPhoto]
    encoded: int  # images encoded by the backbone in this request (the rest came from the caches)
    descriptions: dict[str, str] = field(default_factory=dict)  # by method: what it scored on, in words
    errors: dict[str, str] = field(default_factory=dict)  # by method: why it could not score


def per_call(backbone: str) -> int:
    """How many photos one call may encode within the ceiling."""
    return max(1, int((CEILING_S - FLOOR_S) / photo_seconds(backbone)))


@dataclass
class _Plan:
    """One method of a request: where its results are remembered (None: it follows the prompt
    table, scored afresh from cached features), and whether it encodes with its own tower."""

    request: MethodRequest
    results: ResultCache | None
    own_encoder: bool

    def needs(self, photo: Photo) -> bool:
        return self.results is None or self.results.get(photo.digest) is None


def score_photos(
    models: Models,
    caches: Caches,
    store: FeatureStore,
    requests: Sequence[MethodRequest],
    photos: Sequence[Photo],
    progress: ProgressFn | None = None,
) -> Scored:
    """Each requested method's results for every photo, in as many calls as the ceiling needs.

    A method that follows the prompt table is scored afresh from cached features; any other's
    results are remembered per photo (`Caches`), so a prompt edit does not score it again.
    """
    if not requests:  # every chosen method lacks what it needs (a checkpoint): no GPU call
        return Scored([ComparedPhoto(photo.name, {}) for photo in photos], 0)
    plans = [_plan(models, caches, store, request) for request in requests]
    uncached = {store.image_key(p) for p in store.missing(photos)}
    cost = [
        int(store.image_key(photo) in uncached and any(p.needs(photo) for p in plans if not p.own_encoder))
        + sum(p.needs(photo) for p in plans if p.own_encoder)
        for photo in photos
    ]  # images a call encodes for each photo: the backbone's features, each own tower's
    budget, total, done = per_call(store.backbone.name), sum(cost), 0
    fresh: dict[str, list[ScoreResult]] = {p.request.name: [] for p in plans if p.results is None}
    scored = Scored([], 0)
    for part in _parts(list(range(len(photos))), cost, budget):
        job = _score_job(models, store, plans, [photos[i] for i in part])
        reply = run(gpu.score, job, _offset(progress, done, total))
        done += sum(cost[i] for i in part)
        store.merge(reply.added)
        scored.encoded += len(reply.added[0])
        scored.errors.update(reply.errors)
        for plan, call in zip(plans, job.methods):
            results = reply.results.get(call.name, [])
            if plan.results is None:
                fresh[call.name] += results
                continue
            plan.results.description = reply.descriptions.get(call.name) or plan.results.description
            for index, result in zip(call.photos, results):
                plan.results.put(job.photos[index].digest, result)
    for plan in plans:
        name = plan.request.name
        description = plan.results.description if plan.results is not None else ""
        if description and name not in scored.errors:
            scored.descriptions[name] = description
    for i, photo in enumerate(photos):
        row: dict[str, ScoreResult] = {}
        for plan in plans:
            name = plan.request.name
            if plan.results is None:
                if len(fresh[name]) == len(photos):
                    row[name] = fresh[name][i]
            else:
                cached = plan.results.get(photo.digest)
                if cached is not None:
                    row[name] = replace(cached, name=photo.name)
        scored.rows.append(ComparedPhoto(photo.name, row))
    return scored


def _plan(models: Models, caches: Caches, store: FeatureStore, request: MethodRequest) -> _Plan:
    method = registry.method(request.name)
    if method.follows_prompts:
        return _Plan(request, None, method.own_features)
    ref = request.checkpoint
    own = not _scores_from(models, ref, store) if ref is not None else not method.needs_store
    own = own or method.own_features
    return _Plan(request, caches.results(result_key(request, store)), own)


def _scores_from(models: Models, ref: CheckpointRef, store: FeatureStore) -> bool:
    """Whether the checkpoint's scorer reads `store`'s features (the page's backbone): only a seed
    checkpoint on that very backbone; any other encodes with its own store, which needs pixels."""
    info = models.info(ref)
    return info.shares_features and models.known_store(info.backbone) is store


def _parts(indices: list[int], cost: list[int], budget: int) -> Iterator[list[int]]:
    """Consecutive runs of `indices` whose cost fits `budget` (a photo alone always makes a part)."""
    part: list[int] = []
    spent = 0
    for i in indices:
        if part and spent + cost[i] > budget:
            yield part
            part, spent = [], 0
        part.append(i)
        spent += cost[i]
    if part:
        yield part


def _score_job(models: Models, store: FeatureStore, plans: Sequence[_Plan], photos: list[Photo]) -> ScoreJob:
    pairs = [pair for plan in plans for pair in plan.request.options.get("pairs", ())]
    known = store.export([store.image_key(p) for p in photos], _texts(list(dict.fromkeys(pairs))))
    calls = [
        MethodCall(
            plan.request.name,
            dict(plan.request.options),
            tuple(i for i, p in enumerate(photos) if plan.needs(p)),
            plan.own_encoder,
        )
        for plan in plans
    ]
    pixels = {
        i for call in calls if not call.own_encoder for i in call.photos if store.image_key(photos[i]) not in known[0]
    }
    pixels |= {i for call in calls if call.own_encoder for i in call.photos}
    return ScoreJob(
        registry=models.id,
        backbone=store.backbone.name,
        photos=tuple(p if i in pixels else p.key() for i, p in enumerate(photos)),
        known=known,
        methods=tuple(calls),
    )


def _texts(pairs: Sequence[PromptPair]) -> list[str]:
    return [text for pair in pairs for text in (pair.positive, pair.negative)]


def _offset(progress: ProgressFn | None, done: int, total: int) -> ProgressFn | None:
    """Progress of one call as part of the whole request."""
    if progress is None:
        return None
    return lambda item: progress(Progress(done + item.done, max(total, done + item.total), item.desc))


def map_photo(
    models: Models,
    store: FeatureStore,
    pairs: Sequence[PromptPair],
    temperature: float | None,
    photo: Photo,
    progress: ProgressFn | None = None,
) -> QualityMap:
    """The quality map of one photo; windows already encoded come from the store, new ones go into it."""
    keys = window_keys(photo, map_scorer(store, pairs, temperature))
    job = MapJob(models.id, store.backbone.name, tuple(pairs), temperature, photo, store.export(keys, _texts(pairs)))
    reply = run(gpu.draw_map, job, progress)
    store.merge(reply.added)
    return reply.qmap


def rank_labelled(
    models: Models,
    store: FeatureStore,
    pairs: Sequence[PromptPair],
    temperature: float | None,
    labelled: LabelledPhotos | None,
    progress: ProgressFn | None = None,
) -> LabReport:
    """The Prompt lab's ranking, on `labelled` or (None) the server's labelled set."""
    if labelled is None:
        job = LabJob(
            models.id, store.backbone.name, tuple(pairs), temperature, None, (), store.export([], _texts(pairs))
        )
    else:
        photos = [p for p in labelled.photos if isinstance(p, Photo)]
        _encode_in_parts(models, store, store.missing(photos), progress)
        keys = [store.image_key(p) for p in labelled.photos]
        known = store.export(keys, _texts(pairs))
        sent = tuple(p.key() if isinstance(p, Photo) and store.image_key(p) in known[0] else p for p in labelled.photos)
        job = LabJob(models.id, store.backbone.name, tuple(pairs), temperature, sent, tuple(labelled.scores), known)
    reply = run(gpu.rank, job, progress)
    store.merge(reply.added)
    return reply.report


def _encode_in_parts(
    models: Models, store: FeatureStore, missing: Sequence[Photo | PhotoKey], progress: ProgressFn | None
) -> None:
    """Encode what would not fit the job's own call, a call per part, into this process's store."""
    budget = per_call(store.backbone.name)
    photos = [p for p in missing if isinstance(p, Photo)]
    if len(photos) <= budget:
        return
    for start in range(0, len(photos), budget):
        job = EncodeJob(models.id, store.backbone.name, tuple(photos[start : start + budget]))
        store.merge(run(gpu.encode, job, _offset(progress, start, len(photos))))


def load_checkpoint(models: Models, caches: Caches, ref: CheckpointRef) -> str:
    """Load an uploaded checkpoint where the GPU work runs, refused there with its reason; returns
    the backbone it scores on, in words."""
    caches.results(checkpoint_key(ref)).description = run(gpu.load_checkpoint, CheckpointJob(models.id, ref))
    return caches.results(checkpoint_key(ref)).description


def adapt_steps(
    models: Models, store: FeatureStore, images: Sequence[LabelledImage], steps: int, lam: float
) -> Generator[AdaptStep | AdaptDone, None, None]:
    """An adaptation's steps as they happen, then the adapted weights; refused when it cannot fit one call."""
    name = store.backbone.name
    fits = max_adapt_steps(name, len(images))
    if on_zerogpu() and steps > fits:
        raise InputError(
            f"{steps} steps on {len(images)} photos do not fit one GPU call; at most {fits} steps do "
            f"(fewer photos allow more)"
        )
    return gpu.adapt(AdaptJob(models.id, name, tuple(images), steps, lam))


def labelled_job(
    models: Models,
    store: FeatureStore,
    pairs: Sequence[PromptPair],
    temperature: float | None,
    labelled: LabelledPhotos | None,
    progress: ProgressFn | None = None,
) -> LabelledJob:
    """The common part of the Prompt lab's jobs on labels: `labelled`'s photos (pixels only where
    this process has no features; what would not fit the call encoded first, in parts) and labels,
    or (None) the server's set."""
    if labelled is None:
        return LabelledJob(
            models.id, store.backbone.name, tuple(pairs), temperature, None, (), (), store.export([], _texts(pairs))
        )
    photos = [p for p in labelled.photos if isinstance(p, Photo)]
    _encode_in_parts(models, store, store.missing(photos), progress)
    keys = [store.image_key(p) for p in labelled.photos]
    known = store.export(keys, _texts(pairs))
    sent = tuple(p.key() if isinstance(p, Photo) and store.image_key(p) in known[0] else p for p in labelled.photos)
    keep = tuple(labelled.keep) or (None,) * len(labelled.scores)
    return LabelledJob(
        models.id, store.backbone.name, tuple(pairs), temperature, sent, tuple(labelled.scores), keep, known
    )


def calibrate_labelled(
    models: Models,
    store: FeatureStore,
    pairs: Sequence[PromptPair],
    temperature: float | None,
    labelled: LabelledPhotos | None,
    progress: ProgressFn | None = None,
) -> CalibrateReply:
    """CLIP-IQA's scores and each pair's p on `labelled` (None: the server's set), for calibration."""
    base = labelled_job(models, store, pairs, temperature, labelled, progress)
    reply = run(gpu.calibrate, CalibrateJob(**vars(base)), progress)
    store.merge(reply.added)
    return reply


def search_steps(
    base: LabelledJob,
    candidates: Sequence[tuple[PromptPair, str]],
    baselines: Mapping[str, Sequence[PromptPair]],
    metric: Metric,
    folds: int,
    max_pairs: int,
) -> Generator[Progress | SearchReply | Failed, None, None]:
    """A pair search's progress as it happens, then its reply; closing it stops the search there."""
    named = tuple((name, tuple(pairs)) for name, pairs in baselines.items())
    job = SearchJob(
        **vars(base), candidates=tuple(candidates), baselines=named, metric=metric, folds=folds, max_pairs=max_pairs
    )
    return gpu.search(job)


def fit_weights(
    store: FeatureStore, base: LabelledJob, metric: Metric, folds: int, progress: ProgressFn | None = None
) -> WeightsReply:
    """Non-negative weights for the table's pairs fitted on the labels, with their cross-validated report."""
    reply = run(gpu.fit_weights, WeightsJob(**vars(base), metric=metric, folds=folds), progress)
    store.merge(reply.added)
    return reply
