"""A corpus of hostile inputs, written at test time (nothing hostile is stored in the repository).

Reusable from any test: `write_photo_corpus(folder)` writes every hostile photo case plus two good
photos and returns the cases with the message each must produce; the other writers make one file
each. Every case is small (the 40000x1 strip is a 100-byte PNG; the bomb is a PNG header that
claims 3.6 gigapixels).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

GOOD_PHOTOS = ("good_a.jpg", "good_b.png")


@dataclass(frozen=True)
class Case:
    """A hostile path and a regular expression its one-line refusal must match."""

    name: str
    message: str


class _CreatesMarker:
    """Unpickling this calls `open(marker, "w")`: if the file appears, the pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def good_image(size: tuple[int, int] = (96, 72), seed: int = 0) -> Image.Image:
    """A small RGB photo-like image with structure (a gradient and a square)."""
    width, height = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    offset = 8 + 5 * seed
    image.paste((200, 40 + 30 * seed, 90), (offset, offset, width // 2, height // 2))
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming this size, with one tiny IDAT: a decompression-bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def write_good_photos(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in GOOD_PHOTOS]
    good_image(seed=0).save(paths[0], "JPEG", quality=90)
    good_image((80, 100), seed=1).save(paths[1], "PNG")
    return paths


def write_photo_corpus(folder: Path) -> list[Case]:
    """Write the hostile photo files and the good photos into `folder`; return the hostile cases.

    Each case's `message` is what `open_photos` (and so the command line's `skipped:` line) says.
    """
    folder.mkdir(parents=True, exist_ok=True)
    write_good_photos(folder)
    png = png_bytes(good_image())
    jpeg = io.BytesIO()
    good_image().save(jpeg, "JPEG")
    files = {
        "corrupt.jpg": (b"\xff\xd8\xff\xe0" + os.urandom(16) + b" not really a jpeg", r"corrupt or truncated"),
        "truncated.png": (png[: len(png) // 2], r"corrupt or truncated"),
        "truncated.jpg": (jpeg.getvalue()[:200], r"corrupt or truncated"),
        "empty.jpg": (b"", r"file is empty \(0 bytes\)"),
        "notes.jpg": (b"just some words, not a photo\n", r"not an image file \(looks like a text file\)"),
        "page.png": (b"<!doctype html><html><body>hi</body></html>", r"not an image file \(looks like an HTML page\)"),
        "bomb.png": (png_header_only(60000, 60000), r"decompression bomb|MP limit"),
        "strip_wide.png": (
            png_bytes(Image.new("RGB", (40000, 1), (9, 9, 9))),
            r"40000x1 pixels: aspect ratio 40000:1 is beyond the 20:1 limit",
        ),
        "strip_tall.png": (
            png_bytes(Image.new("RGB", (1, 40000), (9, 9, 9))),
            r"1x40000 pixels: aspect ratio 40000:1 is beyond the 20:1 limit",
        ),
    }
    cases = []
    for name, (data, message) in files.items():
        (folder / name).write_bytes(data)
        cases.append(Case(name, message))
    return cases


def write_path_corpus(folder: Path) -> list[Case]:
    """Paths that are not photo files: missing, a folder named like a photo, an empty folder, a link
    loop. Each `name` is relative to `folder` and is passed to the command line as a path."""
    (folder / "x.jpg").mkdir(parents=True, exist_ok=True)
    (folder / "no_photos").mkdir(exist_ok=True)
    (folder / "no_photos" / "readme.txt").write_text("no photo here")
    cases = [
        Case("missing.jpg", r"missing\.jpg: no such file or folder"),
        Case("x.jpg", r"x\.jpg: is a folder with no photos"),
        Case("no_photos", r"no_photos: is a folder with no photos"),
    ]
    loop = folder / "loop.jpg"
    try:
        os.symlink(loop, loop)
        cases.append(Case("loop.jpg", r"loop\.jpg: no such file or folder"))
    except OSError:  # no symlinks here (some Windows set-ups)
        pass
    return cases


def write_malicious_pickle(path: Path, marker: Path, payload_key: str = "visual.proj") -> Path:
    """A `.pt`-style pickle whose loading would create `marker`."""
    with path.open("wb") as f:
        pickle.dump({payload_key: _CreatesMarker(marker), "settings": {}}, f)
    return path


def write_empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_prompt_files(folder: Path) -> list[Case]:
    """Prompt sets that must be refused by `load_pairs`, with the message each must give."""
    folder.mkdir(parents=True, exist_ok=True)
    sets = {
        "not_strings.json": (
            [{"positive": 1, "negative": None}],
            r"not_strings\.json: entry 1: the positive prompt must be text, not int",
        ),
        "list_prompt.json": (
            [{"positive": ["a"], "negative": "b"}],
            r"list_prompt\.json: entry 1: the positive prompt must be text, not list",
        ),
        "nul.json": (
            [{"positive": "sharp\x00photo", "negative": "blurry photo"}],
            r"nul\.json: entry 1: the positive prompt holds a control character \(U\+0000\)",
        ),
        "escape.json": (
            [{"positive": "sharp photo", "negative": "blurry \x1b[31mphoto"}],
            r"escape\.json: entry 1: the negative prompt holds a control character \(U\+001B\)",
        ),
        "nan_weight.json": (
            [{"positive": "a", "negative": "b", "weight": "nan"}],
            r"nan_weight\.json: entry 1: the weight nan is not a finite number",
        ),
        "inf_weight.json": (
            [{"positive": "a", "negative": "b", "weight": "inf"}],
            r"inf_weight\.json: entry 1: the weight inf is not a finite number",
        ),
        "huge_weights.json": (
            [{"positive": "a", "negative": "b", "weight": 1e308}, {"positive": "c", "negative": "d", "weight": 1e308}],
            r"huge_weights\.json: entry 1: the weight 1e\+308 is beyond the limit of 1e\+06",
        ),
        "negative_weight.json": (
            [{"positive": "a", "negative": "b", "weight": -1}],
            r"negative_weight\.json: entry 1: the weight -1.0 is below 0",
        ),
    }
    cases = []
    for name, (records, message) in sets.items():
        (folder / name).write_text(json.dumps({"pairs": records}), encoding="utf-8")
        cases.append(Case(name, message))
    csv_nul = folder / "nul.csv"
    csv_nul.write_text("positive,negative\nsharp\x00photo,blurry photo\n", encoding="utf-8")
    cases.append(Case("nul.csv", r"nul\.csv: entry 1: the positive prompt holds a control character \(U\+0000\)"))
    return cases
