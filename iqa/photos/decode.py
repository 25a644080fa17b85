"""Decoding a photo file into the model's uint8 pixels: the pipeline's worker-process stage.

Every function and class here is picklable and importable on its own (a Ray task or a DataLoader
can call `decode_file` as it is). A worker reads the file once, hashes its bytes (the feature
caches' key), checks the limits from the header, asks the JPEG decoder for the smallest DCT scale
that still covers what preprocessing needs (`Image.draft`), applies EXIF orientation, and resizes
exactly as full decoding would be resized. Normalisation happens later, in the encoding process,
on the model's device. Torch is used for one thing, the native-resolution resize (`iqa.photos.resample`);
the pipeline's fork server imports it once, so that its workers share it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from iqa.photos.photo import (
    DECODE_ERRORS,
    MAX_BYTES,
    MAX_PIXELS,
    Photo,
    PhotoError,
    check_pixel_count,
    open_image,
    open_photo,
    read_file,
    to_upright_rgb,
)
from iqa.photos.resample import resize_to_chw
from iqa.photos.sizes import center_crop_box, native_target_size, shortest_side_size

# EXIF orientations that swap width and height (transpose, 90 degrees, transverse, 270 degrees).
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112
_RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
RESIZE_KINDS = ("native", "bounded", "shortest", "squash")


@dataclass(frozen=True)
class ResizePlan:
    """How an upright photo becomes the model's input size, decided from the photo's full size.

    `native`: CLIP-IQA's RN50 at its own size bounded by `max_side`, always bicubic (as the in-memory
    preprocessor); `bounded`: as `native` for a photo longer than `max_side`, else untouched (the
    app's copy of an upload); `shortest`: the shortest side to `size`, then a centred square crop
    (open_clip's ViT transform); `squash`: to `size` x `size`.
    """

    kind: str
    size: int = 224
    max_side: int | None = None
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.kind not in RESIZE_KINDS or self.interpolation not in _RESAMPLING:
            raise ValueError(f"no uint8 plan for resize {self.kind!r} with {self.interpolation!r} interpolation")

    def resize_to(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) the whole photo is resized to, before any crop."""
        if self.kind == "native":
            return native_target_size(size, self.max_side)
        if self.kind == "bounded":
            return native_target_size(size, self.max_side) if self.max_side and max(size) > self.max_side else size
        if self.kind == "shortest":
            return shortest_side_size(size, self.size)
        return self.size, self.size

    def apply(self, image: Image.Image, full_size: tuple[int, int]) -> np.ndarray:
        """uint8 [3, H, W] pixels of an upright RGB image whose undrafted size was `full_size`.

        Native resolution is downsized as the in-memory preprocessor does (`iqa.photos.resample`); the other
        kinds with Pillow, as open_clip's transform does.
        """
        target = self.resize_to(full_size)
        if self.kind in ("native", "bounded") and image.size != target:
            return resize_to_chw(image, target)
        if image.size != target:
            image = image.resize(target, _RESAMPLING[self.interpolation])
        if self.kind == "shortest":
            image = image.crop(center_crop_box(image.size, self.size))
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


@dataclass(frozen=True)
class DecodeOptions:
    """What every decode of a run shares: the plans (None: the whole upright photo, HWC), draft and limits."""

    plans: tuple[ResizePlan | None, ...]
    draft: bool = True
    max_pixels: int | None = MAX_PIXELS
    max_bytes: int | None = MAX_BYTES


@dataclass
class Decoded:
    """A photo decoded for each plan of its `DecodeOptions` (None where no plan was asked for)."""

    name: str
    path: str
    digest: str  # the content hash of the file's bytes
    size: tuple[int, int]  # upright, before any draft or resize: what notes describe
    pixels: tuple[np.ndarray | None, ...]
    drafted: bool = False


def file_digest(data: bytes) -> str:
    """The content hash of a photo file's bytes: the feature caches' key."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def probe_file(
    path: str | os.PathLike, name: str, max_bytes: int | None = MAX_BYTES, max_pixels: int | None = MAX_PIXELS
) -> tuple[str, tuple[int, int]]:
    """(content hash of the bytes, upright size from the header) without decoding any pixel.

    What a feature-cache lookup needs; the limits are checked as `decode_file` checks them.
    """
    data = read_file(Path(path), name, max_bytes)
    with open_image(data, name) as image:
        check_pixel_count(image.size, name, max_pixels)
        upright = _upright_size(image.size, _orientation(image))
    return file_digest(data), upright


def decode_file(
    path: str | os.PathLike, name: str, options: DecodeOptions, wanted: tuple[bool, ...] | None = None
) -> Decoded:
    """Read, hash and decode one photo file for the plans `wanted` (default all of them).

    Every problem is a PhotoError naming the photo: too many bytes (checked before reading), too
    many pixels or too thin (from the header, before decoding), not an image, corrupt or truncated.
    """
    data = read_file(Path(path), name, options.max_bytes)
    wanted = wanted or tuple(True for _ in options.plans)
    image = open_image(data, name)
    with image:
        check_pixel_count(image.size, name, options.max_pixels)
        orientation = _orientation(image)
        upright = _upright_size(image.size, orientation)
        plans = [plan for plan, want in zip(options.plans, wanted) if want]
        drafted = options.draft and _draft(image, plans, upright, orientation)
        try:
            image.load()
        except DECODE_ERRORS as error:
            raise PhotoError(name, f"image is corrupt or truncated ({error})") from error
        # An upright RGB photo is used as decoded: a copy of 3 MP costs 3 ms, 6% of the whole decode.
        rgb = image if orientation == 1 and image.mode == "RGB" else to_upright_rgb(image, name)
        # Two sources with the same plan (CLIP-IQA and MA-CLIP's views) get the same array, resized once.
        done: dict[ResizePlan | None, np.ndarray] = {}
        for plan, want in zip(options.plans, wanted):
            if want and plan not in done:
                done[plan] = plan.apply(rgb, upright) if plan else np.asarray(rgb, dtype=np.uint8)
        pixels = tuple(done[plan] if want else None for plan, want in zip(options.plans, wanted))
    return Decoded(name, os.fspath(path), file_digest(data), upright, pixels, drafted)


def decode_or_error(
    path: str | os.PathLike, name: str, options: DecodeOptions, wanted: tuple[bool, ...] | None = None
) -> Decoded | PhotoError:
    """`decode_file` for a worker process: a bad photo comes back as its PhotoError, never raised.

    Anything else a decoder throws on hostile bytes is reported the same way, naming the photo.
    """
    try:
        return decode_file(path, name, options, wanted)
    except PhotoError as error:
        return error
    except (*DECODE_ERRORS, MemoryError, Image.DecompressionBombError) as error:
        return PhotoError(name, f"cannot decode ({type(error).__name__}: {error})")


def open_bounded(
    path: str | os.PathLike,
    name: str,
    max_side: int | None,
    max_pixels: int | None = MAX_PIXELS,
    max_bytes: int | None = MAX_BYTES,
) -> Photo:
    """A photo file opened at most `max_side` pixels long, at the pipeline's speed: a larger JPEG is
    decoded at the smallest DCT scale that covers it (draft) and resized as the pipeline's native plan
    resizes, so an upload gets the pixels `score` feeds CLIP-IQA's RN50. No `max_side` (0 or None)
    opens it whole, as `open_photo` does."""
    if not max_side:
        return open_photo(path, name=name, max_pixels=max_pixels, max_bytes=max_bytes)
    plan = ResizePlan("bounded", max_side=max_side)
    decoded = decode_file(path, name, DecodeOptions((plan,), max_pixels=max_pixels, max_bytes=max_bytes))
    pixels = decoded.pixels[0]
    assert pixels is not None  # one plan, wanted
    return Photo(name, Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0))), Path(path))


def _upright_size(stored: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (stored[1], stored[0]) if orientation in _SWAPPING_ORIENTATIONS else stored


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except (*DECODE_ERRORS, TypeError):
        return 1


def _draft(image: Image.Image, plans: list[ResizePlan | None], upright: tuple[int, int], orientation: int) -> bool:
    """Ask a JPEG decoder for the smallest DCT scale (1/2, 1/4, 1/8) that still covers every plan.

    Draft sizes are in the file's stored orientation, so a rotated photo's request is swapped.
    Only when every plan resizes (a plan wanting the whole photo needs it at full size).
    """
    if image.format != "JPEG" or not plans or any(plan is None for plan in plans):
        return False
    needs = [plan.resize_to(upright) for plan in plans if plan is not None]
    need = (max(w for w, _ in needs), max(h for _, h in needs))
    if orientation in _SWAPPING_ORIENTATIONS:
        need = (need[1], need[0])
    if need[0] * 2 > image.size[0] or need[1] * 2 > image.size[1]:
        return False  # no scale below 1 covers it
    return image.draft(None, need) is not None
