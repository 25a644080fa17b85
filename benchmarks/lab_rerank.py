"""Benchmark: the prompt lab on a 10,000-photo labelled set, from the disk cache (issue 11, item 7).

Measured in one run, on the CPU:
1. the first run: every photo decoded and encoded (test-tiny-rn, small photos), stored on disk;
2. a later run in a fresh store: hashing the files and reading their features from SQLite;
3. re-ranking after editing one pair (text encodings, a matrix product, SRCC and PLCC per pair),
   with the tiny test backbone and with RN50 at its real size (random weights, 1024-d features:
   the re-rank cost depends only on the text tower and the features' shape). Target: under 1 s.

    python -m benchmarks.lab_rerank [--photos 10000] [--side 96]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqa.clip.backbones import load_backbone
from iqa.clip.features import FeatureStore
from iqa.engine.disk_cache import DiskCache
from iqa.lab.prompt_lab import LabelledFeatures, labelled_features, rank_pairs
from iqa.labels.datasets import LabelledImage
from iqa.methods.prompts import PRESETS, PromptPair


def make_set(folder: Path, count: int, side: int) -> list[LabelledImage]:
    """Distinct small JPEGs (random noise over a gradient) with random labels."""
    rng = np.random.default_rng(0)
    base = np.linspace(0, 200, side, dtype=np.float32)[None, :, None]
    items = []
    for i in range(count):
        pixels = np.clip(base + rng.normal(0, 30, (side * 3 // 4, side, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=85)
        items.append(LabelledImage(path, float(rng.uniform(1, 5))))
    return items


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def edited(pairs: list[PromptPair], k: int) -> list[PromptPair]:
    return [PromptPair(f"a crisp photo {k}", f"a smeared photo {k}"), *pairs[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--side", type=int, default=96)
    args = parser.parse_args()
    pairs = PRESETS["pyiqa"]
    tiny = load_backbone("test-tiny-rn")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        items, made = timed(lambda: make_set(folder, args.photos, args.side))
        print(f"made {len(items)} photos of {args.side}x{args.side * 3 // 4} in {made:.1f} s")
        cache = DiskCache(folder / "cache")
        first, t_first = timed(lambda: labelled_features(items, FeatureStore(tiny, batch_size=64), cache))
        store = FeatureStore(tiny)
        again, t_again = timed(lambda: labelled_features(items, store, DiskCache(folder / "cache")))
        assert again.from_cache == len(items) and torch.equal(first.features, again.features)
        rank_pairs(store, pairs, again)
        tiny_times = [timed(lambda k=k: rank_pairs(store, edited(pairs, k), again))[1] for k in range(3)]
    rn50 = load_backbone("RN50-quickgelu", pretrained=None, device="cpu")
    rn_store = FeatureStore(rn50)
    features = torch.nn.functional.normalize(torch.randn(args.photos, rn50.embed_dim), dim=-1)
    rn_set = LabelledFeatures(
        [str(i) for i in range(args.photos)],
        [float(s) for s in np.random.default_rng(1).uniform(1, 5, args.photos)],
        features,
        rn50.key,
        rn_store.preprocessor.key,
    )
    rank_pairs(rn_store, pairs, rn_set)
    rn_times = [timed(lambda k=k: rank_pairs(rn_store, edited(pairs, k), rn_set))[1] for k in range(3)]
    n = len(items)
    print(f"{'step':<58}{'seconds':>9}")
    print(f"{'first run: decode + encode ' + str(n) + ' photos, store':<58}{t_first:9.2f}")
    print(f"{'later run: hash ' + str(n) + ' files + read features from SQLite':<58}{t_again:9.2f}")
    print(f"{'re-rank after editing a pair (test-tiny-rn, 5 pairs)':<58}{min(tiny_times):9.3f}")
    print(f"{f're-rank after editing a pair (RN50, {rn50.embed_dim}-d, 5 pairs)':<58}{min(rn_times):9.3f}")
    print(f"later run vs first run: {t_first / t_again:.1f}x faster")


if __name__ == "__main__":
    main()
