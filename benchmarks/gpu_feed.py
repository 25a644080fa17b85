"""GPU feeding: the streaming pipeline from JPEG files against the bare image encoder, side by side.

For each backbone and photo set, images per second of
1. the bare encoder: `encode_image` on normalised tensors already on the device, at the input size
   and the batch the engine's encoder calls get (64, or fewer where a call's pixels reach
   `PipelineOptions.max_batch_pixels`: RN50 native at 1024x768 gets 10), under `no_grad` as the
   engine (the ceiling);
2. the whole engine from JPEG files: `iqa.engine.pipeline.Pipeline` (decoding workers with JPEG draft,
   uint8 to the device through pinned memory, normalised there, encoded, scored by CLIP-IQA; no
   disk cache), from the first file read to the last score, and in steady state (after the first
   batch, so the workers' start is left out);
and the ratio engine / bare. Issue 11's target: ViT-B-16, fp16, batch 64, 224 px, at least 70%.

Photo sets, made once under `--photos-dir`: 640x480 JPEGs (a web-sized photo; decoding is cheap, so
the feeding itself is measured) and 12 MP JPEGs (`benchmarks.photoset`: a camera roll, where the
CPU's decoding sets the pace). Random weights (nothing can be downloaded here): the compute is the
real models', the scores are meaningless.

    python -m benchmarks.gpu_feed [--device cuda] [--dtype fp16] [--photos 2048] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.photoset import ensure_photos
from iqa.clip.backbones import Backbone, load_backbone
from iqa.clip.features import FeatureStore
from iqa.engine.pipeline import Pipeline, PipelineOptions, default_workers
from iqa.methods.clipiqa.scorer import CLIPIQA
from iqa.methods.prompts import PRESETS

WEB_SIZE = (640, 480)
BATCH = 64


def make_web_photo(folder: Path, index: int) -> Path:
    """A distinct 640x480 JPEG: a random crop of a scikit-image photo with its own noise."""
    from skimage import data

    path = folder / f"web-{index:05d}.jpg"
    if not path.exists():
        rng = np.random.default_rng(index)
        name = ("astronaut", "chelsea", "coffee", "rocket")[index % 4]
        source = Image.fromarray(getattr(data, name)()).convert("RGB")
        w, h = source.size
        left, top = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
        crop = source.crop((left, top, left + w * 3 // 4, top + h * 3 // 4)).resize(WEB_SIZE, Image.Resampling.BICUBIC)
        noisy = np.asarray(crop, dtype=np.int16) + rng.normal(0, 3, (WEB_SIZE[1], WEB_SIZE[0], 3)).astype(np.int16)
        partial = path.with_suffix(".partial")
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(partial, "JPEG", quality=90)
        partial.replace(path)
    return path


def web_photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(make_web_photo, [folder] * count, range(count), chunksize=32))


def bare_rate(backbone: Backbone, size: tuple[int, int], batch: int = BATCH, repeats: int = 10) -> float:
    """Images per second of `encode_image` alone on a device batch of `size` (width, height)."""
    pixels = torch.randn(batch, 3, size[1], size[0], device=backbone.device, dtype=backbone.dtype)
    with torch.no_grad():
        for _ in range(3):
            backbone.encode_image(pixels)
        _sync(backbone)
        start = time.perf_counter()
        for _ in range(repeats):
            backbone.encode_image(pixels)
        _sync(backbone)
    return batch * repeats / (time.perf_counter() - start)


def engine_rate(backbone: Backbone, paths: list[Path], workers: int) -> tuple[float, float | None, tuple[int, int]]:
    """(images/s from the first file to the last score, images/s after the first batch (None with
    one batch only), the input size)."""
    scorer = CLIPIQA(FeatureStore(backbone, batch_size=BATCH), PRESETS["pyiqa"])
    pipeline = Pipeline([scorer], PipelineOptions(workers=workers, cache=None))
    start = time.perf_counter()
    first_batch_at, after_first = 0.0, 0
    for batch in pipeline.run(paths):
        if not first_batch_at:
            _sync(backbone)
            first_batch_at = time.perf_counter()
        else:
            after_first += len(batch)
    _sync(backbone)
    end = time.perf_counter()
    if pipeline.counts.skipped:
        raise RuntimeError(f"{len(pipeline.counts.skipped)} photos were not scored: {pipeline.counts.skipped[:3]}")
    with Image.open(paths[0]) as first:
        input_size = scorer.store.preprocessor.output_size(first.size)
    steady = after_first / (end - first_batch_at) if after_first else None
    return len(paths) / (end - start), steady, input_size


def device_name(device: str) -> str:
    """The card's name ("cpu" on the CPU); exits with a message when CUDA is asked for and there is none."""
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU (--device cpu for a smoke test)")
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def _sync(backbone: Backbone) -> None:
    if torch.device(backbone.device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cpu only for a smoke test of this script")
    parser.add_argument("--dtype", default="fp16")
    parser.add_argument("--photos", type=int, default=2048, help="640x480 JPEGs; a quarter as many 12 MP ones")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--photos-dir", type=Path, default=Path(tempfile.gettempdir()) / "iqa-gpu-feed")
    parser.add_argument("--names", nargs="+", default=["ViT-B-16-quickgelu", "RN50-quickgelu"])
    args = parser.parse_args()
    card = device_name(args.device)
    print(f"# device {card}, torch {torch.__version__}, {os.cpu_count()} cores, {args.workers} decoding workers")
    sets = {
        "640x480 JPEGs": web_photos(args.photos_dir / "web", args.photos),
        "12 MP JPEGs": ensure_photos(args.photos_dir / "12mp", max(BATCH, args.photos // 4)),
    }
    print(
        f"| backbone ({args.dtype}) | photos | input | encoder batch | bare img/s "
        "| engine img/s | steady img/s | engine / bare | steady / bare |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.names:
        backbone = load_backbone(name, None, device=args.device, dtype=args.dtype)
        for set_name, paths in sets.items():
            engine, steady, size = engine_rate(backbone, paths, args.workers)
            batch = max(1, min(BATCH, PipelineOptions().max_batch_pixels // (size[0] * size[1])))
            bare = bare_rate(backbone, size, batch)
            steady_text = ("n/a", "n/a") if steady is None else (f"{steady:.0f}", f"{steady / bare:.0%}")
            print(
                f"| {name} | {len(paths)} {set_name} | {size[0]}x{size[1]} | {batch} | {bare:.0f} | {engine:.0f} "
                f"| {steady_text[0]} | {engine / bare:.0%} | {steady_text[1]} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
