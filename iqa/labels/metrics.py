"""Correlation metrics used to judge quality predictors against subjective scores.

SRCC (Spearman) and KRCC (Kendall tau-b) measure monotonic agreement; PLCC (Pearson) measures
linear agreement and is, by the VQEG convention, computed after mapping the predictions through a
fitted 4-parameter logistic so that a monotone but non-linear predictor is not penalised.

Constant input (all predictions equal, or all targets equal) has no defined correlation: every
metric then returns ``nan`` instead of raising, so that a degenerate model shows up as ``nan`` in a
report rather than crashing an evaluation loop.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

from iqa.errors import InputError

ArrayLike = Sequence[float] | np.ndarray

MIN_VALUES = 3


def _as_pair(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert both inputs to flat float64 arrays of equal length."""
    x = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    if x.size != y.size:
        raise InputError(f"pred and target differ in length: {x.size} predictions, {y.size} targets")
    if x.size < MIN_VALUES:
        raise InputError(f"need at least {MIN_VALUES} values to compute a correlation, got {x.size}")
    for label, values in (("pred", x), ("target", y)):
        bad = ~np.isfinite(values)
        if bad.any():
            raise InputError(
                f"{label} contains {int(bad.sum())} NaN or infinite value(s), first at index {int(np.argmax(bad))}"
            )
    return x, y


def _is_constant(values: np.ndarray) -> bool:
    return bool(np.ptp(values) == 0)


def srcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Spearman rank-order correlation; ``nan`` if either input is constant."""
    x, y = _as_pair(pred, target)
    if _is_constant(x) or _is_constant(y):
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def krcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Kendall rank correlation (tau-b, ties handled); ``nan`` if either input is constant."""
    x, y = _as_pair(pred, target)
    if _is_constant(x) or _is_constant(y):
        return float("nan")
    return float(stats.kendalltau(x, y).statistic)


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.

    ``b1`` and ``b2`` are the upper and lower asymptotes, ``b3`` the midpoint, ``|b4|`` the scale.
    """
    z = np.clip(-(x - b3) / (np.abs(b4) + 1e-12), -500.0, 500.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def _logistic4_jacobian(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """Analytic derivatives of :func:`logistic4`, columns in parameter order.

    Finite differences fail when a parameter starts near zero (e.g. the midpoint at the mean of
    zero-centred predictions): MINPACK scales its step by the parameter's magnitude.
    """
    scale = np.abs(b4) + 1e-12
    s = 1.0 / (1.0 + np.exp(np.clip(-(x - b3) / scale, -500.0, 500.0)))
    slope = (b1 - b2) * s * (1.0 - s)
    sign = 1.0 if b4 >= 0 else -1.0
    return np.stack([s, 1.0 - s, -slope / scale, -slope * (x - b3) * sign / scale**2], axis=1)


def fit_logistic(pred: ArrayLike, target: ArrayLike) -> np.ndarray | None:
    """Least-squares fit of :func:`logistic4` mapping ``pred`` onto ``target``.

    Starts from the asymptotes at the target's extremes, the midpoint at the mean prediction and
    the scale at the predictions' standard deviation. Returns ``[b1, b2, b3, b4]``, or ``None``
    when the optimiser does not converge or produces non-finite parameters.
    """
    x, y = _as_pair(pred, target)
    if _is_constant(x) or _is_constant(y) or len(x) <= 4:  # four parameters need more points than that
        return None
    initial = [y.max(), y.min(), x.mean(), x.std()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(logistic4, x, y, p0=initial, jac=_logistic4_jacobian, maxfev=10000)
    except (RuntimeError, ValueError):
        return None
    if not np.all(np.isfinite(params)):
        return None
    return params


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if _is_constant(x) or _is_constant(y):
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)


def plcc(pred: ArrayLike, target: ArrayLike, fit: bool = True) -> float:
    """Pearson linear correlation, by default after a 4-parameter logistic fit.

    With ``fit=True`` the predictions are first mapped through :func:`fit_logistic`; the fitted
    curve may be decreasing, so a predictor that ranks in reverse still gets a positive fitted
    PLCC (SRCC keeps the sign). If the fit fails, or maps everything to one value, the plain
    Pearson correlation of the raw predictions is returned instead, without raising.
    ``fit=False`` always gives the plain Pearson correlation.
    """
    x, y = _as_pair(pred, target)
    if fit:
        params = fit_logistic(x, y)
        if params is not None:
            fitted = _pearson(logistic4(x, *params), y)
            if np.isfinite(fitted):
                return fitted
    return _pearson(x, y)


def all_metrics(pred: ArrayLike, target: ArrayLike) -> dict[str, float]:
    """SRCC, KRCC, fitted PLCC and plain PLCC in one dict (keys: srcc, krcc, plcc, plcc_raw)."""
    return {
        "srcc": srcc(pred, target),
        "krcc": krcc(pred, target),
        "plcc": plcc(pred, target, fit=True),
        "plcc_raw": plcc(pred, target, fit=False),
    }
