"""From an RGB photo to the normalised tensor a CLIP image encoder takes.

Two modes. Native resolution (CLIP-IQA's RN50, as the reference implementation feeds it): the
photo at its own size, bounded by `max_side`, normalised. Otherwise open_clip's own evaluation
transform for the loaded model, built from the model's preprocess configuration (size, mean, std,
interpolation, resize mode), so any open_clip model gets the input it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from iqa.names import DEFAULT_MAX_SIDE
from iqa.photos.decode import RESIZE_KINDS, ResizePlan
from iqa.photos.resample import RESAMPLER, resize_hwc
from iqa.photos.sizes import MAX_ASPECT_RATIO as MAX_ASPECT_RATIO  # re-exported: the bounds' old home
from iqa.photos.sizes import MAX_INPUT_PIXELS, MIN_SIDE, check_shape, native_target_size
from iqa.photos.sizes import shape_problem as shape_problem


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
            return f"native<={self.max_side}-{RESAMPLER}|{self.mean}|{self.std}"
        return f"{self.resize_mode}{self.image_size}-{self.interpolation}|{self.mean}|{self.std}"

    def target_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The (width, height) the photo is resized to before normalisation (native mode)."""
        return native_target_size(size, self.max_side)

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
        hwc = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))  # a copy: Pillow's bytes
        target = self.target_size(image.size)
        if target != image.size:
            pixels = resize_hwc(hwc, target).contiguous()
        else:
            pixels = torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))
        return self.normalize(pixels[None])[0]

    def resize_plan(self) -> ResizePlan | None:
        """What a decoding worker does before normalisation (`iqa.photos.decode`), or None where open_clip's
        transform has no uint8 equivalent here (other resize modes or interpolations)."""
        kind = "native" if self.native_resolution else self.resize_mode
        if kind not in RESIZE_KINDS or self.interpolation not in ("bicubic", "bilinear"):
            return None
        return ResizePlan(kind, self.image_size, self.max_side, self.interpolation)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] (from `resize_plan`) -> normalised float32, on the tensor's own device.

        The same operations in the same order as `__call__`, so the numbers are identical on the CPU.
        """
        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        return (pixels.float() / 255.0 - mean) / std

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
