"""Build the small labelled example set in this folder from scikit-image's sample photos.

Run from the repository root:  python -m examples.make_examples

Four freely licensed photos (see LICENSES.md) are shrunk to 384 px on the long side and saved as
JPEG (quality 95), each with blurred, noisy, JPEG-compressed, over- and under-exposed versions at
levels 1, 3 and 5 of :mod:`iqa.labels.distortions`. ``labels.csv`` (path,score,ref,distortion,level,label)
gives each file its synthetic score (1.0 for the original, 1 - level/6 for a distorted copy) and
a keep/reject label (reject from level 3: `iqa.labels.keep.keep_from_level`).
The output is deterministic: running the script again rewrites identical files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image
from skimage import data

from iqa.labels.datasets import LabelledImage
from iqa.labels.distortions import make_distorted_set

# skimage.data loaders whose photos may be redistributed (public domain or CC0).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
TYPES = ("gaussian_blur", "gaussian_noise", "jpeg", "over_exposure", "under_exposure")
LEVELS = (1, 3, 5)
# 384 px keeps the whole set (4 x 16 JPEGs) under 3 MB.
MAX_SIDE = 384
QUALITY = 95


def make_examples(out_dir: Path, max_side: int = MAX_SIDE) -> list[LabelledImage]:
    """Write the example photos and ``labels.csv`` into ``out_dir``; return the records."""
    sources = {name: Image.fromarray(getattr(data, name)()) for name in PHOTOS}
    return make_distorted_set(
        sources,
        out_dir,
        types=TYPES,
        levels=LEVELS,
        seed=0,
        image_format="jpg",
        quality=QUALITY,
        max_side=max_side,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--max-side", type=int, default=MAX_SIDE)
    args = parser.parse_args()
    records = make_examples(args.out, args.max_side)
    total = sum(r.path.stat().st_size for r in records)
    print(f"wrote {len(records)} images ({total / 1e6:.2f} MB) and labels.csv to {args.out}")


if __name__ == "__main__":
    main()
