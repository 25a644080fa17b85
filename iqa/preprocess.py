"""From an RGB photo to the normalised tensor a CLIP image encoder takes.

Two modes. Native resolution (CLIP-IQA's RN50, as the reference implementation feeds it): the
photo at its own size, bounded by `max_side`, normalised. Otherwise open_clip's own evaluation
transform for the loaded model, built from the model's preprocess configuration (size, mean, std,
interpolation, resize mode), so any open_clip model gets the input it was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from .names import DEFAULT_MAX_SIDE

MIN_SIDE = 64  # the ResNet downsamples 32x: smaller inputs leave almost nothing to pool
# Photos longer than 20 times their width (or wider than 20 times their height) are refused: the
# minimum side would blow a thin strip up to millions of pixels (40000x1 -> 2,560,000x64), and a
# crop of the middle would not be the photo any more. Real panoramas stay well below it.
MAX_ASPECT_RATIO = 20
# Every preprocessed input stays under this many pixels, whatever a positive max_side says. With
# max_side 0 or None (no downsizing, as the reference library feeds photos) the photo's own size
# is the bound, and that is limited when it is opened (iqa.photos.MAX_PIXELS).
MAX_INPUT_PIXELS = 2048 * 2048


def shape_problem(size: tuple[int, int]) -> str | None:
    """Why a photo of this (width, height) cannot be preprocessed within the bounds, else None."""
    w, h = size
    if w <= 0 or h <= 0:
        return f"image has zero size ({w}x{h} pixels)"
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        ratio = max(w, h) / min(w, h)
        return (
            f"{w}x{h} pixels: aspect ratio {ratio:.0f}:1 is beyond the {MAX_ASPECT_RATIO}:1 limit "
            f"(crop it to the part that matters)"
        )
    return None


def check_shape(size: tuple[int, int]) -> None:
    """Raise ValueError when a photo of this size cannot be preprocessed within the bounds."""
    problem = shape_problem(size)
    if problem:
        raise ValueError(problem)


@dataclass(frozen=True)
class Preprocessor:
    """Native resolution (CLIP-IQA's RN50, bounded by `max_side`) or open_clip's transform (ViTs)."""

    native_resolution: bool
    image_size: int = 224
    max_side: int | None = DEFAULT_MAX_SIDE
    mean: tuple[float, ...] = OPENAI_DATASET_MEAN
    std: tuple[float, ...] = OPENAI_DATASET_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @property
    def key(self) -> str:
        if self.native_resolution:
            return f"native<={self.max_side}|{self.mean}|{self.std}"
        return f"{self.resize_mode}{self.image_size}-{self.interpolation}|{self.mean}|{self.std}"

    def target_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) the photo is resized to before normalisation (native mode)."""
        check_shape(size)
        w, h = size
        scale = 1.0
        if self.max_side and max(w, h) > self.max_side:
            scale = self.max_side / max(w, h)
        if self.max_side and w * h * scale * scale > MAX_INPUT_PIXELS:  # rounded down to stay within
            scale = (MAX_INPUT_PIXELS / (w * h)) ** 0.5
            return max(1, math.floor(w * scale)), max(1, math.floor(h * scale))
        if min(w, h) * scale < MIN_SIDE:
            scale = MIN_SIDE / min(w, h)
        return max(1, round(w * scale)), max(1, round(h * scale))

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) of the tensor this photo becomes."""
        return self.target_size(size) if self.native_resolution else (self.image_size, self.image_size)

    def notes(self, size: tuple[int, int]) -> list[str]:
        """What preprocessing did to a photo of this size that the user should know about."""
        if not self.native_resolution:
            return []
        target = self.target_size(size)
        if target == tuple(size):
            return []
        why = f"min side {MIN_SIDE}"
        if max(target) < max(size):
            capped = max(target) == self.max_side
            why = f"max_side={self.max_side}" if capped else f"at most {MAX_INPUT_PIXELS / 1e6:.1f} MP"
        return [f"resized from {size[0]}x{size[1]} to {target[0]}x{target[1]} ({why})"]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not self.native_resolution:
            check_shape(image.size)
            return self._open_clip_transform(image.convert("RGB"))
        target = self.target_size(image.size)
        if target != image.size:
            image = image.resize(target, Image.Resampling.BICUBIC)
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        pixels = torch.from_numpy(array).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std

    @cached_property
    def _open_clip_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        cfg = PreprocessCfg(
            size=self.image_size,
            mean=self.mean,
            std=self.std,
            interpolation=self.interpolation,
            resize_mode=self.resize_mode,
        )
        return image_transform_v2(cfg, is_train=False)


def preprocessor_for(
    backbone, max_side: int | None = DEFAULT_MAX_SIDE, native_resolution: bool | None = None
) -> Preprocessor:
    """The preprocessing that matches a loaded backbone: its own open_clip preprocess configuration."""
    known = {f.name for f in fields(PreprocessCfg)}
    cfg = PreprocessCfg(**{k: v for k, v in backbone.preprocess_cfg.items() if k in known})
    native = backbone.native_resolution if native_resolution is None else native_resolution
    return Preprocessor(
        native_resolution=native,
        image_size=backbone.image_size,
        max_side=max_side,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        interpolation=cfg.interpolation,
        resize_mode=cfg.resize_mode,
    )
