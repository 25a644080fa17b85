"""How fast the app turns uploaded 12 MP JPEGs into the photos a session keeps, side by side in one run.

Four ways over the same files, alternating photo by photo so that the machine's noise hits each alike:
- full decode: `open_photo` alone (the file decoded whole, upright RGB, as the app did), the baseline;
- bare decode: Pillow's `Image.open(path).load()` alone (no checks, no copy, no resize), for reference;
- as before: `open_photo` and then the downsize to `--max-side` (what the app did until issue 15);
- now: `iqa.photos.decode.open_bounded` (JPEG draft at the smallest scale covering `--max-side`, then the
  native-resolution resize the pipeline uses), what an upload goes through now;
and then `open_bounded` on the app's upload threads over the whole set (a camera roll uploaded at once).

    python -m benchmarks.upload_bench --photos-dir /tmp/iqa12mp [--count 40] [--max-side 1024] [--grain]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from benchmarks.photoset import ensure_photos
from iqa.app.photo_panel import UPLOAD_THREADS
from iqa.names import DEFAULT_MAX_SIDE
from iqa.photos.decode import open_bounded
from iqa.photos.photo import Photo, open_photo
from iqa.photos.resample import resize_image
from iqa.photos.sizes import native_target_size


def _as_before(path: Path, max_side: int) -> Photo:
    photo = open_photo(path)
    target = native_target_size(photo.image.size, max_side)
    return Photo(photo.name, resize_image(photo.image, target), path)


def _bare(path: Path) -> None:
    with Image.open(path) as image:
        image.load()


def measure(paths: list[Path], max_side: int) -> dict[str, float]:
    """Photos per second of each way, on one core."""
    ways: dict[str, Callable[[Path], object]] = {
        "full decode": lambda p: open_photo(p),
        "bare decode (Image.open().load())": _bare,
        "as before (full decode + downsize)": lambda p: _as_before(p, max_side),
        "now (draft + downsize)": lambda p: open_bounded(p, p.name, max_side),
    }
    spent = dict.fromkeys(ways, 0.0)
    for path in paths:
        for name, way in ways.items():
            start = time.perf_counter()
            way(path)
            spent[name] += time.perf_counter() - start
    return {name: len(paths) / seconds for name, seconds in spent.items()}


def pooled(paths: list[Path], max_side: int, threads: int) -> float:
    """Photos per second of `open_bounded` on `threads` threads, as the app opens an upload of many."""
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(lambda p: open_bounded(p, p.name, max_side), paths))
        return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos-dir", type=Path, required=True)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE)
    parser.add_argument("--grain", action="store_true", help="the grainy set (about 4 MB a file)")
    args = parser.parse_args()
    folder = Path(f"{args.photos_dir}-grain") if args.grain else args.photos_dir
    paths = ensure_photos(folder, args.count, grain=args.grain)
    measure(paths[:2], args.max_side)  # warm-up: imports, first allocations
    rates = measure(paths, args.max_side)
    full = rates["full decode"]
    print(f"{len(paths)} photos of 4000x3000 in {folder}, kept at most {args.max_side} px long, one core:")
    for name, rate in rates.items():
        print(f"  {name:<36} {rate:6.1f} photos/s   {rate / full:5.2f}x a full decode")
    threads = min(UPLOAD_THREADS, os.cpu_count() or 1)
    rate = pooled(paths, args.max_side, threads)
    label = f"now, {threads} threads (an upload of many)"
    print(f"  {label:<36} {rate:6.1f} photos/s   {rate / full:5.2f}x a full decode")


if __name__ == "__main__":
    main()
