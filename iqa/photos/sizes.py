"""Sizes and bounds of preprocessing, without torch: importable by decoding worker processes.

`iqa.clip.preprocess` builds the model's tensors from these; `iqa.photos.photo` and `iqa.photos.decode` use them to
refuse a photo from its header and to plan how far a JPEG can be draft-decoded.
"""

from __future__ import annotations

import math

MIN_SIDE = 64  # the ResNet downsamples 32x: smaller inputs leave almost nothing to pool
# Photos longer than 20 times their width (or wider than 20 times their height) are refused: the
# minimum side would blow a thin strip up to millions of pixels (40000x1 -> 2,560,000x64), and a
# crop of the middle would not be the photo any more. Real panoramas stay well below it.
MAX_ASPECT_RATIO = 20
# Every preprocessed input stays under this many pixels, whatever a positive max_side says. With
# max_side 0 or None (no downsizing, as the reference library feeds photos) the photo's own size
# is the bound, and that is limited when it is opened (iqa.photos.photo.MAX_PIXELS).
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


def native_target_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The (width, height) a photo is resized to at native resolution (CLIP-IQA's RN50)."""
    check_shape(size)
    w, h = size
    scale = 1.0
    if max_side and max(w, h) > max_side:
        scale = max_side / max(w, h)
    if max_side and w * h * scale * scale > MAX_INPUT_PIXELS:  # rounded down to stay within
        scale = (MAX_INPUT_PIXELS / (w * h)) ** 0.5
        return max(1, math.floor(w * scale)), max(1, math.floor(h * scale))
    if min(w, h) * scale < MIN_SIDE:
        scale = MIN_SIDE / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def shortest_side_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(width, height) after resizing the shortest side to `side`, as torchvision's `Resize(side)` does."""
    w, h = size
    if w <= h:
        return side, int(side * h / w)
    return int(side * w / h), side


def center_crop_box(size: tuple[int, int], crop: int) -> tuple[int, int, int, int]:
    """The box of a centred `crop` x `crop` square, as torchvision's `CenterCrop` places it."""
    w, h = size
    left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
    return left, top, left + crop, top + crop
