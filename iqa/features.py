"""Cached CLIP features: each image and each prompt text is encoded once per backbone.

Editing one prompt pair and re-scoring the same photos then costs two text encodings and a few
small matrix products; the image encoder does not run again.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .backbones import Backbone
from .photos import Photo, image_digest
from .preprocess import DEFAULT_MAX_SIDE, Preprocessor, preprocessor_for
from .test_backbone import MEANINGLESS_NOTE

ProgressFn = Callable[[int, int], None]

# Decoding-side work (hashing, resizing, normalising) runs on the CPU; Pillow and NumPy release the
# interpreter lock for it, so threads keep a GPU fed instead of leaving it waiting.
_WORKERS = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="iqa-prep")


class FeatureStore:
    """Normalised image and text features of one backbone, cached in least-recently-used order."""

    def __init__(self, backbone: Backbone, preprocessor: Preprocessor | None = None, batch_size: int = 16,
                 max_images: int = 20_000, max_texts: int = 10_000, max_side: int | None = DEFAULT_MAX_SIDE):
        self.backbone = backbone
        self.preprocessor = preprocessor or preprocessor_for(backbone, max_side)
        self.batch_size = batch_size
        self._images: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._texts: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._limits = (max_images, max_texts)
        self._lock = threading.Lock()
        self.image_encoder_calls = self.images_encoded = 0
        self.text_encoder_calls = self.texts_encoded = 0

    def image_features(self, photos: Sequence[Photo], progress: ProgressFn | None = None) -> torch.Tensor:
        """[N, D] float32 features on the CPU, in the order of `photos`."""
        keys = [(self.preprocessor.key, digest) for digest in _WORKERS.map(image_digest, [p.image for p in photos])]
        with self._lock:
            missing = {k: p for k, p in zip(keys, photos) if k not in self._images}
            self._encode_images(missing, progress)
            return self._stack(self._images, keys)

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
            return self._stack(self._texts, texts)

    def notes(self, photo: Photo) -> list[str]:
        """What the user should know about this photo's score: resizing, and a meaningless backbone."""
        notes = self.preprocessor.notes(photo.image.size)
        return [MEANINGLESS_NOTE, *notes] if self.backbone.is_test else notes

    def clear(self) -> None:
        with self._lock:
            self._images.clear()
            self._texts.clear()

    def _encode_images(self, missing: dict, progress: ProgressFn | None) -> None:
        """Encode in batches of same-sized inputs: native resolution cannot pad without changing scores.

        Photos are grouped by the size preprocessing will give them, and only one batch of pixels
        is held in memory at a time.
        """
        by_size: dict[tuple[int, int], list] = {}
        for key, photo in missing.items():
            by_size.setdefault(self.preprocessor.output_size(photo.image.size), []).append((key, photo))
        done, total = 0, len(missing)
        for group in by_size.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start:start + self.batch_size]
                batch = torch.stack(list(_WORKERS.map(self.preprocessor, [photo.image for _, photo in chunk])))
                features = F.normalize(self.backbone.encode_image(batch).float(), dim=-1).cpu()
                self.image_encoder_calls += 1
                self.images_encoded += len(chunk)
                for (key, _), feature in zip(chunk, features):
                    self._put(self._images, key, feature, self._limits[0])
                done += len(chunk)
                if progress:
                    progress(done, total)

    @staticmethod
    def _put(cache: OrderedDict, key, value: torch.Tensor, limit: int) -> None:
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)

    def _stack(self, cache: OrderedDict, keys: Sequence) -> torch.Tensor:
        if not keys:
            return torch.empty(0, self.backbone.embed_dim)
        for key in keys:
            cache.move_to_end(key)
        return torch.stack([cache[key] for key in keys])
