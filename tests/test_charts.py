import math
import random
import re

import pytest

from iqa.lab.prompt_lab import LabReport, PairRank
from iqa.methods.grmp.method import grmp_parts
from iqa.methods.prompts import PromptPair
from iqa.methods.results import PairScore, ScoreResult
from iqa.report import charts
from iqa.report.compare import ComparedPhoto


def _result(name, score, ps, method="CLIP-IQA"):
    pairs = [PairScore(f"good {i}", f"bad {i}", 0.3, 0.2, p) for i, p in enumerate(ps)]
    return ScoreResult(name=name, score=score, pairs=pairs, method=method)


def test_breakdown_has_one_bar_per_pair_plus_what_the_grmp_score_is_made_of():
    clip = _result("a.jpg", 0.5, [0.9, 0.1, 0.5])
    clip.temperature = 100.0
    grmp = ScoreResult(
        "a.jpg",
        0.7,
        [PairScore("X X X X high quality.", "X X X X low quality.", 0.4, 0.1, 0.6)],
        "GRMP-IQA",
        variant="seed",
        temperature=100.0,
    )
    figure = charts.pair_breakdown([clip, grmp])
    (bars,) = figure.data
    assert list(bars.x) == pytest.approx([0.9, 0.1, 0.5, 0.6, 0.7])  # seed: the learned pair's p, then the score
    assert list(bars.text) == ["0.900", "0.100", "0.500", "0.600", "0.700"]
    assert bars.textposition == "outside"  # a small p keeps its value in sight
    assert bars.y[0] == "good 0 / bad 0" and bars.y[3] == "GRMP-IQA (seed):<br>learned prompt pair p"
    assert "s_pos = cos(photo, positive) = 0.3000" in bars.hovertext[0] and "t = temperature = 100" in bars.hovertext[0]
    correction = math.log(0.7 / 0.3) - math.log(0.6 / 0.4)
    assert f"adds {correction:+.3f} to p's logit" in bars.hovertext[4]
    assert figure.layout.xaxis.title.text == "p = P(positive prompt)"
    assert "CLIP-IQA 0.500" in figure.layout.title.text and "GRMP-IQA (seed) 0.700" in figure.layout.title.text
    paper = ScoreResult("a.jpg", 0.6, grmp.pairs, "GRMP-IQA", variant="paper")
    assert len(grmp_parts(paper)) == 1  # the paper variant's score is its p


def test_attribute_breakdown_shows_no_averaged_score():
    figure = charts.pair_breakdown([_result("a.jpg", 0.4, [0.2, 0.8])], attributes=True)
    assert "not averaged" in figure.layout.title.text and "0.400" not in figure.layout.title.text
    assert list(figure.data[0].x) == [0.2, 0.8]


def test_mirrored_breakdown_puts_the_photos_on_either_side():
    left, right = _row("a", 0.2), _row("b", 0.7)
    figure = charts.mirrored_breakdown(left, right)
    assert [trace.name for trace in figure.data] == ["a", "b"]
    assert list(figure.data[0].x) == [-0.2] and list(figure.data[1].x) == [0.7]
    assert list(figure.data[0].text) == ["0.200"]


def test_breakdown_without_grmp_shows_only_clip_pairs():
    figure = charts.pair_breakdown([_result("a.jpg", 0.4, [0.4, 0.4])])
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
    assert list(points.text) == ["a", "b"] and list(points.customdata) == ["a", "b"]


def test_scatter_labels_dots_highlights_the_selected_photo_and_spans_the_data():
    rows = [_row("a", 0.40, 0.41), _row("b", 0.42, 0.45), _row("c", 0.43, 0.44)]
    figure = charts.score_scatter(rows, selected="b")
    points = figure.data[1]
    assert points.mode == "markers+text" and list(points.text) == ["a", "b", "c"]
    assert list(points.marker.size) == [10, 16, 10] and points.marker.color[1] == charts.SELECTED_COLOUR
    low, high = figure.layout.xaxis.range
    assert 0.3 < low < 0.40 and 0.45 < high < 0.55  # not 0 to 1: six photos near 0.4 do not overlap


