"""The CPU side of the Ray engine: file bytes -> content hash and a checked, upright RGB photo.

`DecodeBatch` runs in Ray Data's CPU tasks (it is a plain picklable object; nothing here imports
ray). Each photo gets the checks of `iqa.photos.photo.open_photo` (size and pixel limits from the header,
known formats only, EXIF orientation, any pixel format to RGB); a JPEG is decoded with Pillow's
draft mode (DCT scaling) at the smallest scale that still covers what scoring needs. A photo that
cannot be used becomes a row with an `error` and no pixels; the batch goes on.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from iqa.photos.photo import (
    DECODE_ERRORS,
    MAX_BYTES,
    MAX_PIXELS,
    PhotoError,
    check_byte_count,
    check_pixel_count,
    open_photo,
)

# The draft keeps the shortest side at least this long: every open_clip model's input (224, 336,
# the official GRMP-IQA 244) is covered, and a centre crop of it stays sharp.
DRAFT_MIN_SHORT_SIDE = 512


@dataclass(frozen=True)
class Decoded:
    """An upright RGB photo, its size in the file (upright) and a note when it was draft-decoded."""

    image: Image.Image
    size: tuple[int, int]
    note: str | None = None


def draft_request(size: tuple[int, int], max_side: int | None) -> tuple[int, int] | None:
    """The size a draft decode must still cover: the longest side at least `max_side` (what
    native-resolution scoring keeps) and the shortest at least `DRAFT_MIN_SHORT_SIDE`.
    None (decode at full size) when `max_side` is 0 or None: photos are then scored at their own size."""
    if not max_side:
        return None
    w, h = size
    scale = max(max_side / max(w, h), DRAFT_MIN_SHORT_SIDE / min(w, h))
    if scale >= 0.5:  # JPEG scales by 1/2, 1/4, 1/8 only
        return None
    return math.ceil(w * scale), math.ceil(h * scale)


def decode_photo(data: bytes, name: str, max_side: int | None, draft: bool = True) -> Decoded:
    """Decode `data` as `open_photo` would, JPEGs in draft mode when that loses nothing scoring needs."""
    check_byte_count(len(data), name, MAX_BYTES)
    if draft and data[:3] == b"\xff\xd8\xff":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=("JPEG",))
        except (UnidentifiedImageError, Image.DecompressionBombError, *DECODE_ERRORS):
            image = None  # open_photo below names what is wrong with it
        if image is not None:
            with image:
                stored = image.size
                check_pixel_count(stored, name, MAX_PIXELS)
                request = draft_request(stored, max_side)
                if request is not None:
                    image.draft("RGB", request)
                drafted = image.size
                photo = open_photo(image, name=name)
            upright = _upright(stored, drafted, photo.image.size)
            note = None
            if drafted != stored:
                note = f"decoded at {photo.image.width}x{photo.image.height} (JPEG draft) of {upright[0]}x{upright[1]}"
            return Decoded(photo.image, upright, note)
    photo = open_photo(data, name=name)
    return Decoded(photo.image, photo.image.size)


def _upright(stored: tuple[int, int], drafted: tuple[int, int], shown: tuple[int, int]) -> tuple[int, int]:
    """The file's size as shown: swapped when EXIF orientation turned the drafted image by 90 degrees."""
    turned = shown != drafted and shown == drafted[::-1]
    return (stored[1], stored[0]) if turned else stored


def file_digest(data: bytes) -> str:
    """The disk cache's content key, as `iqa.photos.decode.file_digest` computes it: that module imports
    torch, which would add seconds to the start of every decode task's worker."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class DecodeBatch:
    """Ray Data batch function: {"bytes", "path"} -> one row per file (see `COLUMNS`): the content
    hash, the size in the file, the decoded pixels (uint8, rows x cols x 3, as bytes) or an error."""

    max_side: int | None
    draft: bool = True

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows = [self._row(bytes(data), str(path)) for data, path in zip(batch["bytes"], batch["path"])]
        return pa.table({key: pa.array([row[key] for row in rows], type) for key, type in COLUMNS.items()})

    def _row(self, data: bytes, path: str) -> dict:
        row = {"path": path, "digest": file_digest(data), "width": 0, "height": 0, "pixels": b""}
        row.update(rows=0, cols=0, note=None, error=None)
        try:
            decoded = decode_photo(data, path, self.max_side, self.draft)
        except PhotoError as err:
            row["error"] = err.reason
            return row
        pixels = np.asarray(decoded.image, dtype=np.uint8)
        row.update(width=decoded.size[0], height=decoded.size[1], pixels=pixels.tobytes())
        row.update(rows=pixels.shape[0], cols=pixels.shape[1], note=decoded.note)
        return row


# Explicit types: a batch without any note or error must not turn those columns into floats.
COLUMNS = {
    "path": pa.string(),
    "digest": pa.string(),
    "width": pa.int64(),
    "height": pa.int64(),
    "pixels": pa.large_binary(),
    "rows": pa.int64(),
    "cols": pa.int64(),
    "note": pa.string(),
    "error": pa.string(),
}


def image_from_row(pixels: bytes, rows: int, cols: int) -> Image.Image:
    """The RGB image a `DecodeBatch` row carries."""
    return Image.fromarray(np.frombuffer(pixels, dtype=np.uint8).reshape(int(rows), int(cols), 3), "RGB")
