"""Filter calibration: how well a score finds the bad photos, and where to put the threshold.

Bad photos are the positive class of "reject"; a threshold t rejects a photo whose score is below
t and keeps the others (as `iqa.report.filtering.split_by_threshold` does). ROC AUC is the probability
that a random bad photo scores below a random good one (ties count half); average precision is
scikit-learn's (step-wise, no interpolation). See METHODS.md, "Calibrating a filter".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from iqa.errors import InputError

TargetKind = Literal["precision", "recall", "f1"]


class CalibrationError(InputError):
    """A labelled set or scores that cannot be calibrated, or a target no threshold reaches."""


@dataclass(frozen=True)
class Curves:
    """Every distinct way a threshold splits the photos, from rejecting none to rejecting all.

    Point k rejects the photos with the k lowest distinct scores; `cuts[k]` is a threshold that
    does so (a value between the k-th and the (k+1)-th distinct score; below every score for none,
    the next whole number above every score for all: 0 and 1 for scores in (0, 1)).
    """

    cuts: np.ndarray  # [m + 1], ascending
    rejected_bad: np.ndarray  # [m + 1] true rejects
    rejected_good: np.ndarray  # [m + 1] false rejects
    scores: np.ndarray  # [m] the distinct scores, ascending
    n_bad: int
    n_good: int

    @property
    def recall(self) -> np.ndarray:
        """Share of the bad photos rejected (the true-positive rate)."""
        return self.rejected_bad / self.n_bad

    @property
    def false_positive_rate(self) -> np.ndarray:
        """Share of the good photos rejected."""
        return self.rejected_good / self.n_good

    @property
    def precision(self) -> np.ndarray:
        """Share of the rejected photos that are bad; 1 where nothing is rejected (scikit-learn's convention)."""
        rejected = self.rejected_bad + self.rejected_good
        return np.divide(self.rejected_bad, rejected, out=np.ones(len(rejected)), where=rejected > 0)

    def point(self, k: int) -> OperatingPoint:
        """The confusion counts at point k, with a short threshold that gives them."""
        inside = 0 < k < len(self.scores)
        threshold = short_between(self.scores[k - 1], self.scores[k]) if inside else float(self.cuts[k])
        bad, good = int(self.rejected_bad[k]), int(self.rejected_good[k])
        return OperatingPoint(threshold, bad, self.n_bad - bad, good, self.n_good - good)


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and what it does: bad photos rejected and kept, good photos rejected and kept."""

    threshold: float
    rejected_bad: int
    kept_bad: int
    rejected_good: int
    kept_good: int

    @property
    def precision(self) -> float:
        rejected = self.rejected_bad + self.rejected_good
        return self.rejected_bad / rejected if rejected else 1.0

    @property
    def recall(self) -> float:
        return self.rejected_bad / (self.rejected_bad + self.kept_bad)

    def sentence(self) -> str:
        bad = self.rejected_bad + self.kept_bad
        good = self.rejected_good + self.kept_good
        return (
            f"threshold {exact(self.threshold)} rejects {self.rejected_bad} of {bad} bad photos, "
            f"loses {self.rejected_good} of {good} good ones"
        )


@dataclass(frozen=True)
class Calibration:
    """One score's calibration against keep/reject labels (a method's, or one pair's p)."""

    name: str
    auc: float
    average_precision: float
    curves: Curves

    @property
    def n(self) -> int:
        return self.curves.n_bad + self.curves.n_good


def exact(threshold: float) -> str:
    """A threshold as printed: every decimal it has (`short_between` keeps them few), so that
    `filter --threshold` given the printed number rejects exactly the photos counted."""
    return repr(float(threshold))


def short_between(low: float, high: float) -> float:
    """The number with the fewest decimals in (low, high]: a threshold that prints exactly."""
    for decimals in range(1, 18):
        value = round((low + high) / 2, decimals)
        if low < value <= high:
            return value
    return float(high)


def calibrate(name: str, scores: Sequence[float] | np.ndarray, keep: Sequence[bool]) -> Calibration:
    """AUC, average precision and the curves of `scores` (higher is better) against `keep` labels."""
    curves = curves_of(scores, keep, name)
    good_here, bad_here = np.diff(curves.rejected_good), np.diff(curves.rejected_bad)
    bad_below = curves.rejected_bad[:-1]
    auc = float((good_here * (bad_below + 0.5 * bad_here)).sum() / (curves.n_bad * curves.n_good))
    recall, precision = curves.recall[1:], curves.precision[1:]
    average_precision = float((np.diff(recall, prepend=0.0) * precision).sum())
    return Calibration(name, auc, average_precision, curves)


def curves_of(scores: Sequence[float] | np.ndarray, keep: Sequence[bool], name: str = "the scores") -> Curves:
    """The ROC and precision-recall points of `scores`; refuses what has no meaningful curve."""
    values = _values(scores)
    labels = np.asarray(keep, dtype=bool)
    if values.shape != labels.shape:
        raise CalibrationError(f"{name}: {values.size} scores for {labels.size} labels")
    if not np.isfinite(values).all():
        raise CalibrationError(f"{name}: {int((~np.isfinite(values)).sum())} scores are not finite numbers")
    n_bad, n_good = int((~labels).sum()), int(labels.sum())
    if n_bad == 0 or n_good == 0:
        only = "keep" if n_bad == 0 else "reject"
        raise CalibrationError(
            f"all {labels.size} labelled photos are '{only}': calibration needs both keep and reject"
        )
    distinct, where = np.unique(values, return_inverse=True)
    if distinct.size == 1:
        raise CalibrationError(f"{name}: all {values.size} photos score {distinct[0]:g}: no threshold separates them")
    bad = np.bincount(where, weights=~labels, minlength=distinct.size)
    good = np.bincount(where, weights=labels, minlength=distinct.size)
    ends = [[math.floor(distinct[0])], [math.floor(distinct[-1]) + 1.0]]
    return Curves(
        cuts=np.concatenate([ends[0], (distinct[:-1] + distinct[1:]) / 2, ends[1]]),
        rejected_bad=np.concatenate([[0], np.cumsum(bad)]).astype(int),
        rejected_good=np.concatenate([[0], np.cumsum(good)]).astype(int),
        scores=distinct,
        n_bad=n_bad,
        n_good=n_good,
    )


def choose_point(curves: Curves, kind: TargetKind, value: float | None = None) -> OperatingPoint:
    """The threshold for a target: reject precision >= value (the most rejected that still reaches
    it), bad-photo recall >= value (the fewest rejected that reach it), or the best F1."""
    if kind == "f1":
        f1 = 2 * curves.rejected_bad / (curves.n_bad + curves.rejected_bad + curves.rejected_good)
        return curves.point(int(np.argmax(f1)))
    if value is None or not 0 < value <= 1:
        raise CalibrationError(f"a target {kind} is a number in (0, 1], got {value!r}")
    if kind == "recall":
        return curves.point(int(np.argmax(curves.recall >= value - 1e-12)))
    rejecting = np.arange(1, len(curves.cuts))
    reached = rejecting[curves.precision[1:] >= value - 1e-12]
    if reached.size == 0:
        best = float(curves.precision[1:].max())
        raise CalibrationError(f"no threshold rejects with precision {value:g}: the best reached is {best:.3f}")
    return curves.point(int(reached[-1]))


def point_at(curves: Curves, threshold: float) -> OperatingPoint:
    """The confusion counts of a given threshold (score < threshold rejected)."""
    k = int(np.searchsorted(curves.scores, threshold, side="left"))
    bad, good = int(curves.rejected_bad[k]), int(curves.rejected_good[k])
    return OperatingPoint(float(threshold), bad, curves.n_bad - bad, good, curves.n_good - good)


def describe(calibration: Calibration) -> str:
    """One line: AUC and average precision, and how many photos and labels they come from."""
    c = calibration.curves
    return (
        f"{calibration.name}: ROC AUC {calibration.auc:.4f}  average precision {calibration.average_precision:.4f}  "
        f"({calibration.n} photos: {c.n_bad} reject, {c.n_good} keep)"
    )


def _values(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(scores, dtype=np.float64).ravel()
