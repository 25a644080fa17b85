import math
import warnings

import numpy as np
import pytest
from scipy import stats

from iqa.labels import metrics
from iqa.labels.metrics import all_metrics, fit_logistic, krcc, logistic4, plcc, srcc


def test_hand_computed_rank_correlations():
    # one swapped neighbour pair out of 6 pairs: tau = (5 - 1) / 6; rho = 1 - 6 * 2 / (4 * 15)
    pred, target = [1, 2, 3, 4], [1, 3, 2, 4]
    assert krcc(pred, target) == pytest.approx(4 / 6)
    assert srcc(pred, target) == pytest.approx(0.8)


def test_perfect_and_reversed_order():
    x = [0.1, 0.5, 0.2, 0.9, 0.7]
    y = [1.0, 3.0, 2.0, 5.0, 4.0]
    assert srcc(x, y) == pytest.approx(1.0)
    assert krcc(x, y) == pytest.approx(1.0)
    assert srcc(x, [-v for v in y]) == pytest.approx(-1.0)
    assert krcc(x, [-v for v in y]) == pytest.approx(-1.0)


def test_matches_scipy_on_random_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    y = x + rng.normal(scale=0.8, size=200)
    assert srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert krcc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)
    assert plcc(x, y, fit=False) == pytest.approx(stats.pearsonr(x, y).statistic)


def test_ties_use_tau_b():
    x = [1, 1, 2, 3, 3, 4]
    y = [2, 1, 2, 4, 3, 5]
    assert krcc(x, y) == pytest.approx(stats.kendalltau(x, y, variant="b").statistic)


def test_logistic_fit_recovers_a_monotone_nonlinear_mapping():
    x = np.linspace(-4, 4, 60)
    y = logistic4(x, 90.0, 10.0, 0.5, 0.7)
    raw = plcc(x, y, fit=False)
    fitted = plcc(x, y)
    assert raw < 0.97
    assert fitted == pytest.approx(1.0, abs=1e-6)
    params = fit_logistic(x, y)
    assert params is not None
    b1, b2, b3, b4 = params
    assert (b1, b2, b3, abs(b4)) == pytest.approx((90.0, 10.0, 0.5, 0.7), rel=1e-3)


def test_fitted_plcc_at_least_plain_pearson_on_noisy_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 300)
    y = 1 / (1 + np.exp(-(x - 0.5) * 12)) * 4 + 1 + rng.normal(scale=0.2, size=300)
    assert plcc(x, y) > plcc(x, y, fit=False)


def test_logistic_formula_by_hand():
    # at the midpoint the curve sits halfway between the asymptotes
    assert logistic4(np.array([2.0]), 5.0, 1.0, 2.0, 0.3)[0] == pytest.approx(3.0)
    # the sign of b4 does not matter
    x = np.array([0.0, 1.0, 3.0])
    np.testing.assert_allclose(logistic4(x, 5, 1, 1, 2), logistic4(x, 5, 1, 1, -2))
    expected = 4 / (1 + math.exp(-(3.0 - 1.0) / 2)) + 1
    assert logistic4(np.array([3.0]), 5, 1, 1, 2)[0] == pytest.approx(expected)


def test_failed_fit_falls_back_to_pearson(monkeypatch):
    def failing_fit(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics.optimize, "curve_fit", failing_fit)
    x = [1.0, 2.0, 4.0, 8.0, 9.0]
    y = [2.0, 1.0, 5.0, 7.0, 9.5]
    assert fit_logistic(x, y) is None
    assert plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)


def test_non_finite_fit_parameters_fall_back(monkeypatch):
    monkeypatch.setattr(metrics.optimize, "curve_fit", lambda *a, **k: (np.array([np.nan, 0, 0, 1]), None))
    x, y = [1.0, 2.0, 3.0, 5.0], [1.0, 3.0, 2.0, 4.0]
    assert plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)


def test_constant_input_gives_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = all_metrics([0.5, 0.5, 0.5, 0.5], [1.0, 2.0, 3.0, 4.0])
        assert all(math.isnan(v) for v in result.values())
        assert math.isnan(srcc([1.0, 2.0, 3.0], [7.0, 7.0, 7.0]))


def test_all_metrics_keys_and_values():
    x = [0.2, 0.4, 0.3, 0.9, 0.8, 0.1]
    y = [2.0, 3.5, 3.0, 4.8, 4.1, 1.2]
    result = all_metrics(x, y)
    assert set(result) == {"srcc", "krcc", "plcc", "plcc_raw"}
    assert result["srcc"] == pytest.approx(srcc(x, y))
    assert result["plcc_raw"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert all(isinstance(v, float) for v in result.values())


@pytest.mark.parametrize(
    "pred, target, message",
    [
        ([1, 2, 3], [1, 2], "differ in length"),
        ([1, 2], [1, 2], "at least 3"),
        ([1, float("nan"), 3], [1, 2, 3], "pred contains 1 NaN"),
        ([1, 2, 3], [1, 2, float("inf")], "target contains 1 NaN or infinite"),
    ],
)
@pytest.mark.parametrize("metric", [srcc, krcc, plcc, all_metrics])
def test_bad_input_is_rejected(metric, pred, target, message):
    with pytest.raises(ValueError, match=message):
        metric(pred, target)


def test_accepts_numpy_and_column_vectors():
    x = np.array([[1.0], [2.0], [3.0], [4.0]])
    y = np.array([1.0, 2.0, 4.0, 3.0])
    assert srcc(x, y) == pytest.approx(0.8)


def test_analytic_jacobian_matches_finite_differences():
    x = np.linspace(-2.0, 3.0, 7)
    params = np.array([4.0, 1.5, 0.3, -0.8])
    jac = metrics._logistic4_jacobian(x, *params)
    eps = 1e-6
    for j in range(4):
        step = np.zeros(4)
        step[j] = eps
        numeric = (logistic4(x, *(params + step)) - logistic4(x, *(params - step))) / (2 * eps)
        np.testing.assert_allclose(jac[:, j], numeric, rtol=1e-5, atol=1e-8)


def test_plcc_on_four_points_falls_back_to_pearson():
    """The logistic fit has four parameters: with four points or fewer it is skipped, not an error."""
    pred, target = [0.1, 0.4, 0.35, 0.9], [1.0, 2.0, 3.0, 4.0]
    assert plcc(pred, target) == pytest.approx(stats.pearsonr(pred, target).statistic)
