"""A set of distinct 12 MP JPEGs (4000x3000) made from scikit-image's photos, for the pipeline benchmark.

Each file is a different crop of a real photo, upscaled, with its own noise, so no two files have
the same bytes and no cache can help. The default set's noise is coarse (4x4 blocks: about 1.3 MB
a file); `--grain` adds per-pixel noise instead, like a phone photo at high ISO (about 4 MB), for
which a JPEG decoder spends most of its time in entropy decoding, which draft decoding cannot skip.
Made once with a process pool; a folder that already holds the photos is reused (`ensure_photos`).

    python -m benchmarks.photoset DIR --count 1000 [--grain]
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (4000, 3000)
SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


def photo_name(index: int) -> str:
    return f"photo-{index:05d}.jpg"


def make_photo(folder: Path, index: int, grain: bool = False) -> Path:
    """Write photo number `index` (deterministic) unless it is there already."""
    from skimage import data

    path = folder / photo_name(index)
    if path.exists():
        return path
    rng = np.random.default_rng(index)
    source = Image.fromarray(getattr(data, SOURCES[index % len(SOURCES)])()).convert("RGB")
    w, h = source.size
    crop_w, crop_h = int(w * rng.uniform(0.6, 0.95)), int(h * rng.uniform(0.6, 0.95))
    left, top = int(rng.integers(0, w - crop_w + 1)), int(rng.integers(0, h - crop_h + 1))
    image = source.crop((left, top, left + crop_w, top + crop_h)).resize(SIZE, Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.int16)
    if grain:
        pixels = pixels + rng.normal(0.0, rng.uniform(8.0, 12.0), size=pixels.shape).astype(np.int16)
    else:
        noise = rng.normal(0.0, rng.uniform(1.0, 6.0), size=(SIZE[1] // 4, SIZE[0] // 4, 3)).astype(np.int16)
        pixels = pixels + np.repeat(np.repeat(noise, 4, axis=0), 4, axis=1)
    partial = path.with_suffix(".partial")
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(partial, "JPEG", quality=int(rng.integers(85, 95)))
    partial.replace(path)
    return path


def ensure_photos(folder: str | os.PathLike, count: int, workers: int | None = None, grain: bool = False) -> list[Path]:
    """The first `count` photos of the set in `folder`, made with a process pool where missing.

    Keep the grainy set in a folder of its own: the names are the same."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(count) if not (folder / photo_name(i)).exists()]
    if missing:
        with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
            list(pool.map(make_photo, [folder] * len(missing), missing, [grain] * len(missing), chunksize=8))
    return [folder / photo_name(i) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--grain", action="store_true", help="per-pixel noise (about 4 MB a file)")
    args = parser.parse_args()
    paths = ensure_photos(args.folder, args.count, grain=args.grain)
    print(f"{len(paths)} photos in {args.folder}")


if __name__ == "__main__":
    main()
