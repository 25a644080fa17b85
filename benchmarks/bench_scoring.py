"""Scoring engine benchmark: ratios measured side by side in one run (this machine is noisy).

1. CLIP-IQA scoring throughput vs a bare `encode_image` loop over the same photos and batch size
   (target: the engine's overhead is at most 5%).
2. Re-scoring already-scored photos after editing one prompt pair vs scoring them from scratch
   (target: at least 50x faster).
3. Peak memory (resident set) of a `python -m iqa score` run.

Backbones are RN50 and ViT-B-16 with random weights (pretrained=None): the compute is the same as
with pretrained weights, which cannot be downloaded here. Their scores are meaningless.

    python benchmarks/bench_scoring.py [--photos 32] [--repeats 3] [--side 512]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from iqa.backbones import load_backbone  # noqa: E402
from iqa.clipiqa import CLIPIQA  # noqa: E402
from iqa.features import FeatureStore  # noqa: E402
from iqa.photos import Photo  # noqa: E402
from iqa.prompts import PRESETS, PromptPair  # noqa: E402

BACKBONES = ("RN50-quickgelu", "ViT-B-16-quickgelu")


def make_photos(count: int, side: int) -> list[Photo]:
    """Distinct photos (each a different crop of a real photo) so that no cache can help."""
    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    photos = []
    for i in range(count):
        image = Image.fromarray(sources[i % len(sources)])
        image = image.crop((i, i, image.width - i, image.height - i)).resize((side, side * 3 // 4))
        photos.append(Photo(f"photo-{i}", image))
    return photos


def bare_loop(backbone, store: FeatureStore, photos: list[Photo], batch_size: int) -> None:
    """The least a scorer must do: preprocess and encode every photo in batches."""
    for start in range(0, len(photos), batch_size):
        batch = torch.stack([store.preprocessor(p.image) for p in photos[start:start + batch_size]])
        backbone.encode_image(batch)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_backbone(name: str, photos: list[Photo], batch_size: int, repeats: int) -> dict:
    backbone = load_backbone(name, pretrained=None, device="cpu")
    pairs = list(PRESETS["pyiqa"])
    probe = FeatureStore(backbone, batch_size=batch_size)
    bare, engine = [], []
    for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
        bare.append(timed(lambda: bare_loop(backbone, probe, photos, batch_size)))
        engine.append(timed(lambda: CLIPIQA(FeatureStore(backbone, batch_size=batch_size), pairs).score(photos)))
    store = FeatureStore(backbone, batch_size=batch_size)
    scratch = timed(lambda: CLIPIQA(store, pairs).score(photos))
    edited = list(pairs)
    rescore = []
    for i in range(repeats):
        edited[0] = PromptPair(f"a good photo {i}", f"a bad photo {i}")
        rescore.append(timed(lambda: CLIPIQA(store, edited).score(photos)))
    return {
        "bare": statistics.median(bare), "engine": statistics.median(engine),
        "scratch": scratch, "rescore": statistics.median(rescore),
    }


def peak_memory_mb(name: str, photos: list[Photo], batch_size: int) -> tuple[float, float]:
    """Peak RSS of a CLI score run, and of a run that only loads the backbone, in MiB."""
    with tempfile.TemporaryDirectory() as folder:
        for photo in photos:
            photo.image.save(Path(folder) / f"{photo.name}.jpg", quality=95)
        score = _peak_rss([sys.executable, "-m", "iqa", "score", folder, "--backbone", name,
                           "--pretrained", "none", "--batch-size", str(batch_size), "--device", "cpu"])
    load = _peak_rss([sys.executable, "-c",
                      f"from iqa.backbones import load_backbone; load_backbone({name!r}, None, device='cpu')"])
    return score, load


def _peak_rss(command: list[str]) -> float:
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
               "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True,
                         check=True, cwd=root)
    return int(out.stdout.strip()) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", type=int, default=512, help="photo width (height is 3/4 of it)")
    args = parser.parse_args()
    torch.manual_seed(0)
    photos = make_photos(args.photos, args.side)
    print(f"{args.photos} photos of {args.side}x{args.side * 3 // 4}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, random weights (compute as with pretrained ones)")
    print(f"{'backbone':20} {'bare s':>8} {'engine s':>9} {'overhead':>9} {'scratch s':>10} "
          f"{'re-score s':>11} {'speed-up':>9} {'peak MiB':>9} {'load MiB':>9}")
    for name in BACKBONES:
        r = bench_backbone(name, photos, args.batch_size, args.repeats)
        score_mb, load_mb = peak_memory_mb(name, photos, args.batch_size)
        print(f"{name:20} {r['bare']:8.2f} {r['engine']:9.2f} {r['engine'] / r['bare'] - 1:+9.1%} "
              f"{r['scratch']:10.2f} {r['rescore']:11.4f} {r['scratch'] / r['rescore']:8.0f}x "
              f"{score_mb:9.0f} {load_mb:9.0f}")
    print("overhead: engine time / bare encode_image loop - 1 (target <= +5%); "
          "speed-up: scratch / re-score after editing one pair (target >= 50x)")


if __name__ == "__main__":
    main()
