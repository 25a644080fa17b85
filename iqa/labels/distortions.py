"""Synthetic KADID-style distortions at five strengths, and labelled sets made from them.

Each distortion type has a name and five strength parameters (:data:`DISTORTIONS`), level 1 the
mildest and level 5 the strongest. The parameters are in pixels or 8-bit units and are tuned
for photos of about 512 pixels on the long side, the size of KADID-10k's images.

Randomness (the noise pattern, the motion-blur direction) comes only from the ``seed``; the same
seed gives the same pattern at every level, so a higher level is the same degradation, stronger.

:func:`make_distorted_set` writes distorted copies of some reference photos with a synthetic
quality label, :func:`label_for_level`, and :func:`task_list` groups them into one meta-learning
task per distortion type.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from iqa.errors import InputError
from iqa.labels.datasets import LabelledImage
from iqa.labels.keep import format_label, keep_from_level

LEVELS = (1, 2, 3, 4, 5)

Pixels = np.ndarray  # float64, H x W x 3, sRGB values in [0, 1]
Source = str | Path | Image.Image


@dataclass(frozen=True)
class Distortion:
    """A distortion type: ``strengths[level - 1]`` is the parameter used at ``level``."""

    name: str
    parameter: str
    strengths: tuple[float, float, float, float, float]
    apply: Callable[[Pixels, float, np.random.Generator], Pixels]


def _to_image(x: Pixels) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8))


def _gaussian_blur(x: Pixels, sigma: float, rng: np.random.Generator) -> Pixels:
    from scipy import ndimage  # here, not at the top: the command line's start-up stays short

    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect")


def _line_kernel(length: int, angle: float) -> np.ndarray:
    """Normalised kernel of a straight line ``length`` pixels long through the centre."""
    size = length if length % 2 else length + 1
    kernel = np.zeros((size, size))
    centre = size // 2
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length)
    rows = np.rint(centre - t * np.sin(angle)).astype(int)
    cols = np.rint(centre + t * np.cos(angle)).astype(int)
    kernel[rows, cols] = 1.0
    return kernel / kernel.sum()


def _motion_blur(x: Pixels, length: float, rng: np.random.Generator) -> Pixels:
    kernel = _line_kernel(int(length), rng.uniform(0.0, np.pi))
    pad = kernel.shape[0] // 2
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    from scipy import signal

    return signal.fftconvolve(padded, kernel[:, :, None], mode="valid", axes=(0, 1))


def _gaussian_noise(x: Pixels, sigma_8bit: float, rng: np.random.Generator) -> Pixels:
    return x + rng.standard_normal(x.shape) * (sigma_8bit / 255.0)


def _jpeg(x: Pixels, quality: float, rng: np.random.Generator) -> Pixels:
    buffer = io.BytesIO()
    _to_image(x).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float64) / 255.0


def _srgb_to_linear(x: Pixels) -> Pixels:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: Pixels) -> Pixels:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def _exposure(x: Pixels, stops: float, rng: np.random.Generator) -> Pixels:
    """Scale linear light by ``2**stops``, clipping highlights, as a camera's exposure would."""
    return _linear_to_srgb(_srgb_to_linear(x) * 2.0**stops)


def _luma(x: Pixels) -> Pixels:
    return x @ np.array([0.2126, 0.7152, 0.0722])


def _contrast_decrease(x: Pixels, factor: float, rng: np.random.Generator) -> Pixels:
    mean = _luma(x).mean()
    return mean + (x - mean) * factor


def _desaturate(x: Pixels, kept: float, rng: np.random.Generator) -> Pixels:
    luma = _luma(x)[:, :, None]
    return luma + (x - luma) * kept


def _pixelate(x: Pixels, factor: float, rng: np.random.Generator) -> Pixels:
    image = _to_image(x)
    small = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    blocky = image.resize(small, Image.Resampling.BOX).resize(image.size, Image.Resampling.NEAREST)
    return np.asarray(blocky, dtype=np.float64) / 255.0


DISTORTIONS: dict[str, Distortion] = {
    d.name: d
    for d in (
        Distortion("gaussian_blur", "sigma (px)", (0.8, 1.5, 2.5, 4.0, 6.0), _gaussian_blur),
        Distortion("motion_blur", "line length (px)", (5, 9, 15, 21, 29), _motion_blur),
        Distortion("gaussian_noise", "sigma (8-bit units)", (5, 10, 16, 25, 38), _gaussian_noise),
        Distortion("jpeg", "JPEG quality", (40, 25, 15, 8, 3), _jpeg),
        Distortion("over_exposure", "exposure gain (stops)", (0.5, 1.0, 1.5, 2.1, 2.8), _exposure),
        Distortion("under_exposure", "exposure gain (stops)", (-0.6, -1.2, -1.9, -2.6, -3.4), _exposure),
        Distortion("contrast_decrease", "contrast kept", (0.75, 0.58, 0.44, 0.32, 0.2), _contrast_decrease),
        Distortion("desaturate", "saturation kept", (0.7, 0.5, 0.32, 0.16, 0.0), _desaturate),
        Distortion("pixelate", "downscale factor", (2, 3, 4, 6, 8), _pixelate),
    )
}


def distort(image: Image.Image, distortion: str, level: int, seed: int | Sequence[int] = 0) -> Image.Image:
    """Apply ``distortion`` (a key of :data:`DISTORTIONS`) at ``level`` 1-5 to an RGB image.

    The result has the input's size and is fully determined by the image, type, level and seed.
    """
    if distortion not in DISTORTIONS:
        raise InputError(f"unknown distortion {distortion!r}; known: {', '.join(DISTORTIONS)}")
    if level not in LEVELS:
        raise InputError(f"level must be one of {LEVELS}, got {level!r}")
    spec = DISTORTIONS[distortion]
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    rng = np.random.default_rng(seed)
    return _to_image(spec.apply(pixels, spec.strengths[level - 1], rng))


