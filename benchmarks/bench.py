"""Benchmark: ratios measured side by side in one run (these machines are noisy).

Scoring engine:
1. CLIP-IQA scoring throughput vs a bare `encode_image` loop over the same photos and batch size
   (target: the engine's overhead is at most 5%).
2. Re-scoring already-scored photos after editing one prompt pair vs scoring them from scratch
   (target: at least 50x faster).
3. Peak memory (resident set) of a `python -m iqa score` run.
GRMP-IQA:
4. Training speed of the seed variant on cached features (steps per second) and the time to adapt
   it on 200 labelled photos, feature extraction included.
5. Scoring with CLIP-IQA and GRMP-IQA (seed) together vs CLIP-IQA alone on a shared backbone
   (target: at most 1.1x).
6. Scoring with CLIP-IQA (RN50, native resolution) plus an official GRMP-IQA model (ViT-B/16 with
   100 visual prompt tokens per block, its own backbone) vs CLIP-IQA alone (target: at most 2.2x).

Backbones are RN50 and ViT-B-16 with random weights (pretrained=None): the compute is the same as
with pretrained weights, which cannot be downloaded here. Their scores are meaningless.

    python -m benchmarks.bench [--photos 24] [--repeats 3] [--side 448] [--only scoring|grmp|official]
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

from iqa.clip.backbones import load_backbone
from iqa.clip.features import FeatureStore
from iqa.labels.datasets import LabelledImage
from iqa.labels.distortions import make_distorted_set
from iqa.methods.grmp.model import GRMPConfig, GRMPModel
from iqa.methods.grmp.scorer import grmp_scorer
from iqa.methods.grmp.train import adapt_seed
from iqa.methods.prompts import PRESETS, PromptPair
from iqa.methods.scoring import Scorer, ScorerSpec, build_scorers
from iqa.names import CLIP_IQA
from iqa.photos.photo import Photo
from iqa.report.compare import compare

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
        batch = torch.stack([store.preprocessor(p.image) for p in photos[start : start + batch_size]])
        backbone.encode_image(batch)


def clip_iqa(store: FeatureStore, pairs: list[PromptPair]) -> Scorer:
    """CLIP-IQA on `store`, built by the factory like everywhere else."""
    return build_scorers(ScorerSpec(options={CLIP_IQA: {"pairs": pairs}}), store)[CLIP_IQA]


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
        engine.append(timed(lambda: clip_iqa(FeatureStore(backbone, batch_size=batch_size), pairs).score(photos)))
    store = FeatureStore(backbone, batch_size=batch_size)
    scratch = timed(lambda: clip_iqa(store, pairs).score(photos))
    edited = list(pairs)
    rescore = []
    for i in range(repeats):
        edited[0] = PromptPair(f"a good photo {i}", f"a bad photo {i}")
        rescore.append(timed(lambda: clip_iqa(store, edited).score(photos)))
    return {
        "bare": statistics.median(bare),
        "engine": statistics.median(engine),
        "scratch": scratch,
        "rescore": statistics.median(rescore),
    }


def peak_memory_mb(name: str, photos: list[Photo], batch_size: int) -> tuple[float, float]:
    """Peak RSS of a CLI score run, and of a run that only loads the backbone, in MiB."""
    with tempfile.TemporaryDirectory() as folder:
        for photo in photos:
            photo.image.save(Path(folder) / f"{photo.name}.jpg", quality=95)
        score = _peak_rss(
            [
                sys.executable,
                "-m",
                "iqa",
                "score",
                folder,
                "--backbone",
                name,
                "--pretrained",
                "none",
                "--batch-size",
                str(batch_size),
                "--device",
                "cpu",
            ]
        )
    load = _peak_rss(
        [
            sys.executable,
            "-c",
            f"from iqa.clip.backbones import load_backbone; load_backbone({name!r}, None, device='cpu')",
        ]
    )
    return score, load


def _peak_rss(command: list[str]) -> float:
    wrapper = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True, cwd=root
    )
    return int(out.stdout.strip()) / 1024


def labelled_set(folder: Path, count: int = 200) -> list[LabelledImage]:
    """`count` labelled photos: five real photos at 256 px, five distortions at five strengths."""
    sources = {
        name: Image.fromarray(getattr(data, name)()).convert("RGB")
        for name in (
            "astronaut",
            "chelsea",
            "coffee",
            "rocket",
            "camera",
            "cat",
            "hubble_deep_field",
            "immunohistochemistry",
        )
    }
    records = make_distorted_set(
        sources,
        folder,
        types=("gaussian_blur", "gaussian_noise", "jpeg", "over_exposure", "under_exposure"),
        max_side=256,
        image_format="jpg",
    )
    return records[:count]


def bench_grmp(name: str, photos: list[Photo], repeats: int, steps: int = 300) -> dict:
    backbone = load_backbone(name, pretrained=None, device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        images = labelled_set(Path(folder))
        store = FeatureStore(backbone)
        start = time.perf_counter()
        adapt_seed(store, images, steps=steps)
        adapt_first = time.perf_counter() - start  # features and training
        start = time.perf_counter()
        adapt_seed(store, images, steps=steps)
        adapt_cached = time.perf_counter() - start  # training only: features come from the cache
    model = GRMPModel(GRMPConfig("seed", name, None), backbone)
    alone, both = [], []
    for _ in range(repeats):
        alone.append(timed(lambda: clip_iqa(FeatureStore(backbone), PRESETS["pyiqa"]).score(photos)))
        shared = FeatureStore(backbone)
        pair = [clip_iqa(shared, PRESETS["pyiqa"]), grmp_scorer(model, shared)]
        both.append(timed(lambda pair=pair: compare(photos, pair)))
    return {
        "n": len(images),
        "adapt_first": adapt_first,
        "adapt_cached": adapt_cached,
        "steps_per_s": steps / adapt_cached,
        "alone": statistics.median(alone),
        "both": statistics.median(both),
    }


def bench_official(photos: list[Photo], repeats: int, device: str = "cpu") -> dict:
    """CLIP-IQA on RN50 alone vs together with an official-architecture GRMP-IQA model on ViT-B/16."""
    clip_backbone = load_backbone("RN50-quickgelu", pretrained=None, device=device)
    config = GRMPConfig("paper", "ViT-B-16-quickgelu", None, preprocess="official")
    model = GRMPModel(config, load_backbone(config.backbone, pretrained=None, device=device))
    alone, both = [], []
    for _ in range(repeats):  # fresh stores: every photo is encoded each time
        alone.append(timed(lambda: clip_iqa(FeatureStore(clip_backbone), PRESETS["pyiqa"]).score(photos)))
        pair = [clip_iqa(FeatureStore(clip_backbone), PRESETS["pyiqa"]), grmp_scorer(model)]
        both.append(timed(lambda pair=pair: compare(photos, pair)))
    return {"alone": statistics.median(alone), "both": statistics.median(both)}


def report_official(photos: list[Photo], args: argparse.Namespace) -> None:
    r = bench_official(photos, args.repeats, args.device)
    print(
        f"\n{args.device}: CLIP-IQA (RN50-quickgelu) {r['alone']:.2f} s; + official GRMP-IQA "
        f"(ViT-B-16-quickgelu, 100 VPT tokens) {r['both']:.2f} s; ratio {r['both'] / r['alone']:.2f}x "
        "(target <= 2.2x)"
    )


def report_scoring(photos: list[Photo], args: argparse.Namespace) -> None:
    print(
        f"{'backbone':20} {'bare s':>8} {'engine s':>9} {'overhead':>9} {'scratch s':>10} "
        f"{'re-score s':>11} {'speed-up':>9} {'peak MiB':>9} {'load MiB':>9}"
    )
    for name in BACKBONES:
        r = bench_backbone(name, photos, args.batch_size, args.repeats)
        score_mb, load_mb = peak_memory_mb(name, photos, args.batch_size)
        print(
            f"{name:20} {r['bare']:8.2f} {r['engine']:9.2f} {r['engine'] / r['bare'] - 1:+9.1%} "
            f"{r['scratch']:10.2f} {r['rescore']:11.4f} {r['scratch'] / r['rescore']:8.0f}x "
            f"{score_mb:9.0f} {load_mb:9.0f}"
        )
    print(
        "overhead: engine time / bare encode_image loop - 1 (target <= +5%); "
        "speed-up: scratch / re-score after editing one pair (target >= 50x)"
    )


def report_grmp(photos: list[Photo], args: argparse.Namespace) -> None:
    print(
        f"\n{'backbone':20} {'photos':>6} {'adapt s':>8} {'train s':>8} {'steps/s':>8} "
        f"{'CLIP-IQA s':>11} {'+GRMP s':>8} {'ratio':>6}"
    )
    for name in BACKBONES:
        r = bench_grmp(name, photos, args.repeats)
        print(
            f"{name:20} {r['n']:6} {r['adapt_first']:8.1f} {r['adapt_cached']:8.1f} {r['steps_per_s']:8.1f} "
            f"{r['alone']:11.2f} {r['both']:8.2f} {r['both'] / r['alone']:5.2f}x"
        )
    print(
        "adapt: 300 seed-variant steps on 200 labelled photos, feature extraction included; train: the same "
        "with features cached; ratio: CLIP-IQA + GRMP-IQA (seed, shared backbone) / CLIP-IQA alone "
        "(target <= 1.1x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["scoring", "grmp", "official"], default=None)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", type=int, default=448, help="photo width (height is 3/4 of it)")
    parser.add_argument("--device", default="cpu", help="device of the official-model comparison (cuda on a GPU)")
    args = parser.parse_args()
    torch.manual_seed(0)
    photos = make_photos(args.photos, args.side)
    print(
        f"{args.photos} photos of {args.side}x{args.side * 3 // 4}, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, random weights (compute as with pretrained ones)"
    )
    if args.only in (None, "scoring"):
        report_scoring(photos, args)
    if args.only in (None, "grmp"):
        report_grmp(photos, args)
    if args.only in (None, "official"):
        report_official(photos, args)


if __name__ == "__main__":
    main()
