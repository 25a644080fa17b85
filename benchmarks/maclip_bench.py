"""Benchmark: MA-CLIP's cost, measured side by side in one run.

1. MA-CLIP from scratch (preprocessing, cutting the views, encoding, texts, scoring) against a bare
   `encode_image` pass over the same views, already cut and stacked, in the same chunks
   (target: at most 1.1x). Photo by photo, the three measurements in turn, wall and CPU time.
2. MA-CLIP from scratch against CLIP-IQA's native-resolution pass over the same photos (about
   2.3x for 1024x768 photos: 35 windows + the whole photo at 224 hold 2.3x the pixels).
3. Re-scoring MA-CLIP after a prompt edit: its time and the image encoder calls it makes (target: 0).

Photos: distinct 1024x768 crops of scikit-image's photos (what a camera photo becomes at the
default `--max-side`). Backbone: RN50 with random weights (pretrained=None; the compute is that
of OpenAI's RN50, the scores are meaningless). Each photo goes through every measurement in
turn, so drifts in machine load hit them alike; the totals (mean over repeats) are printed, in wall
time and in this process's CPU time (less disturbed by other work on a shared machine).

    python -m benchmarks.maclip_bench [--photos 24] [--repeats 3] [--side 1024] [--device cpu] [--view-batch 32]
"""

from __future__ import annotations

import argparse
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


def stacked_views(store: ViewStore, photo: Photo, chunk: int) -> list[torch.Tensor]:
    """A photo's views, cut as MA-CLIP cuts them, stacked into chunks of `chunk` (not timed)."""
    views = [view for _, view in store.cutter.views(store.preprocessor(photo.image)[None])]
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


class Clock:
    """Wall time and this process's CPU time (both threads) spent in the timed calls: the CPU time
    is what other processes on a shared machine disturb least."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def time(self, fn) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu


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
    chunks = [stacked_views(probe, photo, args.view_batch) for photo in photos]
    views = sum(len(chunk) for photo_chunks in chunks for chunk in photo_chunks)
    width, height = photos[0].image.size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {backbone.description}")
    print(f"{len(photos)} photos of {width}x{height}: {views} views, {args.view_batch} views per call")
    scorer(CLIP_IQA, FeatureStore(backbone), pairs, args.view_batch).score(photos[:1])  # warm-up: both shapes
    bare_pass(backbone, chunks[0])
    bare, maclip, clipiqa = Clock(), Clock(), Clock()
    for _ in range(args.repeats):  # photo by photo, in turn: drifts in the machine's load hit all three alike
        store, native = FeatureStore(backbone), FeatureStore(backbone)  # fresh caches each repeat
        for photo, photo_chunks in zip(photos, chunks):
            bare.time(lambda photo_chunks=photo_chunks: bare_pass(backbone, photo_chunks))
            maclip.time(lambda store=store, photo=photo: scorer(MA_CLIP, store, pairs, args.view_batch).score([photo]))
            clipiqa.time(
                lambda native=native, photo=photo: scorer(CLIP_IQA, native, pairs, args.view_batch).score([photo])
            )
    calls = ViewStore.over(store).image_encoder_calls
    edited, rescore = list(pairs), Clock()
    for i in range(args.repeats):
        edited[0] = PromptPair(f"a good photo {i}", f"a bad photo {i}")
        rescore.time(lambda: scorer(MA_CLIP, store, edited, args.view_batch).score(photos))
    edit_calls = ViewStore.over(store).image_encoder_calls - calls
    n = args.repeats
    for label, clock in (("bare encoder pass over the views", bare), ("MA-CLIP from scratch", maclip)):
        print(f"{label + ':':<34} {clock.wall / n:8.2f} s wall, {clock.cpu / n:8.2f} s CPU")
    print(f"{'CLIP-IQA native from scratch:':<34} {clipiqa.wall / n:8.2f} s wall, {clipiqa.cpu / n:8.2f} s CPU")
    for label, a, b in (
        ("MA-CLIP / bare pass over its views", maclip, bare),
        ("MA-CLIP / CLIP-IQA native", maclip, clipiqa),
    ):
        print(f"{label + ':':<36} {a.wall / b.wall:.3f}x wall, {a.cpu / b.cpu:.3f}x CPU")
    pixels = views * 224 * 224 / (len(photos) * width * height)
    print(f"(target <= 1.1x over the bare pass; the views hold {pixels:.2f}x the native pixels)")
    print(f"MA-CLIP re-score after a prompt edit: {rescore.wall / n:.4f} s wall, {edit_calls} image encoder calls")
    print(f"  ({maclip.wall / rescore.wall:.0f}x faster than from scratch)")


if __name__ == "__main__":
    main()
