"""Cached CLIP features: each image and each prompt text is encoded once per backbone.

Editing one prompt pair and re-scoring the same photos then costs two text encodings and a few
small matrix products; the image encoder does not run again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from iqa.clip.backbones import Backbone
from iqa.clip.preprocess import DEFAULT_MAX_SIDE, preprocessor_for, shape_problem
from iqa.clip.test_backbones import MEANINGLESS_NOTE
from iqa.photos.photo import Photo, PhotoError, PhotoKey

ProgressFn = Callable[[int, int], None]


class ImageEncoder(Protocol):
    """What a store encodes photos with: a backbone's image tower, or another (GRMP-IQA's prompted one)."""

    @property
    def embed_dim(self) -> int: ...

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor: ...


class ImagePreprocessor(Protocol):
    """What turns a photo into the encoder's input: `iqa.clip.preprocess.Preprocessor` or another
    (GRMP-IQA's official one). `key` names what it does: features are cached under it."""

    @property
    def key(self) -> str: ...

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]: ...

    def notes(self, size: tuple[int, int]) -> list[str]: ...

    def __call__(self, image: Image.Image) -> torch.Tensor: ...


logger = logging.getLogger(__name__)

_POOL: tuple[int, ThreadPoolExecutor] | None = None


class MissingPixels(RuntimeError):
    """Photos sent without pixels (`PhotoKey`) whose features the store does not hold: a caller's bug
    (it sent a job whose cached features it did not include), never a user's."""

    def __init__(self, names: Sequence[str]):
        super().__init__(f"no pixels and no cached features for {len(names)} photo(s), e.g. {names[0]!r}")


def _workers() -> ThreadPoolExecutor:
    """Threads for the CPU side (hashing, resizing, normalising), so that a GPU is kept fed.

    Pillow and NumPy release the interpreter lock for this work. Each process gets a pool of its
    own: one inherited through fork (ZeroGPU's workers are forked) has no threads and would hang.
    """
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (
            os.getpid(),
            ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="iqa-prep"),
        )
    return _POOL[1]


def _digest(photo: Photo | PhotoKey) -> str:
    return photo.digest


