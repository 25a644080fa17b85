"""Benchmark: pair search, selection and filter calibration on 10,000 photos' features (issue 19, item 6).

Measured in one run, on the CPU, with RN50 at its real size (random weights: what a search costs
depends on the text tower and the features' shape, not on what the weights learned) and with the
tiny test backbone:
1. searching 500 candidate pairs: 1,000 texts encoded up to their end token, p for every photo and
   pair, AUC of every pair (target: at most 15 s);
2. a 5-fold cross-validated greedy selection of 5 pairs, plus the selection on all photos (at most 5 s);
3. calibration of 10,000 photos' scores (the selected pairs' mean): AUC, average precision, the
   curves, the threshold for a target recall, and both charts (under 1 s);
4. the text encoding itself, up to the end token against all 77 positions, on the same texts.

    python -m benchmarks.lab_search [--photos 10000] [--candidates 500] [--full-texts 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from iqa.clip.backbones import Backbone, load_backbone
from iqa.clip.features import FeatureStore
from iqa.lab.calibration import calibrate, choose_point
from iqa.lab.search import column_metric, cross_validate_selection, make_target, probabilities, select
from iqa.lab.vocabulary import VOCABULARY, candidate_pairs
from iqa.report.lab_charts import pr_chart, roc_chart

# More templates than the built-in three, so the vocabulary gives 500 distinct candidates.
TEMPLATES = (
    "a {} photo",
    "{} image",
    "a photo that looks {}",
    "a {} picture",
    "this photo is {}",
    "a {} shot",
    "the image looks {}",
    "a {} photograph",
    "{} quality",
)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def planted_set(dim: int, count: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Random features with keep/reject labels that a direction in them partly explains."""
    rng = np.random.default_rng(seed)
    keep = rng.random(count) < 0.75
    signal = rng.normal(0, 1, dim)
    features = rng.normal(0, 1, (count, dim)) + 0.15 * np.where(keep, 1, -1)[:, None] * signal
    return F.normalize(torch.tensor(features, dtype=torch.float32), dim=-1), keep


def text_ratio(backbone: Backbone, texts: list[str]) -> tuple[float, float, float]:
    """Seconds to encode `texts` up to the end token and over all 77 positions, and the largest difference."""
    tokens = backbone.tokenize(texts)
    cut, t_cut = timed(lambda: backbone.encode_text(tokens))
    with torch.no_grad():
        full, t_full = timed(lambda: backbone.model.encode_text(tokens))
    return t_cut, t_full, float((cut - full).abs().max())


def measure(backbone: Backbone, count: int, wanted: int, folds: int, pairs: int) -> dict[str, float]:
    images, keep = planted_set(backbone.embed_dim, count)
    candidates = [pair for pair, _ in candidate_pairs(VOCABULARY, TEMPLATES)][:wanted]
    store = FeatureStore(backbone)
    target, _ = timed(lambda: make_target(keep.astype(float), keep.tolist(), "auc", folds))
    p, t_encode = timed(lambda: probabilities(store, images, candidates, backbone.logit_scale))
    _, t_rank = timed(lambda: np.argsort(-column_metric(p, target.values, "auc")))
    chosen, t_select = timed(lambda: select(p, target.values, "auc", pairs))
    cv, t_cv = timed(lambda: cross_validate_selection(p, target, pairs))
    scores = p[:, chosen].mean(axis=1)

    def calibration():
        c = calibrate("CLIP-IQA", scores, keep)
        point = choose_point(c.curves, "recall", 0.8)
        return roc_chart([c], point), pr_chart([c], point)

    _, t_calibrate = timed(calibration)
    return {
        "candidates": len(candidates),
        "encode": t_encode,
        "rank": t_rank,
        "select": t_select + t_cv,
        "cv": cv.mean,
        "calibrate": t_calibrate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-pairs", type=int, default=5)
    parser.add_argument("--full-texts", type=int, default=200, help="texts for the end-token vs 77-token comparison")
    args = parser.parse_args()
    backbones = {
        "RN50 (random weights, real size)": load_backbone("RN50-quickgelu", pretrained=None, device="cpu"),
        "test-tiny-rn": load_backbone("test-tiny-rn"),
    }
    print(
        f"{args.photos} photos' features, {args.candidates} candidate pairs, torch on {torch.get_num_threads()} threads"
    )
    header = f"{'backbone':<34}{'encode s':>9}{'rank s':>8}{'search s':>9}{'select s':>9}{'CV AUC':>8}{'calib s':>8}"
    print(header)
    for name, backbone in backbones.items():
        r = measure(backbone, args.photos, args.candidates, args.folds, args.max_pairs)
        search = r["encode"] + r["rank"]
        print(
            f"{name:<34}{r['encode']:9.2f}{r['rank']:8.2f}{search:9.2f}{r['select']:9.2f}{r['cv']:8.3f}{r['calibrate']:8.3f}"
        )
    texts = [
        text
        for pair, _ in candidate_pairs(VOCABULARY, TEMPLATES)[: args.full_texts // 2]
        for text in (pair.positive, pair.negative)
    ]
    for name, backbone in backbones.items():
        cut, full, diff = text_ratio(backbone, texts)
        print(
            f"{name}: {len(texts)} texts up to the end token {cut:.2f} s, all 77 positions {full:.2f} s: "
            f"{full / cut:.1f}x faster (largest difference {diff:.1e})"
        )


if __name__ == "__main__":
    main()
