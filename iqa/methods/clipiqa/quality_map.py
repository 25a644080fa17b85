"""Quality map: CLIP-IQA on a grid of overlapping windows of one photo, to show *where* it is poor.

The windows are cut from the photo as the scorer sees it: with RN50 at native resolution, from the
photo resized as `Preprocessor.target_size` resizes it (bounded by `max_side`), each window then
fed at its own size; with a ViT, from the photo itself, each window going through the model's own
transform (a square window is resized to the input size, nothing is cropped away). Windows are
squares of equal size, so they are encoded in batches of the store's batch size.

Window features live in the scorer's `FeatureStore`, like photos' features: a window is a `Photo`
whose digest is derived from (the photo's digest, the window box, the size it was cut from), and
the store adds its preprocessing key. Editing a prompt pair therefore recomputes the map from cached
features: only the new texts are encoded. Values use the formula of `iqa.methods.clipiqa.scorer` (p per pair, the
weighted mean over pairs as the overall value).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from iqa.clip.features import ProgressFn
from iqa.clip.preprocess import MIN_SIDE
from iqa.errors import InputError
from iqa.methods.clipiqa.scorer import CLIPIQA, check_finite, combine, pair_features, pair_probabilities
from iqa.names import MAP_WINDOW_LIMIT
from iqa.photos.photo import Photo
from iqa.photos.resample import resize_image

if TYPE_CHECKING:
    from iqa.clip.features import FeatureStore
    from iqa.methods.prompts import PromptPair

Box = tuple[int, int, int, int]  # (left, top, right, bottom), right and bottom exclusive, as PIL crops

MAX_WINDOWS = 64
WINDOW_FRACTION = 0.25  # default window side: a quarter of the photo's short side...
MIN_NATIVE_WINDOW = 2 * MIN_SIDE  # ...but at least this at native resolution (RN50 pools 32x: 4x4 cells)


class QualityMapError(InputError):
    """A quality map that cannot be made: a photo smaller than a window, no pairs, too many windows."""


@dataclass
class QualityMap:
    """Per-window CLIP-IQA values of one photo on a rows x cols grid.

    `boxes` are in the photo's own pixel coordinates, row-major (`boxes[r * cols + c]`); `p` is
    [rows, cols, pairs] (p(positive) per pair) and `overall` [rows, cols] (their weighted mean).
    """

    name: str
    size: tuple[int, int]  # the photo's (width, height)
    window: int  # window side in the image the windows were cut from
    stride: int  # requested stride there (the actual one is at most this, so windows end at the edge)
    rows: int
    cols: int
    boxes: list[Box]
    pairs: list[PromptPair]
    p: np.ndarray
    overall: np.ndarray
    temperature: float
    backbone: str
    cut_size: tuple[int, int]  # (width, height) of the image the windows were cut from
    notes: list[str] = field(default_factory=list)

    def values(self, pair: int | None = None) -> np.ndarray:
        """[rows, cols]: pair `pair`'s p(positive) (0-based), or the overall value when None."""
        if pair is None:
            return self.overall
        if not 0 <= pair < len(self.pairs):
            raise QualityMapError(f"pair {pair + 1} does not exist: the map has {len(self.pairs)} pair(s)")
        return self.p[:, :, pair]

    def title(self, pair: int | None = None) -> str:
        """What a value is, for a colour bar: "p(positive), overall" or "p(a sharp photo)"."""
        if pair is None:
            return "p(positive), overall" if len(self.pairs) > 1 else f"p({self.pairs[0].positive})"
        self.values(pair)  # names a pair that does not exist
        return f"p({self.pairs[pair].positive})"

    def cells(self, pair: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The map as constant cells between window edges: (x_edges, y_edges, values, counts).

        Each cell's value is the mean of the windows covering it; `values` and `counts` are
        [len(y_edges) - 1, len(x_edges) - 1]. This is exactly the per-pixel map, in few numbers.
        """
        flat = self.values(pair).reshape(-1)
        xs = np.unique([e for box in self.boxes for e in (box[0], box[2])])
        ys = np.unique([e for box in self.boxes for e in (box[1], box[3])])
        total = np.zeros((len(ys) - 1, len(xs) - 1))
        counts = np.zeros_like(total, dtype=np.int64)
        for (left, top, right, bottom), value in zip(self.boxes, flat):
            cols = slice(np.searchsorted(xs, left), np.searchsorted(xs, right))
            rows = slice(np.searchsorted(ys, top), np.searchsorted(ys, bottom))
            total[rows, cols] += value
            counts[rows, cols] += 1
        return xs, ys, total / np.maximum(counts, 1), counts

    def upsample(self, pair: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
        """[height, width] float32 map at the photo's size (or `size`); where windows overlap, their mean."""
        xs, ys, values, counts = self.cells(pair)
        if counts.min() == 0:  # the boxes tile the photo; a gap would be a bug
            raise AssertionError("quality-map windows leave part of the photo uncovered")
        if size is not None:  # cell edges scaled to the requested size: no full-size array is made
            xs = np.round(xs * size[0] / self.size[0]).astype(np.int64)
            ys = np.round(ys * size[1] / self.size[1]).astype(np.int64)
        full = np.repeat(np.repeat(values, np.diff(ys), axis=0), np.diff(xs), axis=1)
        return full.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The numbers as plain JSON types."""
        return {
            "photo": self.name,
            "size": list(self.size),
            "backbone": self.backbone,
            "temperature": self.temperature,
            "window": self.window,
            "stride": self.stride,
            "cut_size": list(self.cut_size),
            "rows": self.rows,
            "cols": self.cols,
            "notes": self.notes,
            "pairs": [
                {"positive": pair.positive, "negative": pair.negative, "weight": pair.weight} for pair in self.pairs
            ],
            "windows": [
                {
                    "row": i // self.cols,
                    "col": i % self.cols,
                    "box": list(box),
                    "overall": float(self.overall.reshape(-1)[i]),
                    "p": [float(v) for v in self.p.reshape(-1, len(self.pairs))[i]],
                }
                for i, box in enumerate(self.boxes)
            ],
        }


def positions(length: int, window: int, stride: int) -> list[int]:
    """Window starts along one side: first at 0, last ending at `length`, evenly spaced at most `stride` apart."""
    if window >= length:
        return [0]
    count = math.ceil((length - window) / stride) + 1
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


def window_grid(size: tuple[int, int], window: int, stride: int) -> tuple[int, int, list[Box]]:
    """(rows, cols, boxes) of square windows tiling an image of `size` (width, height), row-major."""
    xs, ys = positions(size[0], window, stride), positions(size[1], window, stride)
    return len(ys), len(xs), [(x, y, x + window, y + window) for y in ys for x in xs]


def min_window(scorer: CLIPIQA) -> int:
    """The smallest default window: a ViT's input size (smaller would be upsampled), 128 px natively."""
    preprocessor = scorer.preprocessor
    return MIN_NATIVE_WINDOW if preprocessor.native_resolution else preprocessor.image_size


def choose_window(
    size: tuple[int, int],
    smallest: int,
    window: int | None = None,
    stride: int | None = None,
    max_windows: int = MAX_WINDOWS,
) -> tuple[int, int]:
    """(window, stride) for an image of `size`: given ones are checked, missing ones chosen.

    By default a window is a quarter of the short side (at least `smallest`) and the stride half a
    window; the window grows until the grid has at most `max_windows` windows.
    """
    short = min(size)
    if not 1 <= max_windows <= MAP_WINDOW_LIMIT:
        raise QualityMapError(f"max_windows must be between 1 and {MAP_WINDOW_LIMIT}, got {max_windows}")
    if window is not None and not MIN_SIDE <= window <= short:
        raise QualityMapError(
            f"window {window} px does not fit: it must be between {MIN_SIDE} px and the short side ({short} px)"
        )
    if stride is not None and stride < 1:
        raise QualityMapError(f"stride must be at least 1 px, got {stride}")
    if window is None and short < smallest:
        raise QualityMapError(
            f"{size[0]}x{size[1]} px is smaller than one {smallest} px window: a quality map needs a short "
            f"side of at least {smallest} px"
        )
    side = window or max(smallest, round(short * WINDOW_FRACTION))
    while True:
        step = stride or max(1, side // 2)
        rows, cols, _ = window_grid(size, side, step)
        if rows * cols <= max_windows:
            return side, step
        if window is not None or side >= short:
            raise QualityMapError(
                f"{rows * cols} windows of {side} px at stride {step} px exceed max_windows={max_windows}: "
                f"use a larger window or stride, or raise max_windows (at most {MAP_WINDOW_LIMIT})"
            )
        side = min(short, math.ceil(side * 1.1))


class _Window(Photo):
    """A crop of a photo whose cache key is (photo digest, box, size cut from), not a pixel hash."""

    def __init__(self, name: str, image: Image.Image, key: str):
        super().__init__(name, image)
        self.__dict__["digest"] = key  # what `Photo.digest` would have cached


def _window_key(photo: Photo, cut_size: tuple[int, int], box: Box) -> str:
    text = f"{photo.digest}|window {box} of {cut_size[0]}x{cut_size[1]}"
    return "window-" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def cut_image(photo: Photo, scorer: CLIPIQA) -> Image.Image:
    """The image windows are cut from: the photo as the scorer sees it at native resolution, else the photo."""
    preprocessor = scorer.preprocessor
    if not preprocessor.native_resolution:
        return photo.image
    target = preprocessor.target_size(photo.image.size)
    return photo.image if target == photo.image.size else resize_image(photo.image, target)


def quality_map(
    photo: Photo,
    scorer: CLIPIQA,
    window: int | None = None,
    stride: int | None = None,
    max_windows: int = MAX_WINDOWS,
    progress: ProgressFn | None = None,
) -> QualityMap:
    """CLIP-IQA of `photo` on overlapping windows, with the scorer's pairs, temperature and features.

    `window` and `stride` are in pixels of the image the windows are cut from (`cut_image`: the
    photo itself unless native resolution downsizes it). Raises QualityMapError for a photo smaller
    than a window or a grid of more than `max_windows`.
    """
    image, side, step = _window_size(photo, scorer, window, stride, max_windows)
    rows, cols, boxes = window_grid(image.size, side, step)
    names = [f"{photo.name} window {i + 1}" for i in range(len(boxes))]
    features = _window_features(photo, image, boxes, names, scorer.store, progress)
    p, overall = window_values(scorer, features, names)
    scale_x, scale_y = photo.image.width / image.width, photo.image.height / image.height
    return QualityMap(
        name=photo.name,
        size=photo.image.size,
        window=side,
        stride=step,
        rows=rows,
        cols=cols,
        boxes=[_scaled(box, scale_x, scale_y, photo.image.size) for box in boxes],
        pairs=list(scorer.pairs),
        p=p.reshape(rows, cols, -1),
        overall=overall.reshape(rows, cols),
        temperature=scorer.temperature,
        backbone=scorer.backbone.description,
        cut_size=image.size,
        notes=scorer.store.notes(photo),
    )


def _window_size(
    photo: Photo, scorer: CLIPIQA, window: int | None, stride: int | None, max_windows: int
) -> tuple[Image.Image, int, int]:
    """(the image windows are cut from, window side, stride); QualityMapError names the photo."""
    image = cut_image(photo, scorer)
    try:
        side, step = choose_window(image.size, min_window(scorer), window, stride, max_windows)
    except QualityMapError as err:
        raise QualityMapError(f"{photo.name}: {_seen_as(err, photo.image.size, image.size)}") from None
    return image, side, step


def window_keys(photo: Photo, scorer: CLIPIQA) -> list[tuple[str, str]]:
    """The feature-store keys of the windows `quality_map(photo, scorer)` encodes (default grid):
    what a job sent to another process carries from the store, so a redraw re-encodes nothing.
    Empty for a photo too small for a map (`quality_map` says why)."""
    try:
        image, side, step = _window_size(photo, scorer, None, None, MAX_WINDOWS)
    except QualityMapError:
        return []
    _, _, boxes = window_grid(image.size, side, step)
    return [(scorer.store.preprocessor.key, _window_key(photo, image.size, box)) for box in boxes]


def _window_features(
    photo: Photo,
    image: Image.Image,
    boxes: list[Box],
    names: list[str],
    store: FeatureStore,
    progress: ProgressFn | None,
) -> torch.Tensor:
    """The windows' features, cut and encoded a store batch at a time: memory holds one batch of
    crops, not every window (4096 windows of 1024 px would be 12 GB of pixels)."""
    chunks = []
    step = max(1, store.batch_size)
    for start in range(0, len(boxes), step):
        windows = [
            _Window(names[i], image.crop(boxes[i]), _window_key(photo, image.size, boxes[i]))
            for i in range(start, min(start + step, len(boxes)))
        ]
        chunks.append(store.image_features(windows))
        if progress is not None:
            progress(start + len(windows), len(boxes))
    return torch.cat(chunks)


def _seen_as(err: QualityMapError, size: tuple[int, int], cut_size: tuple[int, int]) -> str:
    """The message, saying what size the scorer sees a photo it resizes at (the windows' pixels)."""
    text = str(err)
    cut = f"{cut_size[0]}x{cut_size[1]} px"
    if size != cut_size and text.startswith(cut):
        return f"{size[0]}x{size[1]} px (seen by the scorer at {cut_size[0]}x{cut_size[1]})" + text[len(cut) :]
    return text


def window_values(scorer: CLIPIQA, features: torch.Tensor, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(p [N, P], overall [N]) of window features, by the formula `CLIPIQA.score_features` uses."""
    positive, negative = pair_features(scorer.store, scorer.pairs)
    _, _, p = pair_probabilities(features, positive, negative, scorer.temperature)
    overall = combine(p, torch.tensor([pair.weight for pair in scorer.pairs]))
    check_finite(overall, names)
    return p.double().numpy(), overall.double().numpy()


def _scaled(box: Box, sx: float, sy: float, size: tuple[int, int]) -> Box:
    left, top, right, bottom = box
    return (
        round(left * sx),
        round(top * sy),
        min(size[0], round(right * sx)),
        min(size[1], round(bottom * sy)),
    )


def map_scorer(store: FeatureStore, pairs: Sequence[PromptPair], temperature: float | None = None) -> CLIPIQA:
    """A CLIP-IQA scorer for the map from the app's store, pairs and temperature; no pairs is an error."""
    if not pairs:
        raise QualityMapError("a quality map needs at least one prompt pair")
    return CLIPIQA(store, pairs, temperature)


# Viridis at five stops: ordered in lightness, readable by colour-blind viewers, on light and dark pages.
COLOURS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")


def colour_range(qmap: QualityMap, pair: int | None = None) -> tuple[float, float]:
    """The values the colours span: this map's own minimum and maximum (never an empty range)."""
    values = qmap.values(pair)
    low, high = float(values.min()), float(values.max())
    return (low, high) if high > low else (low - 0.005, high + 0.005)


def _colourise(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """[H, W] values -> [H, W, 3] uint8 colours along COLOURS."""
    stops = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in COLOURS], dtype=np.float64)
    t = np.clip((values - low) / (high - low), 0, 1) * (len(COLOURS) - 1)
    index = np.minimum(t.astype(np.int64), len(COLOURS) - 2)
    fraction = (t - index)[..., None]
    return (stops[index] * (1 - fraction) + stops[index + 1] * fraction).round().astype(np.uint8)


def overlay_image(
    qmap: QualityMap, image: Image.Image, pair: int | None = None, alpha: float = 0.5, max_side: int = 1600
) -> Image.Image:
    """The photo (at most `max_side` pixels on a side) with the map blended over it and a colour bar
    on the right: a PNG without plotly."""
    from PIL import ImageDraw

    low, high = colour_range(qmap, pair)
    scale = min(1.0, max_side / max(qmap.size))
    size = (max(1, round(qmap.size[0] * scale)), max(1, round(qmap.size[1] * scale)))
    heat = Image.fromarray(_colourise(qmap.upsample(pair, size), low, high))
    blended = Image.blend(image.convert("RGB").resize(size), heat, alpha)
    bar_width, margin = 24, 8
    out = Image.new("RGB", (blended.width + bar_width + 150, max(blended.height, 120)), "white")
    out.paste(blended, (0, 0))
    ramp = np.linspace(high, low, blended.height)[:, None].repeat(bar_width, axis=1)
    out.paste(Image.fromarray(_colourise(ramp, low, high)), (blended.width + margin, 0))
    draw = ImageDraw.Draw(out)
    text_x = blended.width + margin + bar_width + 4
    draw.text((text_x, 0), f"{high:.3f}", fill="black")
    draw.text((text_x, blended.height - 12), f"{low:.3f}", fill="black")
    draw.text((text_x, blended.height // 2 - 12), qmap.title(pair)[:22], fill="black")
    draw.text((text_x, blended.height // 2 + 2), f"{qmap.rows}x{qmap.cols} windows", fill="black")
    return out
