"""Benchmark: MA-CLIP's cost, measured side by side in one run.

1. MA-CLIP from scratch (preprocessing, cutting the views, encoding, texts, scoring) against a bare
   `encode_image` pass over the same views, already cut and stacked, in the same chunks
   (target: at most 1.1x).
2. MA-CLIP from scratch against CLIP-IQA's native-resolution pass over the same photos (about
   2.3x for 1024x768 photos: 35 windows + the whole photo at 224 hold 2.3x the pixels).
3. Re-scoring MA-CLIP after a prompt edit: its time and the image encoder calls it makes (target: 0).

Photos: distinct 1024x768 crops of scikit-image's photos (what a camera photo becomes at the
default `--max-side`). Backbone: RN50 with random weights (pretrained=None; the compute is that
of OpenAI's RN50, the scores are meaningless). Each repeat runs every measurement in turn, so
drifts in machine load hit them alike; medians are printed.

    python -m benchmarks.maclip_bench [--photos 24] [--repeats 3] [--side 1024] [--device cpu] [--view-batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.bench import make_photos
from iqa.clip.backbones import Backbone, load_backbone
from iqa.clip.features import FeatureStore
from iqa.clip.views import ViewStore
from iqa.methods.prompts import PRESETS, PromptPair
from iqa.methods.scoring import ScorerSpec, build_scorers
from iqa.names import CLIP_IQA, MA_CLIP
from iqa.photos.photo import Photo


def stacked_views(store: ViewStore, photos: list[Photo], chunk: int) -> list[torch.Tensor]:
    """Every photo's views, cut as MA-CLIP cuts them, stacked into chunks of `chunk` (not timed)."""
    views = [view for photo in photos for _, view in store.cutter.views(store.preprocessor(photo.image)[None])]
    return [torch.stack(views[start : start + chunk]) for start in range(0, len(views), chunk)]


def bare_pass(backbone: Backbone, chunks: list[torch.Tensor]) -> None:
    """The least MA-CLIP must do: encode every view once."""
    for chunk in chunks:
        backbone.encode_image(chunk)
    _sync(backbone)


def scorer(method: str, store: FeatureStore, pairs: list[PromptPair], view_batch: int):
    """`method` on `store`, built by the factory like everywhere else."""
    built = build_scorers(ScorerSpec(methods=(method,), options={method: {"pairs": pairs}}), store)[method]
    ViewStore.over(store).view_batch = view_batch
    return built


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sync(backbone: Backbone) -> None:
    if backbone.device.type == "cuda":
        torch.cuda.synchronize(backbone.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", type=int, default=1024, help="the photos' width (4:3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--view-batch", type=int, default=32, help="views per encoder call")
    args = parser.parse_args()
    photos = make_photos(args.photos, args.side)
    backbone = load_backbone("RN50-quickgelu", pretrained=None, device=args.device, dtype=args.dtype)
    pairs = list(PRESETS["pyiqa"])
    probe = ViewStore.over(FeatureStore(backbone))
    chunks = stacked_views(probe, photos, args.view_batch)
    views = sum(len(chunk) for chunk in chunks)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {backbone.description}")
    width, height = photos[0].image.size
    print(f"{len(photos)} photos of {width}x{height}: {views} views, {len(chunks)} calls")
    scorer(CLIP_IQA, FeatureStore(backbone), pairs, args.view_batch).score(photos[:1])  # warm-up: both shapes
    bare_pass(backbone, chunks[:1])
    bare, maclip, clipiqa = [], [], []
    for _ in range(args.repeats):
        store = FeatureStore(backbone)  # fresh caches each time; the last one's is re-scored below
        bare.append(timed(lambda: bare_pass(backbone, chunks)))
        maclip.append(timed(lambda store=store: scorer(MA_CLIP, store, pairs, args.view_batch).score(photos)))
        clipiqa.append(timed(lambda: scorer(CLIP_IQA, FeatureStore(backbone), pairs, args.view_batch).score(photos)))
    calls = ViewStore.over(store).image_encoder_calls
    edited, rescore = list(pairs), []
    for i in range(args.repeats):
        edited[0] = PromptPair(f"a good photo {i}", f"a bad photo {i}")
        rescore.append(timed(lambda: scorer(MA_CLIP, store, edited, args.view_batch).score(photos)))
    edit_calls = ViewStore.over(store).image_encoder_calls - calls
    b, m, c, r = (statistics.median(x) for x in (bare, maclip, clipiqa, rescore))
    print(f"bare encoder pass over the views: {b:.2f} s (runs: {', '.join(f'{x:.2f}' for x in bare)})")
    print(f"MA-CLIP from scratch:             {m:.2f} s (runs: {', '.join(f'{x:.2f}' for x in maclip)})")
    print(f"CLIP-IQA native from scratch:     {c:.2f} s (runs: {', '.join(f'{x:.2f}' for x in clipiqa)})")
    print(f"MA-CLIP / bare pass over its views: {m / b:.3f}x (target <= 1.1x)")
    pixels = views * 224 * 224 / (len(photos) * width * height)
    print(f"MA-CLIP / CLIP-IQA native:          {m / c:.2f}x (pixels: {pixels:.2f}x)")
    print(f"MA-CLIP re-score after a prompt edit: {r:.4f} s, {edit_calls} image encoder calls")
    print(f"  ({m / r:.0f}x faster than from scratch)")


if __name__ == "__main__":
    main()
