"""Image features of photo files, read from the disk cache when they are there.

A labelled set of 10,000 photos is decoded and encoded once; later runs (a new process, an edited
prompt pair) read the vectors back from `iqa.engine.disk_cache.DiskCache`. Rows are keyed as every user
of the disk cache keys them: the backbone's `key`, the preprocessor's `key`, and `file_digest`,
the blake2b-16 hash of the file's bytes (no decoding is needed to look a photo up).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from iqa.clip.features import FeatureStore
from iqa.engine.disk_cache import DiskCache
from iqa.photos.photo import MAX_BYTES, PhotoError, open_photo

logger = logging.getLogger(__name__)

CHUNK = 256  # files hashed and looked up at a time; misses are decoded and encoded in store batches
_READ = 1 << 20


def file_digest(path: str | os.PathLike) -> str:
    """blake2b (16 bytes, hex) of the file's bytes: the disk cache's content key."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        while block := file.read(_READ):
            digest.update(block)
    return digest.hexdigest()


def bytes_digest(data: bytes) -> str:
    """The same key for bytes already in memory (a file read by Ray, an upload)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class FileFeatures:
    """Features of the files that could be used, in their order; `index[i]` is the i-th one's position
    in the paths asked for. `skipped` names each file left out and why."""

    features: torch.Tensor  # [N, D] float32, L2-normalised (a views store's: its `collate`, [N, V, D + 1])
    index: list[int]
    skipped: list[str] = field(default_factory=list)
    from_cache: int = 0
    encoded: int = 0


def file_features(
    paths: Sequence[str | os.PathLike], store: FeatureStore, cache: DiskCache | None = None
) -> FileFeatures:
    """Image features of `paths` on `store`'s backbone and preprocessing, through `cache` when given.

    Files are taken `CHUNK` at a time: hashed, looked up, and the misses opened (with every check
    of `iqa.photos.photo.open_photo`), encoded and stored, so memory holds one chunk of photos at most.
    A file that cannot be read or decoded is named in `skipped`; the rest go on.
    """
    model, preprocess, layout = store.backbone.key, store.preprocessor.key, store.row_layout
    values: list[torch.Tensor] = []
    result = FileFeatures(store.collate([]), [])
    for start in range(0, len(paths), CHUNK):
        digests: dict[int, str] = {}
        for i in range(start, min(start + CHUNK, len(paths))):
            try:
                digests[i] = _checked_digest(Path(paths[i]))
            except PhotoError as err:
                result.skipped.append(str(err))
        found = cache.get(model, preprocess, digests.values(), *layout) if cache is not None else {}
        new = _encode_missing(paths, {i: d for i, d in digests.items() if d not in found}, store, result)
        if cache is not None and new:
            cache.put(model, preprocess, new, *layout)
        result.from_cache += sum(1 for d in digests.values() if d in found)
        for i, digest in digests.items():
            vector = found.get(digest, new.get(digest))
            if vector is not None:
                result.index.append(i)
                values.append(store.from_row(np.asarray(vector, dtype=np.float32)))
    if values:
        result.features = store.collate(values)
    logger.info("%d photos' features from the disk cache, %d encoded", result.from_cache, result.encoded)
    return result


def _checked_digest(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise PhotoError(str(path), f"file is {size / 1e6:.1f} MB, more than the {MAX_BYTES / 1e6:g} MB limit")
        return file_digest(path)
    except FileNotFoundError:
        raise PhotoError(str(path), "file not found") from None
    except IsADirectoryError:
        raise PhotoError(str(path), "is a folder, not a photo file") from None
    except OSError as err:
        raise PhotoError(str(path), f"cannot read the file ({err.strerror or err})") from err


def _encode_missing(
    paths: Sequence[str | os.PathLike], missing: dict[int, str], store: FeatureStore, result: FileFeatures
) -> dict[str, np.ndarray]:
    """Open and encode the files not in the cache, `store.batch_size` photos at a time.

    Files with the same content are opened once; when that fails, each of them is named.
    """
    todo = list(dict(zip(missing.values(), missing)).items())  # (digest, first file with it)
    new: dict[str, np.ndarray] = {}
    reasons: dict[str, str] = {}
    for start in range(0, len(todo), store.batch_size):
        photos, digests = [], []
        for digest, i in todo[start : start + store.batch_size]:
            try:
                photos.append(open_photo(paths[i]))
                digests.append(digest)
            except PhotoError as err:
                reasons[digest] = err.reason
        if photos:
            new.update(zip(digests, (value.numpy().ravel() for value in store.image_values(photos))))
            result.encoded += len(photos)
    result.skipped += [f"{paths[i]}: {reasons[d]}" for i, d in missing.items() if d in reasons]
    return new
