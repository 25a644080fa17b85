"""Benchmark: the Ray engine's overhead against the local engine on the same photos (issue 11, item 6).

Both score the same JPEG files with CLIP-IQA and the same backbone, in one run, side by side:
- local: find, open and score the photos in this process (what `python -m iqa score` does);
- Ray, cold: `score --engine ray` as a user runs it: start a local Ray, run the Data job
  (read, decode tasks, one scorer actor loading the backbone), write Parquet, shut Ray down;
- Ray, warm: the same job on a Ray that is already running (start-up excluded).
The largest difference between the two engines' scores is printed as a check. Photos are 1024x768,
so neither engine draft-decodes and the comparison is of the engines alone. A full-size backbone
with random weights (`--pretrained none`) is saved to a checkpoint file first and loaded from it
by both engines: each process would otherwise draw its own random weights.

    python -m benchmarks.ray_overhead [--photos 64] [--backbone test-tiny-rn] [--pretrained none]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data

from iqa.clip.backbones import load_backbone
from iqa.clip.test_backbones import is_test_backbone
from iqa.engine.ray_engine import RayJob, connect, import_ray, run_job
from iqa.methods.scoring import ScorerSpec, build_scorers
from iqa.photos.photo import find_photo_paths, open_photos


def make_photos(folder: Path, count: int) -> None:
    """Distinct 1024x768 JPEGs (each a different crop of a real photo)."""
    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    for i in range(count):
        image = Image.fromarray(sources[i % len(sources)])
        image = image.crop((i % 50, i % 40, image.width - i % 30, image.height - i % 20)).resize((1024, 768))
        image.save(folder / f"photo-{i:04d}.jpg", quality=90)


def local_engine(spec: ScorerSpec, folder: Path) -> dict[str, float]:
    paths, _ = find_photo_paths([folder])
    scorer = build_scorers(spec)["CLIP-IQA"]
    photos, errors = open_photos(paths)
    assert not errors, errors
    return {str(path.absolute()): r.score for path, r in zip(paths, scorer.score(photos))}


def ray_engine(spec: ScorerSpec, folder: Path, dest: Path) -> dict[str, float]:
    summary = run_job(RayJob([str(folder)], str(dest), spec))
    assert not summary.errors, summary.errors
    return {row["path"]: row["clip_iqa"] for row in pq.read_table(dest, columns=["path", "clip_iqa"]).to_pylist()}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--backbone", default="test-tiny-rn")
    parser.add_argument("--pretrained", default="none")
    args = parser.parse_args()
    pretrained = None if args.pretrained.lower() == "none" else args.pretrained
    with tempfile.TemporaryDirectory() as tmp:
        weights = None
        if pretrained is None and not is_test_backbone(args.backbone):
            torch.manual_seed(0)
            weights = Path(tmp) / "weights.safetensors"
            save_file(load_backbone(args.backbone, None, device="cpu").model.state_dict(), str(weights))
        spec = ScorerSpec(backbone=args.backbone, pretrained=pretrained, weights=weights, device="cpu")
        folder = Path(tmp) / "photos"
        folder.mkdir()
        make_photos(folder, args.photos)
        local, t_local = timed(lambda: local_engine(spec, folder))
        cold, t_cold = timed(lambda: ray_engine(spec, folder, Path(tmp) / "cold"))
        assert connect()  # a local Ray kept running for the warm job
        try:
            warm, t_warm = timed(lambda: ray_engine(spec, folder, Path(tmp) / "warm"))
        finally:
            import_ray().shutdown()
    diff = max(max(abs(local[k] - cold[k]), abs(local[k] - warm[k])) for k in local)
    n, cores = args.photos, os.cpu_count()
    print(f"{n} JPEGs of 1024x768, CLIP-IQA on {args.backbone} (CPU), {cores} cores")
    print(f"{'engine':<36}{'seconds':>9}{'photos/s':>10}{'vs local':>10}")
    for label, seconds in (("local", t_local), ("Ray, cold (start + job + stop)", t_cold), ("Ray, warm", t_warm)):
        print(f"{label:<36}{seconds:9.2f}{n / seconds:10.1f}{seconds / t_local:9.2f}x")
    print(f"largest score difference between the engines: {diff:.2e}")
    assert np.isfinite(diff) and diff < 1e-5


if __name__ == "__main__":
    main()
