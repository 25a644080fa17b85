"""From an RGB photo to the normalised tensor a CLIP image encoder takes."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MAX_SIDE = 1024
MIN_SIDE = 64  # the ResNet downsamples 32x: smaller inputs leave almost nothing to pool
# Photos longer than 20 times their width (or wider than 20 times their height) are refused: the
# minimum side would blow a thin strip up to millions of pixels (40000x1 -> 2,560,000x64), and a
# crop of the middle would not be the photo any more. Real panoramas stay well below it.
MAX_ASPECT_RATIO = 20
# Every preprocessed input stays under this many pixels, whatever max_side says (None included).
MAX_INPUT_PIXELS = 2048 * 2048


def shape_problem(size: tuple[int, int]) -> str | None:
    """Why a photo of this (width, height) cannot be preprocessed within the bounds, else None."""
    w, h = size
    if w <= 0 or h <= 0:
        return f"image has zero size ({w}x{h} pixels)"
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        ratio = max(w, h) / min(w, h)
        return (f"{w}x{h} pixels: aspect ratio {ratio:.0f}:1 is beyond the {MAX_ASPECT_RATIO}:1 limit "
                f"(crop it to the part that matters)")
    return None


def check_shape(size: tuple[int, int]) -> None:
    """Raise ValueError when a photo of this size cannot be preprocessed within the bounds."""
    problem = shape_problem(size)
    if problem:
        raise ValueError(problem)


@dataclass(frozen=True)
class Preprocessor:
    """Native resolution (CLIP-IQA's RN50, bounded by `max_side`) or resize + centre crop (ViTs)."""

    native_resolution: bool
    image_size: int = 224
    max_side: int | None = DEFAULT_MAX_SIDE
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @property
    def key(self) -> str:
        mode = f"native<={self.max_side}" if self.native_resolution else f"crop{self.image_size}"
        return f"{mode}|{self.mean}|{self.std}"

    def target_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) the photo is resized to before normalisation (native mode)."""
        check_shape(size)
        w, h = size
        scale = 1.0
        if self.max_side and max(w, h) > self.max_side:
            scale = self.max_side / max(w, h)
        if w * h * scale * scale > MAX_INPUT_PIXELS:  # rounded down to stay within; min side >> 64 here
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
        if self.native_resolution:
            target = self.target_size(image.size)
            if target != image.size:
                image = image.resize(target, Image.BICUBIC)
        else:
            image = _resize_center_crop(image, self.image_size)
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        pixels = torch.from_numpy(array).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std


def _resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """open_clip's evaluation transform: shortest side to `size` (bicubic), then centre crop."""
    check_shape(image.size)
    w, h = image.size
    scale = size / min(w, h)
    resized = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def preprocessor_for(backbone, max_side: int | None = DEFAULT_MAX_SIDE) -> Preprocessor:
    """The preprocessing that matches a loaded backbone."""
    return Preprocessor(native_resolution=backbone.native_resolution, image_size=backbone.image_size,
                        max_side=max_side)
