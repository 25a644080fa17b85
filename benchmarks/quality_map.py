"""Benchmark: the time of one quality map of a 1024x768 photo, by backbone and batch size.

For RN50 (native resolution) and ViT-B-16 with random weights (pretrained=None: the compute of the
real models, meaningless values), side by side in one run: a map from scratch (every window
encoded) at several batch sizes, and the same map after a prompt edit (window features cached).
Printed, not asserted.

    python -m benchmarks.quality_map [--batch-sizes 1 16 64] [--side 1024] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image
from skimage import data

from iqa.clip.backbones import load_backbone
from iqa.clip.features import FeatureStore
from iqa.methods.clipiqa.quality_map import quality_map
from iqa.methods.clipiqa.scorer import CLIPIQA
from iqa.methods.prompts import PRESETS, PromptPair
from iqa.photos.photo import Photo

BACKBONES = ("RN50-quickgelu", "ViT-B-16-quickgelu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--side", type=int, default=1024, help="the photo's longest side (4:3)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    photo = Photo("astronaut", Image.fromarray(data.astronaut()).resize((args.side, args.side * 3 // 4)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'backbone':<20} {'batch':>5} {'windows':>9} {'window px':>9} {'map s':>8} {'after edit s':>12}")
    for name in BACKBONES:
        backbone = load_backbone(name, pretrained=None, device=args.device)
        for batch_size in args.batch_sizes:
            store = FeatureStore(backbone, batch_size=batch_size)
            start = time.perf_counter()
            qmap = quality_map(photo, CLIPIQA(store, PRESETS["pyiqa"]))
            scratch = time.perf_counter() - start
            edited = [*PRESETS["pyiqa"][:-1], PromptPair("a clean photo", "a grainy photo")]
            start = time.perf_counter()
            quality_map(photo, CLIPIQA(store, edited))
            cached = time.perf_counter() - start
            print(
                f"{name:<20} {batch_size:>5} {f'{qmap.rows}x{qmap.cols}':>9} {qmap.window:>9} "
                f"{scratch:>8.2f} {cached:>12.3f}"
            )


if __name__ == "__main__":
    main()
