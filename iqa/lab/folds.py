"""Cross-validation folds, stratified and seeded, and the per-fold figures they give.

Keep/reject labels are stratified by class, so every test fold holds both; mean opinion scores by
rank, in consecutive groups of k, so every fold spans the whole range. Anything selected or fitted
(pairs, weights) only ever sees the training folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from iqa.errors import InputError

DEFAULT_FOLDS = 5
DEFAULT_SEED = 0
MIN_TEST_PHOTOS = 3  # SRCC in a test fold needs three values


@dataclass(frozen=True)
class CrossValidated:
    """A figure on each held-out fold, its mean and its spread (standard deviation over the folds)."""

    name: str
    folds: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.folds))

    @property
    def spread(self) -> float:
        return float(np.std(self.folds))

    def text(self) -> str:
        return f"{self.mean:.4f} ± {self.spread:.4f}"


def stratified_folds(
    strata: Sequence[int] | np.ndarray, k: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED
) -> list[np.ndarray]:
    """The test indices of k folds: each stratum shuffled (seeded) and dealt round the folds."""
    rng = np.random.default_rng(seed)
    strata = np.asarray(strata)
    folds: list[list[int]] = [[] for _ in range(k)]
    turn = 0
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        for index in members:
            folds[turn % k].append(int(index))
            turn += 1
    return [np.sort(np.array(fold, dtype=int)) for fold in folds]


def label_folds(
    keep: Sequence[bool] | np.ndarray, k: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED
) -> list[np.ndarray]:
    """Folds of a keep/reject set; refused where a class has fewer photos than folds."""
    keep = np.asarray(keep, dtype=bool)
    _check_k(k)
    counts = {"keep": int(keep.sum()), "reject": int((~keep).sum())}
    if min(counts.values()) == 0:
        only = "keep" if counts["reject"] == 0 else "reject"
        raise InputError(f"all {keep.size} labelled photos are '{only}': the search needs both keep and reject")
    if min(counts.values()) < k:
        raise InputError(
            f"{k} folds need at least {k} photos of each class; the set has {counts['keep']} keep "
            f"and {counts['reject']} reject"
        )
    return stratified_folds(keep.astype(int), k, seed)


def score_folds(
    scores: Sequence[float] | np.ndarray, k: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED
) -> list[np.ndarray]:
    """Folds of a set with mean opinion scores; refused where a test fold would be too small."""
    scores = np.asarray(scores, dtype=float)
    _check_k(k)
    if np.ptp(scores) == 0:
        raise InputError(f"all {scores.size} photos have the same score ({scores[0]:g}): nothing to rank against")
    if scores.size < k * MIN_TEST_PHOTOS:
        raise InputError(
            f"{k} folds need at least {k * MIN_TEST_PHOTOS} photos ({MIN_TEST_PHOTOS} per test fold); "
            f"the set has {scores.size}"
        )
    ranks = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
    return stratified_folds(ranks // k, k, seed)


def training(folds: list[np.ndarray], i: int, n: int) -> np.ndarray:
    """The indices outside fold i."""
    mask = np.ones(n, dtype=bool)
    mask[folds[i]] = False
    return np.flatnonzero(mask)


def _check_k(k: int) -> None:
    if not 2 <= k <= 100:
        raise InputError(f"folds must be a whole number from 2 to 100, got {k}")