def test_histogram_splits_at_the_threshold_and_draws_it():
    rows = [_row("a", 0.2), _row("b", 0.6), _row("c", 0.9)]
    figure = charts.score_histogram(rows, "CLIP-IQA", 0.5)
    kept, rejected = figure.data
    assert list(kept.x) == [0.6, 0.9] and list(rejected.x) == [0.2]
    assert figure.layout.shapes[0].x0 == 0.5 and "0.500" in figure.layout.annotations[0].text
    assert figure.layout.showlegend  # the colours explained, also with one of the two kinds only
    at_the_right = charts.score_histogram(rows, "CLIP-IQA", 1.0).layout.annotations[0]
    assert at_the_right.xanchor == "right"  # the threshold's label runs into the chart, not past its edge


def _name_boxes(figure):
    """The boxes the names take in the phone's plot area, as `_label_places` reckons them."""
    points = figure.data[1]
    x_range, y_range = figure.layout.xaxis.range, figure.layout.yaxis.range
    width, height = charts.PLOT_AREA_PX
    boxes = []
    for x, y, text, place in zip(points.x, points.y, points.text, points.textposition):
        if text:
            dot = (
                (x - x_range[0]) / (x_range[1] - x_range[0]) * width,
                (y_range[1] - y) / (y_range[1] - y_range[0]) * height,
            )
            size = (len(text) * charts.CHAR_PX, charts.LINE_PX)
            boxes.append(charts._name_box(dot, size, charts.PLACES[place]))
    return boxes


def test_scatter_names_never_overlap_nor_pass_an_edge_and_crowded_ones_are_on_hover():
    rng = random.Random(3)
    rows = [
        _row(f"photo_{i:02d}_gaussian_noise_L{i % 5}.jpg", 0.4 + rng.random() * 0.1, 0.45 + rng.random() * 0.1)
        for i in range(24)
    ]
    figure = charts.score_scatter(rows, selected=rows[5].name)
    boxes = _name_boxes(figure)
    width, height = charts.PLOT_AREA_PX
    assert all(b[0] >= 0 and b[1] >= 0 and b[2] <= width and b[3] <= height for b in boxes)
    assert not any(charts._overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    points = figure.data[1]
    assert 0 < len(boxes) < 24 and "" in points.text  # crowded: some names only on hover ...
    assert "names on hover" in figure.layout.title.text  # ... and the chart says so
    assert list(points.customdata) == [r.name for r in rows]  # the hover shows every whole name
    assert points.text[5] == "photo_05…_noise_L0"  # the selected photo's name is always shown, shortened


def test_scatter_names_a_few_spread_dots_all():
    rows = [_row("left.jpg", 0.1, 0.5), _row("middle.jpg", 0.5, 0.4), _row("right.jpg", 0.9, 0.6)]
    figure = charts.score_scatter(rows)
    assert list(figure.data[1].text) == ["left", "middle", "right"]
    assert "names on hover" not in figure.layout.title.text


LONG_NAME = "a_photo_with_a_very_long_name_straight_from_the_camera_roll.jpg"


def _title_lines(figure) -> list[str]:
    return [re.sub(r"<[^>]+>", "", line) for line in figure.layout.title.text.split("<br>")]


def test_every_title_comes_in_lines_a_phone_shows_whole_and_loses_nothing():
    left, right = _row(LONG_NAME, 0.2, 0.3), _row("b.jpg", 0.7, 0.6)
    report = LabReport(
        [PairRank(PromptPair("a", "b"), 0.8, 0.7)], chosen_srcc=0.8, chosen_plcc=0.7, n=10, temperature=100.0
    )
    clip, grmp = left.results["CLIP-IQA"], left.results["GRMP-IQA"]
    figures = [
        charts.pair_breakdown([clip, grmp]),
        charts.mirrored_breakdown(left, right),
        charts.score_scatter([left, right]),
        charts.score_histogram([left, right], "CLIP-IQA", 0.5),
        charts.pair_ranking(report),
        charts.training_curves([{"step": 1, "loss": 0.5}]),
    ]
    for figure in figures:
        text = figure.layout.title.text
        widths = [charts.NOTE_WIDTH if "<sup>" in line else charts.TITLE_WIDTH for line in text.split("<br>")]
        assert all(len(line) <= width for line, width in zip(_title_lines(figure), widths)), text
        assert figure.layout.margin.t >= 2 * charts.TITLE_TOP + 18 * len(widths)  # room for every line
    breakdown = _title_lines(figures[0])
    assert breakdown == [LONG_NAME[:40], LONG_NAME[40:], "CLIP-IQA 0.200, GRMP-IQA 0.300"]  # cut, not dropped
    assert _title_lines(figures[4])[-1] == "dashed line: enabled pairs combined, SRCC 0.800"


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
