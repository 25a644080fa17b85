"""Learned pair weights: non-negative weights for a table's pairs, fitted on labels.

CLIP-IQA's score is the weighted mean of the pairs' p, so only the weights' ratios matter. They are
fitted by non-negative least squares of the centred target (keep = 1 / reject = 0, or the ranks of
the mean opinion scores, scaled) on the centred p columns, then scaled so the largest is 1. The
cross-validated figure fits on each fold's training photos and measures the held-out fold, beside
the table's own weights on the same folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls
from scipy.stats import rankdata

from iqa.clip.features import FeatureStore
from iqa.errors import InputError
from iqa.lab.folds import CrossValidated, training
from iqa.lab.search import Target, column_metric, cross_validate_fixed, probabilities, weighted_mean
from iqa.methods.prompts import PromptPair, check_pairs

DECIMALS = 3


@dataclass(frozen=True)
class WeightReport:
    pairs: list[PromptPair]  # the table's usable pairs, enabled, with the fitted weights
    fitted: CrossValidated
    table: CrossValidated | None  # the table's own weights on the same folds (None: no enabled pair weighs)
    metric: str
    counts: str


def fit_weights(p: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Non-negative weights [P] whose weighted mean of p [N, P] follows the target; the largest is 1."""
    wanted = rankdata(target) / len(target)
    columns = p - p.mean(axis=0)
    weights, _ = nnls(columns, wanted - wanted.mean())
    if not weights.max() > 0:
        raise InputError("no pair's p rises with the labels: no non-negative weights fit them")
    return np.round(weights / weights.max(), DECIMALS)


def cross_validate_weights(p: np.ndarray, target: Target) -> CrossValidated:
    """Weights fitted on each fold's training photos, measured on the held-out fold (a fold whose
    training photos no pair rises with, which the fit on all photos may not share, is measured with
    equal weights rather than refusing the whole report)."""
    figures = []
    for i, test in enumerate(target.folds):
        train = training(target.folds, i, target.n)
        try:
            weights = fit_weights(p[train], target.values[train])
        except InputError:  # no pair rises with this fold's training labels: measured as equal weights
            weights = np.ones(p.shape[1])
        scores = p[test] @ weights / weights.sum()
        figures.append(float(column_metric(scores[:, None], target.values[test], target.metric)[0]))
    return CrossValidated("fitted weights", tuple(figures))


def learn_weights(
    store: FeatureStore,
    images: torch.Tensor,
    pairs: Sequence[PromptPair],
    target: Target,
    temperature: float | None = None,
) -> WeightReport:
    """Weights for the table's usable pairs (disabled ones too: a fitted weight enables them)."""
    valid = [pair for pair, reason in zip(pairs, check_pairs(list(pairs), store.backbone.tokenizer)) if reason is None]
    if not valid:
        raise InputError("the table has no usable pair to weigh")
    t = store.backbone.logit_scale if temperature is None else float(temperature)
    p = probabilities(store, images, valid, t)
    weights = fit_weights(p, target.values)
    fitted = [PromptPair(pair.positive, pair.negative, float(w), True) for pair, w in zip(valid, weights)]
    table_scores = weighted_mean(p, valid)
    table_cv = None if table_scores is None else cross_validate_fixed("the table's weights", table_scores, target)
    return WeightReport(fitted, cross_validate_weights(p, target), table_cv, target.metric, target.counts())
