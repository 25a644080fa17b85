import math

import pytest

from iqa import charts
from iqa.compare import ComparedPhoto
from iqa.prompt_lab import LabReport, PairRank
from iqa.prompts import PromptPair
from iqa.results import PairScore, ScoreResult


def _result(name, score, ps, method="CLIP-IQA"):
    pairs = [PairScore(f"good {i}", f"bad {i}", 0.3, 0.2, p) for i, p in enumerate(ps)]
    return ScoreResult(name=name, score=score, pairs=pairs, method=method)


def test_breakdown_has_one_bar_per_pair_plus_the_grmp_pair():
    clip = _result("a.jpg", 0.5, [0.9, 0.1, 0.5])
    grmp = ScoreResult(
        "a.jpg",
        0.7,
        [PairScore("X X X X high quality.", "X X X X low quality.", 0.4, 0.1, 0.7)],
        "GRMP-IQA",
        variant="seed",
    )
    figure = charts.pair_breakdown(clip, grmp)
    positive, negative = figure.data
    assert list(positive.x) == pytest.approx([0.9, 0.1, 0.5, 0.7])
    assert list(negative.x) == pytest.approx([0.1, 0.9, 0.5, 0.3])
    assert positive.y[-1] == "GRMP-IQA (seed):<br>X X X X high quality. / X X X X low quality."
    assert positive.y[0] == "good 0 / bad 0"
    assert figure.layout.barmode == "stack"
    assert "CLIP-IQA 0.500" in figure.layout.title.text and "0.700" in figure.layout.title.text


def test_breakdown_without_grmp_shows_only_clip_pairs():
    figure = charts.pair_breakdown(_result("a.jpg", 0.4, [0.4, 0.4]))
    assert len(figure.data[0].y) == 2


def _row(name, clip, grmp=None):
    results = {"CLIP-IQA": _result(name, clip, [clip])}
    if grmp is not None:
        results["GRMP-IQA"] = _result(name, grmp, [grmp], "GRMP-IQA")
    return ComparedPhoto(name, results)


def test_scatter_plots_only_photos_with_both_scores():
    rows = [_row("a", 0.2, 0.8), _row("b", 0.6, 0.3), _row("c", 0.9)]
    points = charts.score_scatter(rows).data[1]
    assert list(points.x) == [0.2, 0.6] and list(points.y) == [0.8, 0.3]
    assert list(points.text) == ["a", "b"]


def test_scatter_without_grmp_says_why_it_is_empty():
    figure = charts.score_scatter([_row("c", 0.9)])
    assert len(figure.data[1].x) == 0
    assert "checkpoint" in figure.layout.annotations[0].text


def test_training_curves_put_srcc_on_its_own_axis_and_skip_missing_validation():
    history = [
        {"step": 1, "loss": 0.5},
        {"step": 2, "loss": 0.4, "val_srcc": 0.3},
        {"step": 3, "loss": 0.2, "val_srcc": math.nan},
        {"step": 4, "loss": 0.1, "val_srcc": 0.6},
    ]
    loss, val = charts.training_curves(history).data
    assert list(loss.y) == [0.5, 0.4, 0.2, 0.1]
    assert list(val.x) == [2, 4] and list(val.y) == [0.3, 0.6]
    assert val.yaxis == "y2"


def test_pair_ranking_keeps_report_order_and_marks_disabled_pairs():
    ranks = [PairRank(PromptPair("a", "b"), 0.8, 0.7), PairRank(PromptPair("c", "d", enabled=False), 0.1, 0.2)]
    report = LabReport(ranks, chosen_srcc=0.8, chosen_plcc=0.7, n=10, temperature=100.0)
    figure = charts.pair_ranking(report)
    assert list(figure.data[0].y) == ["a / b", "c / d (off)"]
    assert list(figure.data[0].x) == [0.8, 0.1]
    assert figure.layout.shapes[0].x0 == 0.8
