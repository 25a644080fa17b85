"""The CUDA path, checked on a GPU machine (CI has none; run this by hand where there is one).

1. Both methods score on the GPU in fp16 and bf16 and agree with fp32 CPU scores within 1e-2.
2. Images per second at batch 64 and 224x224 for RN50 and ViT-B/16, bare `encode_image` and the
   whole engine (preprocessing, caching, scoring) side by side.
3. A few hundred training steps of the GRMP-IQA `paper` variant (projection regularizer) on the
   bundled example set.

Backbones carry random weights (pretrained=None: no weights can be downloaded on these machines);
the compute is that of the real models, the scores are meaningless. The GPU models are loaded from
a checkpoint file of the CPU models' weights, so both sides hold the same numbers.

    python -m benchmarks.gpu_check [--out results.json] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from benchmarks.gpu_feed import bare_rate, device_name
from iqa.clip.backbones import load_backbone
from iqa.clip.features import FeatureStore
from iqa.labels.datasets import load_csv
from iqa.methods.grmp.model import GRMPConfig, GRMPModel
from iqa.methods.grmp.scorer import grmp_scorer
from iqa.methods.grmp.train import FinetuneProtocol, TrainConfig, run_protocol
from iqa.methods.prompts import PRESETS
from iqa.methods.scoring import Scorer, ScorerSpec, build_scorers
from iqa.names import CLIP_IQA
from iqa.photos.photo import Photo, open_photos

ROOT = Path(__file__).resolve().parents[1]

TOLERANCE = 1e-2


def scorers(backbone) -> dict[str, Scorer]:
    """CLIP-IQA and the GRMP variants this backbone supports, all with seeded initial prompts."""
    store = FeatureStore(backbone)
    out = {
        "CLIP-IQA": clip_iqa(store),
        "GRMP seed": grmp_scorer(GRMPModel(GRMPConfig("seed", backbone.name, None), backbone), store),
    }
    if not backbone.is_resnet:
        out["GRMP paper"] = grmp_scorer(GRMPModel(paper_config(backbone), backbone), store)
    return out


def clip_iqa(store: FeatureStore) -> Scorer:
    return build_scorers(ScorerSpec(options={CLIP_IQA: {"pairs": PRESETS["pyiqa"]}}), store)[CLIP_IQA]


def paper_config(backbone) -> GRMPConfig:
    """The paper preset; the two-layer test ViT (for a CPU smoke run) trains its last block only."""
    return GRMPConfig("paper", backbone.name, backbone.pretrained, train_last_blocks=1 if backbone.is_test else 4)


def agreement(name: str, photos: list[Photo], weights: Path, device: str, dtypes: list[str]) -> list[dict]:
    cpu = {m: [r.score for r in s.score(photos)] for m, s in scorers(load_backbone(name, None, weights, "cpu")).items()}
    rows = []
    for dtype in dtypes:
        gpu_backbone = load_backbone(name, None, weights, device, dtype)
        for method, scorer in scorers(gpu_backbone).items():
            gpu = [r.score for r in scorer.score(photos)]
            diff = max(abs(a - b) for a, b in zip(cpu[method], gpu))
            rows.append(
                {"backbone": name, "dtype": dtype, "method": method, "max_abs_diff": diff, "ok": diff <= TOLERANCE}
            )
    return rows


def throughput(
    name: str, weights: Path, photos: list[Photo], device: str, dtype: str, batch: int = 64, repeats: int = 5
) -> dict:
    backbone = load_backbone(name, None, weights, device, dtype)
    bare = bare_rate(backbone, (224, 224), batch, repeats)
    square = [
        Photo(f"{p.name}-{i}", p.image.resize((224, 224))) for i in range(batch // len(photos) + 1) for p in photos
    ][:batch]
    engine_times = []
    for i in range(repeats):  # distinct crops each time so the cache cannot help
        batch_photos = [Photo(f"{p.name}-{i}", p.image.rotate(i + 1)) for p in square]
        store = FeatureStore(backbone, batch_size=batch)
        start = time.perf_counter()
        clip_iqa(store).score(batch_photos)
        engine_times.append(time.perf_counter() - start)
    return {"backbone": name, "dtype": dtype, "bare_img_s": bare, "engine_img_s": batch * repeats / sum(engine_times)}


def paper_training(name: str, weights: Path, steps: int, device: str, dtype: str) -> dict:
    backbone = load_backbone(name, None, weights, device, dtype)
    model = GRMPModel(paper_config(backbone), backbone)
    images = load_csv(ROOT / "examples" / "labels.csv")
    config = TrainConfig.for_variant("paper", steps=steps, batch_size=32, eval_every=50)
    losses = []
    start = time.perf_counter()
    result = run_protocol(
        model,
        images,
        FinetuneProtocol(rounds=1, shots=None, group_by_ref=True),
        config,
        on_step=lambda step, loss, val: losses.append(loss),
        progress=False,
    )
    seconds = time.perf_counter() - start
    return {
        "steps": len(losses),
        "steps_per_s": len(losses) / seconds,
        "first_loss": losses[0],
        "last_loss": sum(losses[-10:]) / 10,
        "test_srcc": result.rounds[0].test["srcc"],
        "finite": all(loss == loss for loss in losses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--names", nargs="+", default=["RN50-quickgelu", "ViT-B-16-quickgelu"])
    parser.add_argument("--device", default="cuda", help="cpu only for a smoke test of this script")
    parser.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"])
    args = parser.parse_args()
    card = device_name(args.device)
    print(f"device: {card}, torch {torch.__version__}")
    photos, _ = open_photos(sorted((ROOT / "examples").glob("*.jpg"))[:16])
    report: dict[str, Any] = {"device": card, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        weights = {}
        for name in args.names:
            torch.manual_seed(0)
            weights[name] = Path(tmp) / f"{name}.safetensors"
            save_file(load_backbone(name, None, device="cpu").model.state_dict(), str(weights[name]))
        report["agreement"] = [
            row for name in args.names for row in agreement(name, photos, weights[name], args.device, args.dtypes)
        ]
        for row in report["agreement"]:
            print(
                f"agree  {row['backbone']:20} {row['dtype']}  {row['method']:11} "
                f"max|gpu-cpu| = {row['max_abs_diff']:.2e}  {'ok' if row['ok'] else 'FAIL'}"
            )
        report["throughput"] = [
            throughput(name, weights[name], photos, args.device, args.dtypes[0]) for name in args.names
        ]
        for row in report["throughput"]:
            print(
                f"speed  {row['backbone']:20} batch 64 @224 {row['dtype']}: bare {row['bare_img_s']:.0f} img/s, "
                f"engine {row['engine_img_s']:.0f} img/s"
            )
        vit = next((n for n in args.names if "ViT" in n or "vit" in n), None)
        if vit and args.steps:
            report["paper_training"] = paper_training(vit, weights[vit], args.steps, args.device, args.dtypes[0])
            print(f"train  paper variant: {json.dumps(report['paper_training'])}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    sys.exit(0 if all(row["ok"] for row in report["agreement"]) else 1)


if __name__ == "__main__":
    main()
