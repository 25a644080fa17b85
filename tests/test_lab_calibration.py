"""Filter calibration: AUC, average precision and thresholds against hand-computed values and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from iqa.errors import InputError
from iqa.lab.calibration import CalibrationError, calibrate, choose_point, point_at, short_between

# bad: 0.1, 0.2, 0.35, 0.5; good: 0.4, 0.5, 0.8, 0.9 (one tie across the classes at 0.5)
SCORES = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.5, 0.5]
KEEP = [False, True, False, True, False, True, True, False]


def test_auc_and_average_precision_by_hand():
    c = calibrate("x", SCORES, KEEP)
    assert c.auc == pytest.approx(14.5 / 16)  # 15 ordered pairs of 16, the tie counts half
    # reject <=0.1, <=0.2, <=0.35: precision 1 at recall 1/4, 2/4, 3/4; <=0.4: no new bad; <=0.5: 4 of 6
    assert c.average_precision == pytest.approx(0.75 + 0.25 * 4 / 6)
    assert (c.curves.n_bad, c.curves.n_good, c.n) == (4, 4, 8)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_and_curves_agree_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    keep = rng.random(300) < 0.7
    scores = np.round(rng.normal(keep * 0.8, 1.0), 1)  # rounded: many ties
    c = calibrate("x", scores, keep)
    bad = ~keep
    assert c.auc == pytest.approx(roc_auc_score(bad, -scores))
    assert c.average_precision == pytest.approx(average_precision_score(bad, -scores))
    fpr, tpr, _ = roc_curve(bad, -scores, drop_intermediate=False)
    assert np.allclose(c.curves.false_positive_rate, fpr) and np.allclose(c.curves.recall, tpr)
    precision, recall, _ = precision_recall_curve(bad, -scores, drop_intermediate=False)
    assert np.allclose(c.curves.precision[1:], precision[::-1][1:])
    assert np.allclose(c.curves.recall[1:], recall[::-1][1:])


def test_thresholds_for_each_target_and_their_counts():
    curves = calibrate("x", SCORES, KEEP).curves
    precise = choose_point(curves, "precision", 0.9)  # the most rejected at precision 1: below 0.4
    assert (precise.threshold, precise.rejected_bad, precise.rejected_good) == (0.4, 3, 0)
    assert precise.sentence() == "threshold 0.4 rejects 3 of 4 bad photos, loses 0 of 4 good ones"
    every_bad = choose_point(curves, "recall", 1.0)  # the fewest rejected that reach recall 1: below 0.8
    assert (every_bad.rejected_bad, every_bad.kept_bad, every_bad.rejected_good, every_bad.kept_good) == (4, 0, 2, 2)
    assert 0.5 < every_bad.threshold <= 0.8
    assert choose_point(curves, "recall", 0.5).rejected_bad == 2
    best = choose_point(curves, "f1")  # F1 6/7 at 3 of 4 beats 8/10 at 4 of 4 with two good lost
    assert (best.rejected_bad, best.rejected_good) == (3, 0)


def test_a_threshold_filter_takes_gives_the_same_counts():
    curves = calibrate("x", SCORES, KEEP).curves
    for kind, value in (("precision", 0.6), ("recall", 0.75), ("f1", None)):
        point = choose_point(curves, kind, value)
        rejected = [keep for score, keep in zip(SCORES, KEEP) if score < point.threshold]
        assert (rejected.count(False), rejected.count(True)) == (point.rejected_bad, point.rejected_good)
        assert point_at(curves, point.threshold) == point


def test_rejecting_none_or_all_takes_the_whole_numbers_around_the_scores():
    curves = calibrate("x", SCORES, KEEP).curves
    none, every = curves.point(0), curves.point(len(curves.scores))
    assert (none.threshold, none.rejected_bad + none.rejected_good) == (0, 0)
    assert (every.threshold, every.kept_bad + every.kept_good) == (1, 0)
    assert choose_point(calibrate("x", [0.2, 0.3, 0.6], [False, True, False]).curves, "recall", 1.0).threshold == 1


def test_short_thresholds_lie_between_the_scores():
    assert short_between(0.41234, 0.5) == 0.5
    assert short_between(0.123456, 0.123457) == pytest.approx(0.1234565)
    assert short_between(0.3, 0.7) == 0.5


@pytest.mark.parametrize(
    ("scores", "keep", "message"),
    [
        ([0.1, 0.2, 0.3], [True, True, True], "all 3 labelled photos are 'keep'"),
        ([0.1, 0.2, 0.3], [False, False, False], "all 3 labelled photos are 'reject'"),
        ([0.5, 0.5, 0.5], [True, False, True], "all 3 photos score 0.5: no threshold separates them"),
        ([0.1, float("nan"), 0.3], [True, False, True], "1 scores are not finite"),
        ([0.1, 0.2], [True, False, True], "2 scores for 3 labels"),
    ],
)
def test_what_cannot_be_calibrated_is_refused(scores, keep, message):
    with pytest.raises(CalibrationError, match=message):
        calibrate("x", scores, keep)


def test_an_unreachable_precision_is_refused_with_the_best_there_is():
    curves = calibrate("x", [0.1, 0.2, 0.3, 0.4], [True, False, True, False]).curves
    with pytest.raises(InputError, match="no threshold rejects with precision 0.9: the best reached is 0.500"):
        choose_point(curves, "precision", 0.9)
    with pytest.raises(InputError, match=r"a number in \(0, 1\]"):
        choose_point(curves, "recall", 1.5)


def test_curves_as_charts_name_each_score_and_mark_the_threshold():
    from iqa.report.lab_charts import pr_chart, roc_chart

    method = calibrate("CLIP-IQA", SCORES, KEEP)
    pair = calibrate("sharp / blurry", SCORES[::-1], KEEP)
    point = choose_point(method.curves, "f1")
    roc = roc_chart([method, pair], point)
    assert [t.name for t in roc.data] == [
        "chance",
        "CLIP-IQA (AUC 0.906)",
        f"sharp / blurry (AUC {pair.auc:.3f})",
        "threshold 0.4",
    ]
    assert list(roc.data[1].y) == list(method.curves.recall) and (roc.data[3].x[0], roc.data[3].y[0]) == (0.0, 0.75)
    pr = pr_chart([method], point)
    assert pr.data[0].name == "CLIP-IQA (AP 0.917)" and list(pr.data[0].y) == list(method.curves.precision[1:])
    assert pr.data[1].hovertemplate.startswith(point.sentence())


def test_the_printed_threshold_rejects_exactly_the_photos_counted():
    """Two scores closer than six digits: the threshold between them is printed whole."""
    scores = [0.41, 0.5123456, 0.51234568, 0.7, 0.8]
    keep = [False, False, True, True, True]
    point = choose_point(calibrate("x", scores, keep).curves, "f1", None)
    printed = float(point.sentence().split()[1])
    assert printed == point.threshold and sum(s < printed for s in scores) == point.rejected_bad == 2
