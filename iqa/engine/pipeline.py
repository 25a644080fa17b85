"""Streaming scoring of photo files with bounded memory: the command line's engine.

Stages, batch by batch, with at most `prefetch` batches of decoded pixels alive at any time:

1. paths come from a lazy iterator (`iter_photo_paths`), never a list of photos;
2. probe (threads): read each file, hash its bytes, read its size from the header; look the hash
   up in the on-disk feature cache (`iqa.engine.disk_cache`) for every feature source; a photo found
   for all of them is never decoded;
3. decode (worker processes, `iqa.photos.decode.decode_or_error`): JPEG draft decoding, EXIF rotation,
   the exact resize; uint8 [3, H, W] pixels back, or the photo's PhotoError;
4. encode (this process): uint8 to the device (pinned memory on CUDA), normalised there, grouped
   by size (native resolution cannot pad), encoded; new features go to the disk cache;
5. score: every scorer scores the batch from the features (`score_features`), and the batch's
   results are handed on (written by the caller) before the next one is encoded.

The decode of the next batches runs in the pool while this one is encoded (the prefetch window).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqa.clip.backbones import Backbone
from iqa.clip.features import FeatureStore
from iqa.clip.preprocess import Preprocessor
from iqa.engine.decode_pool import DecodeJob, DecodePool, Decoder, default_workers
from iqa.engine.disk_cache import DiskCache
from iqa.methods.results import ScoreResult
from iqa.methods.scoring import Scorer
from iqa.photos.decode import Decoded, DecodeOptions, decode_or_error, probe_file
from iqa.photos.photo import MAX_BYTES, MAX_PIXELS, PhotoError
from iqa.photos.signature import FileSignature, file_signature

logger = logging.getLogger(__name__)


@dataclass
class PipelineOptions:
    """How photos are fed: decoding workers (0: in this process), draft decoding, cache, limits."""

    workers: int = field(default_factory=default_workers)
    draft: bool = True
    cache: DiskCache | None = None
    weights_fingerprint: str = ""  # of a local backbone weights file: part of the cache key
    prefetch: int = 2  # batches decoded ahead of the one being encoded
    # Pixels per encoder call at most (within a batch): memory follows the photos' size too, not
    # only their count; 8 MP is 10 photos at 1024x768 (RN50 native), the whole batch at 224x224.
    max_batch_pixels: int = 8_000_000
    # RN50 at native resolution on the CPU runs faster on channels_last tensors (1.34x at 448x336,
    # benchmarks/pipeline_bench.py); it converts the backbone's image tower, so only for a backbone
    # this run owns (the command line's), not one shared with an app.
    channels_last: bool = False
    max_pixels: int | None = MAX_PIXELS
    max_bytes: int | None = MAX_BYTES


@dataclass
class PhotoScores:
    """One photo's results, one per scorer (in the scorers' order)."""

    name: str
    path: str
    digest: str
    results: list[ScoreResult]


@dataclass
class RunCounts:
    """What a run did, for the summary line."""

    scored: int = 0
    decoded: int = 0
    cached: int = 0  # photos whose features all came from the disk cache (not decoded)
    skipped: list[PhotoError] = field(default_factory=list)


@dataclass
class _Source:
    """One feature source: a store (backbone + preprocessing) and its key in the disk cache."""

    store: FeatureStore
    cache_model: str | None  # None: not cached on disk

    @property
    def preprocess_key(self) -> str:
        return self.store.preprocessor.key


@dataclass
class _Pending:
    """A photo in flight: cached features per source, and the decode still running (if any)."""

    name: str
    path: str
    digest: str = ""
    size: tuple[int, int] = (0, 0)
    features: list[torch.Tensor | None] = field(default_factory=list)
    decode: DecodeJob | None = None
    error: PhotoError | None = None
    signature: FileSignature | None = None  # taken before the file is read


def weights_fingerprint(weights: str | os.PathLike | None) -> str:
    """Path, size and modification time of a local weights file (or folder): edited weights, new key."""
    if not weights:
        return ""
    path = Path(weights).resolve()
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


class Pipeline:
    """Scores photo files in bounded batches with every scorer; see the module docstring."""

    def __init__(
        self, scorers: Sequence[Scorer], options: PipelineOptions | None = None, decoder: Decoder | None = None
    ):
        self.scorers = list(scorers)
        self.options = options or PipelineOptions()
        self.decoder = decoder or decode_or_error
        self.sources: list[_Source] = []
        self._source_of: list[int] = []
        for scorer in self.scorers:
            store = scorer.store
            index = next((i for i, s in enumerate(self.sources) if s.store is store), None)
            if index is None:
                index = len(self.sources)
                self.sources.append(_Source(store, self._cache_model(store)))
            self._source_of.append(index)
        self.batch_size = max(1, self.sources[0].store.batch_size)
        self.decode_options = DecodeOptions(
            tuple(
                s.store.preprocessor.resize_plan() if isinstance(s.store.preprocessor, Preprocessor) else None
                for s in self.sources
            ),
            draft=self.options.draft,
            max_pixels=self.options.max_pixels,
            max_bytes=self.options.max_bytes,
        )
        self.counts = RunCounts()
        self._channels_last = {i for i, s in enumerate(self.sources) if self._use_channels_last(s.store)}
        for index in self._channels_last:
            self.sources[index].store.backbone.model.visual.to(memory_format=torch.channels_last)

    def _use_channels_last(self, store: FeatureStore) -> bool:
        backbone = store.backbone
        return (
            self.options.channels_last
            and isinstance(backbone, Backbone)
            and backbone.native_resolution
            and torch.device(backbone.device).type == "cpu"
        )

    def _cache_model(self, store: FeatureStore) -> str | None:
        """The disk-cache key of a store's encoder: the backbone's weights and precision.

        A GRMP paper model's prompted image tower is not cached on disk (its features depend on
        the checkpoint's weights, which have no stable key here); only in this process.
        """
        if self.options.cache is None or store.encoder is not store.backbone:
            return None
        return f"{store.backbone.key}|{self.options.weights_fingerprint}"

    def settings(self) -> dict[str, object]:
        """What this run's scores depend on, per scorer: its label, its own settings (pairs, temperature,
        a GRMP model's weights), its backbone (name, weights tag, precision, a local weights file) and
        preprocessing (draft included). Two runs with the same settings give the same scores."""
        scorers = []
        for scorer, index in zip(self.scorers, self._source_of):
            scorers.append(
                {
                    "label": scorer.label,
                    "backbone": f"{scorer.backbone.key}|{self.options.weights_fingerprint}",
                    "preprocessing": self._preprocess_key(index),
                    **getattr(scorer, "settings", dict)(),
                }
            )
        return {"scorers": scorers}

    def _preprocess_key(self, index: int) -> str:
        plan = self.decode_options.plans[index]
        draft = self.options.draft and plan is not None
        return f"{self.sources[index].preprocess_key}|draft={'on' if draft else 'off'}"

    def run(self, paths: Iterable[str | os.PathLike]) -> Iterator[list[PhotoScores]]:
        """Score `paths` batch by batch; bad photos are added to `counts.skipped`, never raised."""
        pool = DecodePool(self.options.workers, self.decoder, self.decode_options)  # this run's own
        window: deque[list[_Pending]] = deque()
        try:
            with ThreadPoolExecutor(2, thread_name_prefix="iqa-probe") as probes:
                for chunk in _chunks(iter(paths), self.batch_size):
                    window.append(self._start(chunk, pool, probes))
                    if len(window) > self.options.prefetch:
                        yield self._finish(window.popleft(), pool)
                while window:
                    yield self._finish(window.popleft(), pool)
        finally:
            pool.shutdown()

    def _start(self, paths: list[str | os.PathLike], pool: DecodePool, probes: ThreadPoolExecutor) -> list[_Pending]:
        """Probe and look up a batch, and send the photos that need decoding to the pool."""
        batch = [_Pending(str(p), os.fspath(p), features=[None] * len(self.sources)) for p in paths]
        cached = [s.cache_model is not None for s in self.sources]
        if any(cached):
            unknown = self._recall(batch, probes)
            for item, probe in zip(unknown, probes.map(self._probe, unknown)):
                if isinstance(probe, PhotoError):
                    item.error = probe
                else:
                    item.digest, item.size = probe
            self._remember(unknown)
            self._lookup([item for item in batch if item.error is None])
        for item in batch:
            if item.error is None:
                wanted = tuple(f is None for f in item.features)
                if any(wanted):
                    item.decode = pool.submit(item.path, item.name, wanted)
        return batch

    def _recall(self, batch: list[_Pending], probes: ThreadPoolExecutor) -> list[_Pending]:
        """Take the content hash and size of unchanged files from the disk cache (no read of the
        whole file, no hash); return the photos still to probe. Remembered photos still get this
        run's limits."""
        assert self.options.cache is not None
        for item, signature in zip(batch, probes.map(file_signature, [item.path for item in batch])):
            item.signature = signature
        signatures = {item.signature.key: item.signature.text for item in batch if item.signature}
        known = self.options.cache.known_files(signatures) if signatures else {}
        unknown = []
        for item in batch:
            hit = known.get(item.signature.key) if item.signature else None
            if hit and item.signature and self._within_limits(item.signature.size, hit[1]):
                item.digest, item.size = hit
            else:
                unknown.append(item)
        return unknown

    def _within_limits(self, file_bytes: int, size: tuple[int, int]) -> bool:
        max_bytes, max_pixels = self.options.max_bytes, self.options.max_pixels
        bytes_ok = max_bytes is None or file_bytes <= max_bytes
        return bytes_ok and (max_pixels is None or size[0] * size[1] <= max_pixels)

    def _remember(self, probed: list[_Pending]) -> None:
        assert self.options.cache is not None
        self.options.cache.remember_files(
            {
                item.signature.key: (item.signature.text, item.digest, item.size)
                for item in probed
                if item.error is None and item.signature
            }
        )

    def _probe(self, item: _Pending) -> tuple[str, tuple[int, int]] | PhotoError:
        try:
            return probe_file(item.path, item.name, self.options.max_bytes, self.options.max_pixels)
        except PhotoError as error:
            return error

    def _lookup(self, batch: list[_Pending]) -> None:
        cache = self.options.cache
        for index, source in enumerate(self.sources):
            if cache is None or source.cache_model is None or not batch:
                continue
            found = cache.get(
                source.cache_model, self._preprocess_key(index), [i.digest for i in batch], *source.store.row_layout
            )
            for item in batch:
                if item.digest in found:
                    item.features[index] = source.store.from_row(found[item.digest])

    def _finish(self, batch: list[_Pending], pool: DecodePool) -> list[PhotoScores]:
        """Wait for the batch's decodes, encode what is missing, score, and count."""
        decoded: dict[int, Decoded] = {}
        for position, item in enumerate(batch):
            if item.decode is None:
                continue
            outcome = pool.result(item.decode)
            item.decode = None
            if isinstance(outcome, PhotoError):
                item.error = outcome
            else:
                decoded[position] = outcome
                item.digest, item.size = outcome.digest, outcome.size
        for item in batch:
            if item.error is not None:
                self.counts.skipped.append(item.error)
        self.counts.decoded += len(decoded)
        self._log(batch, decoded)
        self.counts.cached += sum(1 for i, item in enumerate(batch) if item.error is None and i not in decoded)
        for index in range(len(self.sources)):
            self._encode(index, batch, decoded)
        del decoded  # the pixels are no longer needed: only features go on
        _return_freed_memory()
        good = [item for item in batch if item.error is None]
        if not good:
            return []
        per_scorer = []
        for scorer, index in zip(self.scorers, self._source_of):
            store = self.sources[index].store
            features = store.collate([item.features[index] for item in good])  # type: ignore[misc]
            notes = [store.notes_for_size(item.size) for item in good]
            per_scorer.append(scorer.score_features(features, [i.name for i in good], notes))
        self.counts.scored += len(good)
        return [
            PhotoScores(item.name, item.path, item.digest, [results[i] for results in per_scorer])
            for i, item in enumerate(good)
        ]

    def _log(self, batch: list[_Pending], decoded: dict[int, Decoded]) -> None:
        """With -v: how many photos came from the disk cache, and what preprocessing did to the others."""
        good = sum(1 for item in batch if item.error is None)
        if good > len(decoded):
            logger.info("%d of %d photos' features from the disk cache", good - len(decoded), good)
        for position in decoded:
            item = batch[position]
            for note in dict.fromkeys(n for s in self.sources for n in s.store.preprocessor.notes(item.size)):
                logger.info("%s: %s", item.name, note)

    def _encode(self, index: int, batch: list[_Pending], decoded: dict[int, Decoded]) -> None:
        """Encode the photos of `batch` that lack source `index`'s features, in same-sized groups."""
        source = self.sources[index]
        groups: dict[tuple[int, ...], list[tuple[_Pending, torch.Tensor]]] = {}
        uint8 = self.decode_options.plans[index] is not None
        for position, photo in decoded.items():
            pixels = photo.pixels[index]
            if batch[position].features[index] is not None or pixels is None:
                continue
            # uint8 [3, H, W] as it is; a whole photo (no uint8 plan) through the store's own preprocessing
            tensor = torch.from_numpy(pixels) if uint8 else source.store.preprocessor(Image.fromarray(pixels))
            groups.setdefault(tuple(tensor.shape), []).append((batch[position], tensor))
        new: dict[str, np.ndarray] = {}
        for shape, group in groups.items():
            step = max(1, min(self.batch_size, self.options.max_batch_pixels // (shape[-1] * shape[-2])))
            for start in range(0, len(group), step):
                chunk = group[start : start + step]
                inputs = torch.stack([tensor for _, tensor in chunk])
                if index in self._channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                features = self._features(source, inputs)
                for (item, _), feature in zip(chunk, features):
                    item.features[index] = feature
                    new[item.digest] = feature.numpy().ravel()
        if new and self.options.cache is not None and source.cache_model is not None:
            self.options.cache.put(source.cache_model, self._preprocess_key(index), new, *source.store.row_layout)

    def _features(self, source: _Source, batch: torch.Tensor) -> list[torch.Tensor]:
        """Each photo's cached value (`FeatureStore.encode_pixels`: a normalised float32 feature on the
        CPU, or a views store's [V, D + 1]) from a uint8 (or preprocessed float) batch."""
        store = source.store
        if batch.dtype == torch.uint8:
            device = _device(store)
            if device.type == "cuda":
                batch = batch.pin_memory().to(device, non_blocking=True)
            assert isinstance(store.preprocessor, Preprocessor)  # only its resize plan gives uint8 batches
            batch = store.preprocessor.normalize(batch)
        return store.encode_pixels(batch)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _return_freed_memory() -> None:
    """Hand the freed encoder activations back to the system after each batch.

    glibc keeps freed blocks in its per-thread arenas, where the next batch's differently placed
    allocations fragment them: without this the resident set creeps up with the number of batches.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _device(store: FeatureStore) -> torch.device:
    return torch.device(store.backbone.device)  # a GRMP model's prompted tower is on its backbone's too


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while chunk := list(islice(items, size)):
        yield chunk
