"""Several views of one photo, each encoded: MA-CLIP's overlapping windows plus the whole photo.

A photo becomes, at native resolution (the same pixels CLIP-IQA's RN50 gets, bounded by
`max_side`, normalised), every whole `window` x `window` window at `stride` in row-major order
(the right and bottom remainder dropped, as `nn.Unfold` cuts them), then the whole photo resized
to `window` x `window` (bilinear, no antialias, on the normalised pixels) as the last view. Each
view is encoded by the backbone's image tower; what is cached per photo is a [V, D + 1] tensor:
each view's L2-normalised feature and its magnitude cue (`magnitude_cue` of the feature before
normalisation, the only thing the cue needs from it). So a prompt edit re-scores from the cache.

`ViewStore` is a `FeatureStore` of such values over another store's backbone and texts; the
streaming pipeline treats it as one more feature source (its own preprocessing key, the same
decoded pixels, its rows in the disk cache); `collate` pads the photos of a batch to the same
number of views with NaN rows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from iqa.clip.features import FeatureStore
from iqa.clip.preprocess import Preprocessor, preprocessor_for
from iqa.names import DEFAULT_MAX_SIDE

WINDOW = 224  # pyiqa's MA-CLIP: 224 px windows ...
STRIDE = 128  # ... every 128 px
BOX_COX_LAMBDA = 0.5  # the magnitude cue's Box-Cox transform
SIGMA_EPS = 1e-6  # added to the standard deviation the magnitudes are divided by
VIEW_BATCH = 32  # views per encoder call: memory stays bounded whatever the photo's size
MAX_VIEWS = 100_000  # views held in memory at most (RN50: 410 MB; 2,700 photos of 1024x768), oldest dropped


def magnitude_cue(raw: torch.Tensor) -> torch.Tensor:
    """[N, D] unnormalised features -> [N]: the mean over dimensions of the Box-Cox transform of
    x / (sigma + eps), x = |feature| and sigma its unbiased standard deviation over the dimensions."""
    x = raw.float().abs()
    scaled = x / (x.std(dim=1, keepdim=True) + SIGMA_EPS)
    return (((scaled + 1) ** BOX_COX_LAMBDA - 1) / BOX_COX_LAMBDA).mean(dim=1)


@dataclass(frozen=True)
class ViewPreprocessor(Preprocessor):
    """Native-resolution preprocessing (the photo's pixels as CLIP-IQA's RN50 gets them), then cut
    into views: the pixels, resize plan and normalisation are the parent's; `views` cuts them."""

    window: int = WINDOW
    stride: int = STRIDE

    @property
    def key(self) -> str:
        views = f"views{self.window}/{self.stride}+whole{self.window}-bilinear"
        return f"{views}+boxcox{BOX_COX_LAMBDA}|{super().key}"

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """(rows, columns) of whole windows in preprocessed pixels of this (width, height)."""
        w, h = size
        rows = (h - self.window) // self.stride + 1 if h >= self.window else 0
        cols = (w - self.window) // self.stride + 1 if w >= self.window else 0
        return (rows, cols) if rows and cols else (0, 0)

    def view_count(self, size: tuple[int, int]) -> int:
        """How many views a photo of this original (width, height) has: its windows and the whole."""
        rows, cols = self.grid(self.output_size(size))
        return rows * cols + 1

    def notes(self, size: tuple[int, int]) -> list[str]:
        target = self.output_size(size)
        if self.grid(target) != (0, 0):
            return super().notes(size)
        return [
            *super().notes(size),
            f"{target[0]}x{target[1]} holds no {self.window}x{self.window} window: "
            f"scored on the whole-photo view only (pyiqa refuses such photos)",
        ]

    def views(self, photos: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """(photo index, [3, window, window] view) of normalised photos [N, 3, H, W], photo by photo,
        each photo's windows row-major and then the whole photo. The windows are slices (no copy)."""
        rows, cols = self.grid((photos.shape[-1], photos.shape[-2]))
        whole = F.interpolate(photos, size=(self.window, self.window), mode="bilinear", align_corners=False)
        for i, photo in enumerate(photos):
            for r in range(rows):
                for c in range(cols):
                    top, left = r * self.stride, c * self.stride
                    yield i, photo[:, top : top + self.window, left : left + self.window]
            yield i, whole[i]


class ViewStore(FeatureStore):
    """Per photo, its views' normalised features and magnitude cues ([V, D + 1]), cached like any
    store's features; texts are the `base` store's (one text cache for every method)."""

    def __init__(self, base: FeatureStore, view_batch: int = VIEW_BATCH, max_views: int = MAX_VIEWS):
        max_side = base.preprocessor.max_side if isinstance(base.preprocessor, Preprocessor) else DEFAULT_MAX_SIDE
        native = preprocessor_for(base.backbone, max_side, native_resolution=True)
        fields = {name: getattr(native, name) for name in native.__dataclass_fields__}
        fields["native_resolution"] = True  # cut from the photo's own pixels, whatever the backbone
        self.cutter = ViewPreprocessor(**fields, window=base.backbone.image_size)
        super().__init__(base.backbone, self.cutter, batch_size=base.batch_size, max_images=max_views)
        self.base = base
        self.view_batch = view_batch
        self.views_encoded = 0
        self._views_held = 0

    @classmethod
    def over(cls, base: FeatureStore) -> ViewStore:
        """The view store of `base` (made once, then kept by it: its features last as long)."""
        store = base.derived.get(cls.__name__)
        if not isinstance(store, ViewStore):
            store = base.derived[cls.__name__] = cls(base)
        return store

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        return self.base.text_features(texts)

    def clear(self) -> None:
        super().clear()
        self._views_held = 0

    def _put(self, cache: OrderedDict, key, value: torch.Tensor, limit: int) -> None:
        """Photos' entries bounded by their views in all (`max_views`): a photo of 700 views weighs 700."""
        if cache is not self._images:
            return super()._put(cache, key, value, limit)
        if key in cache:
            self._views_held -= len(cache.pop(key))
        cache[key] = value
        self._views_held += len(value)
        while self._views_held > limit and len(cache) > 1:
            self._views_held -= len(cache.popitem(last=False)[1])

    @property
    def row_layout(self) -> tuple[int, int]:
        return self.encoder.embed_dim, 1

    def from_row(self, row: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(row).view(-1, self.encoder.embed_dim + 1)

    def collate(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        """[N, V, D + 1]: V the most views of these photos; a photo with fewer gets NaN rows after its own."""
        width = self.encoder.embed_dim + 1
        if not values:
            return torch.empty(0, 0, width)
        out = torch.full((len(values), max(len(v) for v in values), width), float("nan"))
        for i, value in enumerate(values):
            out[i, : len(value)] = value
        return out

    def encode_pixels(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Each photo's [V, D + 1] from same-sized normalised photos [N, 3, H, W]: its views encoded
        `view_batch` at a time (a photo's views may share a call with the next photo's)."""
        per_photo: list[list[torch.Tensor]] = [[] for _ in range(len(batch))]
        chunk: list[tuple[int, torch.Tensor]] = []
        for view in self.cutter.views(batch):
            chunk.append(view)
            if len(chunk) == self.view_batch:
                self._encode_views(chunk, per_photo)
                chunk = []
        if chunk:
            self._encode_views(chunk, per_photo)
        self.images_encoded += len(batch)
        return [torch.cat(rows) for rows in per_photo]

    def _encode_views(self, chunk: list[tuple[int, torch.Tensor]], per_photo: list[list[torch.Tensor]]) -> None:
        with torch.no_grad():
            raw = self.encoder.encode_image(torch.stack([view for _, view in chunk])).float()
            rows = torch.cat([F.normalize(raw, dim=-1), magnitude_cue(raw)[:, None]], dim=1).cpu()
        self.image_encoder_calls += 1
        self.views_encoded += len(chunk)
        for (i, _), row in zip(chunk, rows):
            per_photo[i].append(row[None])