def label_for_level(level: int) -> float:
    """Synthetic quality label: ``1 - level / 6``, i.e. 1.0 for the reference (level 0) down to
    0.1667 at level 5, rounded to 4 decimals. The same for every type: it orders levels within a
    type and says nothing about how types compare with one another."""
    if level not in (0, *LEVELS):
        raise InputError(f"level must be 0 (reference) or one of {LEVELS}, got {level!r}")
    return round(1.0 - level / 6.0, 4)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _named_sources(sources: Mapping[str, Source] | Iterable[Source]) -> list[tuple[str, Source]]:
    if isinstance(sources, Mapping):
        named = list(sources.items())
    else:
        named = [(Path(s).stem if isinstance(s, (str, Path)) else f"ref{i:02d}", s) for i, s in enumerate(sources)]
    names = [name for name, _ in named]
    for name in names:
        if not _SAFE_NAME.match(name):
            raise InputError(f"reference name {name!r} is not usable as a file name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"reference names must be unique; repeated: {duplicates}")
    if not named:
        raise InputError("make_distorted_set needs at least one source image")
    return named


def _open_reference(source: Source, max_side: int | None) -> Image.Image:
    if isinstance(source, Image.Image):
        image = source.convert("RGB")
    else:
        with Image.open(source) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _save(image: Image.Image, path: Path, quality: int) -> None:
    if path.suffix == ".jpg":
        image.save(path, format="JPEG", quality=quality)
    else:
        image.save(path, format="PNG")


LABEL_COLUMNS = ("path", "score", "ref", "distortion", "level", "label")


def make_distorted_set(
    sources: Mapping[str, Source] | Iterable[Source],
    out_dir: str | Path,
    types: Sequence[str] = tuple(DISTORTIONS),
    levels: Sequence[int] = LEVELS,
    seed: int = 0,
    image_format: str = "png",
    quality: int = 95,
    max_side: int | None = None,
    include_references: bool = True,
) -> list[LabelledImage]:
    """Write each reference and its distorted versions to ``out_dir``, plus ``labels.csv``.

    ``sources`` are image paths or PIL images (named by file stem, or ``ref00``, ``ref01``...),
    or a mapping from reference name to either. Files are named ``{ref}.{ext}`` and
    ``{ref}_{type}_L{level}.{ext}``; ``image_format`` is ``"png"`` (lossless, so only the intended
    distortion is present) or ``"jpg"`` (at ``quality``, smaller). ``max_side`` first shrinks
    larger references. Scores follow :func:`label_for_level`; ``labels.csv`` has the columns
    ``path,score,ref,distortion,level`` with paths relative to ``out_dir`` (references: empty
    distortion, level 0) and loads back with :func:`iqa.labels.datasets.load_csv`.
    The pseudo-random pattern of each (reference, type) depends only on ``seed`` and their
    positions, never on the level, so the levels of one type differ only in strength.
    """
    unknown = [t for t in types if t not in DISTORTIONS]
    if unknown:
        raise InputError(f"unknown distortion(s) {unknown}; known: {', '.join(DISTORTIONS)}")
    bad_levels = [lv for lv in levels if lv not in LEVELS]
    if bad_levels:
        raise InputError(f"levels must be among {LEVELS}, got {bad_levels}")
    extension = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg"}.get(image_format.lower())
    if extension is None:
        raise InputError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    type_index = {name: i for i, name in enumerate(DISTORTIONS)}

    records: list[LabelledImage] = []
    for ref_index, (ref, source) in enumerate(_named_sources(sources)):
        reference = _open_reference(source, max_side)
        if include_references:
            path = out / f"{ref}{extension}"
            _save(reference, path, quality)
            records.append(LabelledImage(path, label_for_level(0), ref, None, 0, keep_from_level(0)))
        for name in types:
            for level in levels:
                image = distort(reference, name, level, seed=(seed, ref_index, type_index[name]))
                path = out / f"{ref}_{name}_L{level}{extension}"
                _save(image, path, quality)
                records.append(LabelledImage(path, label_for_level(level), ref, name, level, keep_from_level(level)))
    write_labels(records, out / "labels.csv")
    return records


def write_labels(records: Iterable[LabelledImage], csv_path: str | Path) -> None:
    """Write records as ``path,score,ref,distortion,level,label``; paths inside the CSV's folder are
    written relative to it (so the folder can move), others absolute."""
    csv_path = Path(csv_path)
    folder = csv_path.parent.resolve()
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(LABEL_COLUMNS)
        for r in records:
            path = Path(r.path).resolve()
            written = path.relative_to(folder) if path.is_relative_to(folder) else path
            level = "" if r.level is None else r.level
            row = [written.as_posix(), r.score, r.ref or "", r.distortion or "", level, format_label(r.keep)]
            writer.writerow(row)


def task_list(records: Iterable[LabelledImage]) -> dict[str, list[LabelledImage]]:
    """Group records by distortion type, one meta-learning task per type, in first-seen order.

    Records without a distortion (references, authentic photos) belong to no task and are left
    out. Works for loaded KADID-10k / TID2013 records as well as for synthetic sets.
    """
    tasks: dict[str, list[LabelledImage]] = {}
    for record in records:
        if record.distortion is not None:
            tasks.setdefault(record.distortion, []).append(record)
    return tasks