class FeatureStore:
    """Normalised image and text features of one backbone, cached in least-recently-used order.

    Texts are encoded by the backbone; photos by `encoder` (default: the backbone's image tower)
    after `preprocessor` (default: the backbone's, see `preprocessor_for`).
    """

    def __init__(
        self,
        backbone: Backbone,
        preprocessor: ImagePreprocessor | None = None,
        batch_size: int = 16,
        max_images: int = 20_000,
        max_texts: int = 10_000,
        max_side: int | None = DEFAULT_MAX_SIDE,
        encoder: ImageEncoder | None = None,
    ):
        self.backbone = backbone
        self.encoder: ImageEncoder = encoder or backbone
        self.preprocessor: ImagePreprocessor = preprocessor or preprocessor_for(backbone, max_side)
        self.batch_size = batch_size
        self._images: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._texts: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._limits = (max_images, max_texts)
        self._lock = threading.Lock()
        # Stores of another preprocessing over this one's backbone and texts (MA-CLIP's views,
        # `iqa.clip.views.ViewStore.over`), kept as long as this one so that their features are too.
        self.derived: dict[str, FeatureStore] = {}
        self.image_encoder_calls = self.images_encoded = 0
        self.text_encoder_calls = self.texts_encoded = 0

    def image_features(self, photos: Sequence[Photo | PhotoKey], progress: ProgressFn | None = None) -> torch.Tensor:
        """[N, D] float32 features on the CPU, in the order of `photos`: `collate` of `image_values`."""
        return self.collate(self.image_values(photos, progress))

    def image_values(
        self, photos: Sequence[Photo | PhotoKey], progress: ProgressFn | None = None
    ) -> list[torch.Tensor]:
        """Each photo's cached value (here its [D] feature; a views store's [V, D + 1]), in order.

        A photo that cannot be preprocessed within the bounds (see `preprocess.shape_problem`) raises
        PhotoError naming it before any work is done; `open_photo` already refuses such photos. A
        `PhotoKey` (no pixels) must be cached already, else MissingPixels names it.
        """
        for photo in photos:
            problem = shape_problem(photo.size)
            if problem:
                raise PhotoError(photo.name, problem)
        keys = [(self.preprocessor.key, digest) for digest in _workers().map(_digest, photos)]
        with self._lock:
            missing = {k: p for k, p in zip(keys, photos) if k not in self._images}
            if len(missing) < len(keys):
                logger.info("%d of %d photos' features from the cache", len(keys) - len(missing), len(keys))
            self._encode_images(missing, progress)
            return self._values(self._images, keys)

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """[M, D] float32 features on the CPU, in the order of `texts`."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._texts))
            if missing:
                tokens = self.backbone.tokenize(missing)
                features = F.normalize(self.backbone.encode_text(tokens).float(), dim=-1).cpu()
                self.text_encoder_calls += 1
                self.texts_encoded += len(missing)
                for text, feature in zip(missing, features):
                    self._put(self._texts, text, feature, self._limits[1])
            values = self._values(self._texts, texts)
            return torch.stack(values) if values else torch.empty(0, self.backbone.embed_dim)

    def notes(self, photo: Photo | PhotoKey) -> list[str]:
        """What the user should know about this photo's score: resizing, and a meaningless backbone."""
        return self.notes_for_size(photo.size)

    def notes_for_size(self, size: tuple[int, int]) -> list[str]:
        """`notes` for a photo of this upright (width, height), without its pixels."""
        notes = self.preprocessor.notes(size)
        return [MEANINGLESS_NOTE, *notes] if self.backbone.is_test else notes

    def missing(self, photos: Sequence[Photo | PhotoKey]) -> list[Photo | PhotoKey]:
        """The photos whose features are not cached, each once, in order."""
        with self._lock:
            missing = {self.image_key(p): p for p in photos if self.image_key(p) not in self._images}
        return list(missing.values())

    def image_key(self, photo: Photo | PhotoKey) -> tuple[str, str]:
        """The cache key of a photo's features in this store: (preprocessing, content digest)."""
        return self.preprocessor.key, photo.digest

    def export(self, image_keys: Iterable[tuple[str, str]], texts: Iterable[str] = ()) -> tuple[dict, dict]:
        """The cached features among `image_keys` and `texts`, in `merge`'s form: what a job sent to
        another process (ZeroGPU's worker) carries so that it re-encodes nothing this store holds."""
        with self._lock:
            return (
                {k: self._images[k] for k in image_keys if k in self._images},
                {t: self._texts[t] for t in texts if t in self._texts},
            )

    def keys(self) -> tuple[set, set]:
        """The cached (image keys, texts): a mark to pass to `added_since`."""
        with self._lock:
            return set(self._images), set(self._texts)

    def added_since(self, mark: tuple[set, set]) -> tuple[dict, dict]:
        """The image and text features cached after `mark` was taken."""
        with self._lock:
            return (
                {k: v for k, v in self._images.items() if k not in mark[0]},
                {k: v for k, v in self._texts.items() if k not in mark[1]},
            )

    def merge(self, added: tuple[dict, dict]) -> None:
        """Cache features computed by a copy of this store in another process (ZeroGPU runs GPU work
        in a forked worker, whose cache would otherwise be lost with it)."""
        with self._lock:
            for key, value in added[0].items():
                self._put(self._images, key, value, self._limits[0])
            for key, value in added[1].items():
                self._put(self._texts, key, value, self._limits[1])

    def clear(self) -> None:
        with self._lock:
            self._images.clear()
            self._texts.clear()
        for derived in self.derived.values():
            derived.clear()

    def collate(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        """The features of several photos from each one's cached value (here a [D] vector): [N, D]."""
        return torch.stack(list(values)) if values else torch.empty(0, self.encoder.embed_dim)

    @property
    def row_layout(self) -> tuple[int, int]:
        """(D, extra): a photo's cached value is one or more records of D unit-length values followed
        by `extra` other numbers (here one record, no extra); the disk cache checks rows by it."""
        return self.encoder.embed_dim, 0

    def from_row(self, row: np.ndarray) -> torch.Tensor:
        """A photo's cached value from its flat float32 row in the disk cache."""
        return torch.from_numpy(row)

    def encode_pixels(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Each photo's cached value (here its L2-normalised feature, float32 on the CPU) from a batch
        of same-sized, preprocessed photos [N, 3, H, W]; the one place photos are encoded, for the
        in-memory route and the streaming pipeline alike."""
        with torch.no_grad():
            features = F.normalize(self.encoder.encode_image(batch).float(), dim=-1).cpu()
        self.image_encoder_calls += 1
        self.images_encoded += len(batch)
        return list(features)

    def _encode_images(self, missing: dict, progress: ProgressFn | None) -> None:
        """Encode in batches of same-sized inputs: native resolution cannot pad without changing scores.

        Photos are grouped by the size preprocessing will give them, and only one batch of pixels
        is held in memory at a time.
        """
        without = [photo.name for photo in missing.values() if not isinstance(photo, Photo)]
        if without:
            raise MissingPixels(without)
        by_size: dict[tuple[int, int], list] = {}
        for key, photo in missing.items():
            for note in self.preprocessor.notes(photo.image.size):
                logger.info("%s: %s", photo.name, note)
            by_size.setdefault(self.preprocessor.output_size(photo.image.size), []).append((key, photo))
        done, total = 0, len(missing)
        for group in by_size.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                batch = torch.stack(list(_workers().map(self.preprocessor, [photo.image for _, photo in chunk])))
                for (key, _), feature in zip(chunk, self.encode_pixels(batch)):
                    self._put(self._images, key, feature, self._limits[0])
                done += len(chunk)
                if progress:
                    progress(done, total)

    def _put(self, cache: OrderedDict, key, value: torch.Tensor, limit: int) -> None:
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)

    @staticmethod
    def _values(cache: OrderedDict, keys: Sequence) -> list[torch.Tensor]:
        for key in keys:
            cache.move_to_end(key)
        return [cache[key] for key in keys]
