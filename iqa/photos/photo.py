"""Opening user photos safely: any common format in, a loaded upright RGB image out.

Everything the scorers see goes through `open_photo`, so this is the one place that deals with
odd pixel formats, EXIF rotation, decompression bombs and files that are not images at all.
Problems with one file become a `PhotoError` naming the file, so a batch can report it and go on.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from iqa.errors import IQAError
from iqa.photos.sizes import shape_problem

MAX_PIXELS = 100_000_000
MAX_BYTES = 100_000_000
SUPPORTED_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".tif",
    ".tiff",
    ".bmp",
    ".gif",
    ".heic",
    ".heif",
)
SUPPORTED_FORMATS_TEXT = "JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC/HEIF"

# Pillow format ids we let Image.open try (JPEG also covers camera MPO files). Keeping the list
# short means a mislabelled file is never handed to a rarely used (or Ghostscript) decoder.
_PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"mif2", b"msf1"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "PA"}
_GREY16_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
# What Pillow and its plugins raise on a damaged or hostile file (beyond PhotoError and DecompressionBombError)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)

PhotoSource = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray


class PhotoError(IQAError, ValueError):
    """A photo that cannot be used; the message reads "<name>: <what is wrong>"."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.name, self.reason)


@dataclass
class Photo:
    """A photo ready for scoring: `image` is a fully loaded, upright RGB image."""

    name: str
    image: Image.Image
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.image.mode != "RGB":
            raise ValueError(f"Photo {self.name!r} needs an RGB image, got mode {self.image.mode}")

    @cached_property
    def digest(self) -> str:
        """The image's content hash (the feature caches' key), computed once: images are not edited."""
        return image_digest(self.image)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright pixels."""
        return self.image.size

    def key(self) -> PhotoKey:
        """The photo without its pixels: what a feature cache that already holds it needs."""
        return PhotoKey(self.name, self.digest, self.size)


@dataclass(frozen=True)
class PhotoKey:
    """A photo known by name, content digest and size only: it scores from features cached under its
    digest (a job sent to another process carries pixels only for photos the caches there lack)."""

    name: str
    digest: str
    size: tuple[int, int]


def open_photo(
    source: PhotoSource,
    name: str | None = None,
    *,
    max_pixels: int | None = MAX_PIXELS,
    max_bytes: int | None = MAX_BYTES,
) -> Photo:
    """Open a photo from a path, encoded bytes, a PIL image or a numpy array.

    `name` is what messages and results call the photo (default: the path as given).
    `max_pixels` is checked from the header, before any pixel is decoded; `max_bytes` before a
    file is read. Either can be None for no limit of our own (Pillow's bomb check still applies).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        display = name or os.fspath(source)
        data = read_file(path, display, max_bytes)
        return Photo(display, _decode(data, display, max_pixels), path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        display = name or "<bytes>"
        data = bytes(source)
        check_byte_count(len(data), display, max_bytes)
        return Photo(display, _decode(data, display, max_pixels))
    if isinstance(source, Image.Image):
        display = name or _pil_name(source)
        return Photo(display, _from_pil(source, display, max_pixels))
    if isinstance(source, np.ndarray):
        display = name or "<array>"
        return Photo(display, _from_array(source, display, max_pixels))
    raise TypeError(
        f"cannot open a photo from {type(source).__name__}; pass a path, bytes, a PIL image or a numpy array"
    )


def open_photos(
    sources: Iterable[PhotoSource],
    *,
    max_pixels: int | None = MAX_PIXELS,
    max_bytes: int | None = MAX_BYTES,
) -> tuple[list[Photo], list[PhotoError]]:
    """Open every source; bad ones are returned as errors instead of stopping the batch."""
    photos: list[Photo] = []
    errors: list[PhotoError] = []
    for source in sources:
        try:
            photos.append(open_photo(source, max_pixels=max_pixels, max_bytes=max_bytes))
        except PhotoError as error:
            errors.append(error)
    return photos, errors


def image_digest(image: Image.Image) -> str:
    """Content hash of an image (mode, size and pixels), used as a feature-cache key."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.mode} {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def collect_photo_paths(
    patterns: Iterable[str | os.PathLike] | str | os.PathLike, recursive: bool = False
) -> list[Path]:
    """Expand files, folders and glob patterns into a de-duplicated list of paths.

    A file named explicitly is kept whatever its extension, so a bad file is reported when it is
    opened rather than silently skipped. Folders and globs yield only files with a supported
    extension (hidden files skipped), sorted; `recursive` descends into subfolders. A pattern
    matching nothing raises FileNotFoundError (see `find_photo_paths` to go on past it).
    """
    found, errors = find_photo_paths(patterns, recursive)
    if errors:
        raise FileNotFoundError(str(errors[0]))
    return found


def find_photo_paths(
    patterns: Iterable[str | os.PathLike] | str | os.PathLike, recursive: bool = False
) -> tuple[list[Path], list[PhotoError]]:
    """Like `collect_photo_paths`, but every pattern that yields nothing becomes a PhotoError
    naming it (missing, a folder without photos, a glob matching nothing), and the rest is kept."""
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    found: list[Path] = []
    errors: list[PhotoError] = []
    seen: set[Path] = set()
    for pattern in patterns:
        try:
            paths = _expand_pattern(str(pattern), recursive)
        except FileNotFoundError as error:
            errors.append(PhotoError(str(pattern), str(error).removeprefix(f"{pattern}: ")))
            continue
        for path in paths:
            key = _identity(path)
            if key not in seen:
                seen.add(key)
                found.append(path)
    return found, errors


def _identity(path: Path) -> Path:
    """The resolved path, for spotting duplicates; a link loop cannot be resolved and stays as given."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def _expand_pattern(pattern: str, recursive: bool) -> list[Path]:
    path = Path(pattern).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        photos = _photos_in_folder(path, recursive)
        if photos:
            return photos
        hint = ""
        if not recursive and _photos_in_folder(path, recursive=True):
            hint = "; its subfolders have some, use the recursive option to include them"
        raise FileNotFoundError(f"{pattern}: is a folder with no photos ({', '.join(SUPPORTED_EXTENSIONS)}){hint}")
    if any(char in pattern for char in "*?["):
        photos = []
        for match in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
            match_path = Path(match)
            if match_path.is_dir():
                photos.extend(_photos_in_folder(match_path, recursive))
            elif _has_photo_extension(match_path):
                photos.append(match_path)
        if photos:
            return photos
        raise FileNotFoundError(f"{pattern}: no photos match this pattern")
    raise FileNotFoundError(f"{pattern}: no such file or folder")


def _photos_in_folder(folder: Path, recursive: bool) -> list[Path]:
    entries: Iterator[Path] = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        entry
        for entry in entries
        if _has_photo_extension(entry)
        and not any(part.startswith(".") for part in entry.relative_to(folder).parts)
        and entry.is_file()
    )


def _has_photo_extension(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_EXTENSIONS


def read_file(path: Path, name: str, max_bytes: int | None) -> bytes:
    """A photo file's bytes; its size is checked against `max_bytes` before anything is read."""
    try:
        if path.is_dir():
            raise PhotoError(name, "is a folder, not a photo file")
        size = path.stat().st_size
        check_byte_count(size, name, max_bytes)
        return path.read_bytes()
    except FileNotFoundError:
        raise PhotoError(name, "file not found") from None
    except OSError as error:
        raise PhotoError(name, f"cannot read the file ({error.strerror or error})") from error


def check_byte_count(size: int, name: str, max_bytes: int | None) -> None:
    """Refuse an empty file, or one larger than `max_bytes`, naming it."""
    if size == 0:
        raise PhotoError(name, "file is empty (0 bytes)")
    if max_bytes is not None and size > max_bytes:
        raise PhotoError(name, f"file is {size / 1e6:.1f} MB, more than the {max_bytes / 1e6:g} MB limit")


def check_pixel_count(size: tuple[int, int], name: str, max_pixels: int | None) -> None:
    """Refuse, from the header alone, sizes that are empty, too large or too thin to preprocess."""
    width, height = size
    problem = shape_problem(size)
    if problem:
        raise PhotoError(name, problem)
    if max_pixels is not None and width * height > max_pixels:
        raise PhotoError(
            name,
            f"{width}x{height} pixels is more than the {max_pixels / 1e6:g} MP limit",
        )


def _decode(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    image = open_image(data, name)
    with image:
        return _from_pil(image, name, max_pixels)


def open_image(data: bytes, name: str) -> Image.Image:
    """Identify encoded bytes and open them as an image, header only: nothing is decoded yet.

    Only the formats we support are tried; a file that is none of them, or a decompression bomb,
    is a PhotoError naming it.
    """
    kind = _sniff(data[:1024])
    formats: tuple[str, ...] = _PILLOW_FORMATS
    if kind == "HEIC/HEIF":
        if not _heif_opener_registered():
            raise PhotoError(name, "HEIC/HEIF photo, but reading it needs pillow-heif (pip install pillow-heif)")
        formats += ("HEIF",)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice that; we apply our own limit later.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise PhotoError(
            name, f"image claims more than {limit / 1e6:.0f} MP; refused as a decompression bomb"
        ) from None
    except UnidentifiedImageError:
        raise PhotoError(name, _unreadable_reason(kind)) from None
    except DECODE_ERRORS as error:
        raise PhotoError(name, f"image is corrupt or truncated ({error})") from error


def _from_pil(image: Image.Image, name: str, max_pixels: int | None) -> Image.Image:
    check_pixel_count(image.size, name, max_pixels)
    try:
        image.load()
    except DECODE_ERRORS as error:
        raise PhotoError(name, f"image is corrupt or truncated ({error})") from error
    return to_upright_rgb(image, name)


def _from_array(array: np.ndarray, name: str, max_pixels: int | None) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        shape = "x".join(map(str, array.shape))
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = " (channels first? use array.transpose(1, 2, 0))"
        raise PhotoError(name, f"array of shape {shape} is not HxW, HxWx3 or HxWx4{hint}")
    check_pixel_count((array.shape[1], array.shape[0]), name, max_pixels)
    pixels = _array_to_uint8(array, name)
    return to_upright_rgb(Image.fromarray(np.ascontiguousarray(pixels)), name)


def _array_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """uint8 as is, bool as 0/255, uint16 scaled by 255/65535, floats in [0, 1] scaled by 255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return np.round(array / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(np.min(array)), float(np.max(array))
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0 or high > 1.0:
            raise PhotoError(name, f"float pixel values must lie in [0, 1], found {low:g} to {high:g}")
        return np.round(array * 255.0).astype(np.uint8)
    raise PhotoError(name, f"unsupported pixel type {array.dtype} (use uint8, uint16, or floats in [0, 1])")


def to_upright_rgb(image: Image.Image, name: str) -> Image.Image:
    """Apply EXIF orientation, then bring any pixel format to 8-bit RGB.

    Alpha is composited on white instead of dropped: fully transparent pixels often hold
    arbitrary colours (black, or leftovers from editing) that were never meant to be seen, and a
    scorer shown them would judge artefacts no viewer sees. White is how most viewers and pages
    show transparency.
    """
    image = _apply_orientation(image)
    if image.mode == "RGB":
        return image
    if image.mode in _GREY16_MODES:
        return _grey16_to_grey8(image).convert("RGB")
    if image.mode == "F":
        return Image.fromarray(_array_to_uint8(np.asarray(image), name)).convert("RGB")
    if image.mode == "CMYK":
        return _cmyk_to_rgb(image)
    if image.mode in _ALPHA_MODES or image.has_transparency_data:
        return _composite_on_white(image, name)
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise PhotoError(name, f"unsupported pixel format (mode {image.mode})") from error


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip per the EXIF orientation tag (always a new image, never the caller's).

    A corrupt EXIF block leaves the pixels as they are stored.
    """
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, struct.error):
        return image.copy()


def _grey16_to_grey8(image: Image.Image) -> Image.Image:
    """Scale 16-bit grey (0..65535) to 8 bits; Pillow's own convert clips everything above 255."""
    values = np.asarray(image).astype(np.float64)
    return Image.fromarray(np.round(np.clip(values, 0, 65535) / 257.0).astype(np.uint8), "L")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """Use the embedded ICC profile when there is one; Pillow's plain formula is the fallback."""
    icc = image.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:  # None only for inPlace=True
                return converted
        except (ImageCms.PyCMSError, OSError):
            pass
    return image.convert("RGB")


def _composite_on_white(image: Image.Image, name: str) -> Image.Image:
    try:
        rgba = image.convert("RGBA")
    except ValueError as error:
        raise PhotoError(name, f"unsupported pixel format (mode {image.mode})") from error
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _pil_name(image: Image.Image) -> str:
    filename = getattr(image, "filename", "")
    return Path(filename).name if filename else "<image>"


@cache
def _heif_opener_registered() -> bool:
    """Register pillow-heif's Pillow plugin on first need; False if it is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def _sniff(head: bytes) -> str:
    """Name what the first bytes of a file look like, for choosing decoders and messages."""
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "HEIC/HEIF"
        if brand in (b"avif", b"avis"):
            return "an AVIF image, which is not supported"
        return "a video or audio file"
    signatures = (
        (b"\xff\xd8\xff", "JPEG"),
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"GIF87a", "GIF"),
        (b"GIF89a", "GIF"),
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
        (b"BM", "BMP"),
        (b"%PDF", "a PDF"),
        (b"%!PS", "a PostScript file"),
        (b"\xc5\xd0\xd3\xc6", "a PostScript file"),
        (b"PK\x03\x04", "a ZIP archive or Office document"),
        (b"\x1f\x8b", "a gzip archive"),
    )
    for magic, kind in signatures:
        if head.startswith(magic):
            return kind
    if head.startswith(b"RIFF"):
        return "WebP" if head[8:12] == b"WEBP" else "a RIFF media file (video or audio)"
    return _sniff_text(head)


def _sniff_text(head: bytes) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:
            return "unknown"
        text = head[: error.start].decode("utf-8")
    if "\x00" in text:
        return "unknown"
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in lowered:
        return "an SVG drawing (export it as PNG)"
    if lowered.startswith(("<!doctype html", "<html")):
        return "an HTML page"
    return "a text file"


def _unreadable_reason(kind: str) -> str:
    if kind in ("JPEG", "PNG", "GIF", "TIFF", "BMP", "WebP", "HEIC/HEIF"):
        return f"image is corrupt or truncated (a damaged {kind} file)"
    if kind == "unknown":
        return f"not an image file in a supported format ({SUPPORTED_FORMATS_TEXT})"
    return f"not an image file (looks like {kind})"
