"""Benchmark: what CLIP-IQA+ and QualiCLIP add to CLIP-IQA, measured side by side in one run.

1. CLIP-IQA+ on CLIP-IQA's shared features (one more text pair) vs CLIP-IQA alone, fresh stores
   each time (target: at most +5%); and the extra time itself, from the shared cache (building it:
   its learned pair's two texts encoded once; scoring: one product with the image features).
2. QualiCLIP (its own fine-tuned RN50: a second image pass) with CLIP-IQA vs CLIP-IQA alone.

RN50-quickgelu with random weights (pretrained=None: nothing can be downloaded here; the compute is
the same as with OpenAI's); CLIP-IQA+'s context and QualiCLIP's file are random tensors written in
the releases' layouts and read through the same loading code as the downloaded files.

    python -m benchmarks.more_methods [--photos 24] [--side 1024] [--repeats 3] [--only plus|qualiclip]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.bench import make_photos, timed
from iqa.clip.backbones import load_backbone
from iqa.clip.features import FeatureStore
from iqa.methods.scoring import ScorerSpec, build_scorers
from iqa.names import CLIP_IQA, CLIP_IQA_PLUS, QUALICLIP
from iqa.photos.photo import Photo

BACKBONE = "RN50-quickgelu"


def _scorers(store: FeatureStore, methods: tuple[str, ...], options: dict) -> list:
    spec = ScorerSpec(methods=methods, backbone=BACKBONE, pretrained=None, device="cpu", options=options)
    return list(build_scorers(spec, store).values())


def bench_plus(photos: list[Photo], repeats: int, folder: Path) -> dict:
    backbone = load_backbone(BACKBONE, pretrained=None, device="cpu")
    torch.save((torch.randn(16, 512) / 512**0.5).half(), folder / "ctx.pth")
    options = {CLIP_IQA_PLUS: {"clipiqa_plus_prompts": folder / "ctx.pth"}}
    alone, both, extra = [], [], []
    for _ in range(repeats):  # interleaved, so drifts in machine load hit both alike
        (clip_iqa,) = _scorers(FeatureStore(backbone), (CLIP_IQA,), {})
        alone.append(timed(lambda s=clip_iqa: s.score(photos)))
        store = FeatureStore(backbone)
        pair = _scorers(store, (CLIP_IQA, CLIP_IQA_PLUS), options)
        both.append(timed(lambda pair=pair: [s.score(photos) for s in pair]))
        extra.append(timed(lambda store=store: _scorers(store, (CLIP_IQA_PLUS,), options)[0].score(photos)))
    return {"alone": alone, "both": both, "extra": extra}


def bench_qualiclip(photos: list[Photo], repeats: int, folder: Path) -> dict:
    backbone = load_backbone(BACKBONE, pretrained=None, device="cpu")
    state = {f"clip_model.{k}": v for k, v in backbone.model.state_dict().items()}
    state["prompts_features"] = torch.nn.functional.normalize(torch.randn(14, backbone.embed_dim), dim=-1)
    torch.save(state, folder / "QualiCLIP.pth")
    options = {QUALICLIP: {"qualiclip_weights": folder / "QualiCLIP.pth"}}
    alone, both = [], []
    for _ in range(repeats):
        (clip_iqa,) = _scorers(FeatureStore(backbone), (CLIP_IQA,), {})
        alone.append(timed(lambda s=clip_iqa: s.score(photos)))
        pair = _scorers(FeatureStore(backbone), (CLIP_IQA, QUALICLIP), options)  # QualiCLIP: a fresh store of its own
        both.append(timed(lambda pair=pair: [s.score(photos) for s in pair]))
    return {"alone": alone, "both": both}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["plus", "qualiclip"], default=None)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--side", type=int, default=1024, help="photo width (height is 3/4 of it)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    photos = make_photos(args.photos, args.side)
    print(
        f"{args.photos} photos of {args.side}x{args.side * 3 // 4}, {BACKBONE} with random weights, CPU, "
        f"{torch.get_num_threads()} threads, {args.repeats} repeats (fastest, and median)"
    )
    with tempfile.TemporaryDirectory() as folder:
        if args.only in (None, "plus"):
            r = bench_plus(photos, args.repeats, Path(folder))
            alone, both, extra = min(r["alone"]), min(r["both"]), min(r["extra"])
            print(
                f"CLIP-IQA alone {_times(r['alone'])}; + CLIP-IQA+ on its features {_times(r['both'])} "
                f"(ratio of the fastest {both / alone:.3f}x); CLIP-IQA+'s own work on the shared features "
                f"(built: its pair encoded; scored) {_times(r['extra'], 4)}: +{extra / alone:.2%} of CLIP-IQA "
                "(target <= +5%)"
            )
        if args.only in (None, "qualiclip"):
            r = bench_qualiclip(photos, args.repeats, Path(folder))
            print(
                f"CLIP-IQA alone {_times(r['alone'])}; + QualiCLIP (its own RN50) {_times(r['both'])} "
                f"(ratio of the fastest {min(r['both']) / min(r['alone']):.2f}x)"
            )


def _times(seconds: list[float], digits: int = 2) -> str:
    """The fastest of the repeats (the machine's noise only ever adds time), and the median."""
    return f"{min(seconds):.{digits}f} s (median {statistics.median(seconds):.{digits}f})"


if __name__ == "__main__":
    main()
