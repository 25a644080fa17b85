"""Plotly figures of filter calibration: ROC and precision-recall curves, one line per score.

Bad photos are the positive class: the ROC curve plots the share of bad photos rejected against
the share of good photos lost; the precision-recall curve the share of rejected photos that are
bad against the share of bad photos rejected. A chosen threshold is marked on the first line.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from iqa.lab.calibration import Calibration, OperatingPoint
from iqa.report.charts import LEGEND_BELOW, _title, _top, themed

COLOURS = ("#2a9d8f", "#6a4c93", "#e76f51", "#e9a400", "#264653", "#8ab17d")
HEIGHT = 420


def roc_chart(calibrations: Sequence[Calibration], point: OperatingPoint | None = None) -> go.Figure:
    """ROC curves (bad photos rejected against good photos lost), AUC in each line's name."""
    figure = go.Figure()
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="chance")
    for i, c in enumerate(calibrations):
        figure.add_scatter(
            x=c.curves.false_positive_rate,
            y=c.curves.recall,
            mode="lines",
            line=dict(color=COLOURS[i % len(COLOURS)], shape="linear"),
            name=f"{c.name} (AUC {c.auc:.3f})",
            customdata=c.curves.cuts,
            hovertemplate="threshold %{customdata:.4f}<br>bad rejected %{y:.1%}<br>good lost %{x:.1%}<extra></extra>",
        )
    if point is not None and calibrations:
        good = point.rejected_good + point.kept_good
        _mark(figure, point.rejected_good / good, point.recall, point)
    return _layout(figure, _title("ROC: finding the bad photos", notes=_counts(calibrations)), "good photos lost")


def pr_chart(calibrations: Sequence[Calibration], point: OperatingPoint | None = None) -> go.Figure:
    """Precision-recall curves (step-wise, as average precision counts them), AP in each line's name."""
    figure = go.Figure()
    for i, c in enumerate(calibrations):
        figure.add_scatter(
            x=c.curves.recall[1:],
            y=c.curves.precision[1:],
            mode="lines",
            line=dict(color=COLOURS[i % len(COLOURS)], shape="vh"),
            name=f"{c.name} (AP {c.average_precision:.3f})",
            customdata=c.curves.cuts[1:],
            hovertemplate="threshold %{customdata:.4f}<br>precision %{y:.1%}<br>bad rejected %{x:.1%}<extra></extra>",
        )
    if point is not None and calibrations:
        _mark(figure, point.recall, point.precision, point)
    figure = _layout(
        figure, _title("Precision-recall of rejecting", notes=_counts(calibrations)), "bad photos rejected"
    )
    figure.update_layout(yaxis=dict(title="rejected photos that are bad"))
    return figure


def _mark(figure: go.Figure, x: float, y: float, point: OperatingPoint) -> None:
    figure.add_scatter(
        x=[x],
        y=[y],
        mode="markers",
        marker=dict(size=12, symbol="x", color="black"),
        name=f"threshold {point.threshold:g}",
        hovertemplate=point.sentence() + "<extra></extra>",
    )


def _counts(calibrations: Sequence[Calibration]) -> list[str]:
    if not calibrations:
        return []
    c = calibrations[0].curves
    return [f"{c.n_bad + c.n_good} photos: {c.n_bad} reject, {c.n_good} keep"]


def _layout(figure: go.Figure, title: dict, x_title: str) -> go.Figure:
    figure.update_layout(
        title=title,
        xaxis=dict(range=[0, 1], title=x_title, tickformat=".0%"),
        yaxis=dict(range=[0, 1.02], title="bad photos rejected", tickformat=".0%"),
        height=_top(title) + HEIGHT,
        margin=dict(l=10, r=10, t=_top(title), b=90),
        legend=LEGEND_BELOW,
    )
    return themed(figure)


def curves_html(calibrations: Sequence[Calibration], point: OperatingPoint | None = None) -> str:
    """Both charts in one self-contained HTML page (plotly.js inlined once)."""
    roc = roc_chart(calibrations, point).to_html(full_html=False, include_plotlyjs=True)
    pr = pr_chart(calibrations, point).to_html(full_html=False, include_plotlyjs=False)
    head = '<meta charset="utf-8"><title>Filter calibration</title>'
    return f"<!DOCTYPE html>\n<html><head>{head}</head>\n<body>{roc}{pr}</body></html>\n"
