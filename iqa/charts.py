"""Plotly figures for the app: per-pair breakdown, CLIP-IQA against GRMP-IQA, training curves, quality map."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from .compare import ComparedPhoto
from .names import CLIP_IQA, GRMP_IQA
from .prompt_lab import LabReport
from .quality_map import COLOURS, QualityMap, colour_range
from .results import PairScore, ScoreResult

POSITIVE_COLOUR = "#2a9d8f"
NEGATIVE_COLOUR = "#e76f51"
GRMP_COLOUR = "#6a4c93"


def pair_breakdown(clip: ScoreResult, grmp: ScoreResult | None = None) -> go.Figure:
    """One horizontal bar per prompt pair: p(positive) against p(negative) = 1 - p.

    The GRMP-IQA learned pair, when given, is the last bar. Hovering shows both cosines.
    """
    labels, pairs = [], []
    for pair in clip.pairs:
        labels.append(_label(pair))
        pairs.append(pair)
    if grmp is not None:
        for pair in grmp.pairs:
            labels.append(f"{grmp.label}:<br>{_label(pair)}")
            pairs.append(pair)
    hover = [f"s_pos={p.s_pos:.4f}<br>s_neg={p.s_neg:.4f}<br>weight={p.weight:g}" for p in pairs]
    figure = go.Figure(
        [
            go.Bar(
                name="p(positive)",
                y=labels,
                x=[p.p for p in pairs],
                orientation="h",
                marker_color=POSITIVE_COLOUR,
                text=[f"{p.p:.3f}" for p in pairs],
                textposition="inside",
                hovertext=hover,
                hoverinfo="text+x",
            ),
            go.Bar(
                name="p(negative)",
                y=labels,
                x=[1 - p.p for p in pairs],
                orientation="h",
                marker_color=NEGATIVE_COLOUR,
                text=[f"{1 - p.p:.3f}" for p in pairs],
                textposition="inside",
                hovertext=hover,
                hoverinfo="text+x",
            ),
        ]
    )
    title = f"{clip.name}: CLIP-IQA {clip.score:.3f}"
    if grmp is not None:
        title += f", {grmp.label} {grmp.score:.3f}"
    figure.update_layout(
        barmode="stack",
        title=title,
        xaxis=dict(range=[0, 1]),
        yaxis=dict(autorange="reversed"),
        legend=dict(orientation="h", x=1, xanchor="right", y=1.0, yanchor="bottom", traceorder="normal"),
        height=170 + 34 * len(labels),
        margin=dict(l=10, r=10, t=70, b=30),
    )
    return figure


def _label(pair: PairScore) -> str:
    return f"{pair.positive} / {pair.negative}"


def score_scatter(rows: Sequence[ComparedPhoto]) -> go.Figure:
    """CLIP-IQA (x) against GRMP-IQA (y), one point per photo, with the diagonal for reference."""
    scored = [row for row in rows if CLIP_IQA in row.results and GRMP_IQA in row.results]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="#999"), name="equal scores", hoverinfo="skip"
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[r.results[CLIP_IQA].score for r in scored],
            y=[r.results[GRMP_IQA].score for r in scored],
            mode="markers",
            marker=dict(size=10, color=GRMP_COLOUR),
            text=[r.name for r in scored],
            name="photos",
            hovertemplate="%{text}<br>CLIP-IQA %{x:.3f}<br>GRMP-IQA %{y:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title="CLIP-IQA against GRMP-IQA",
        xaxis=dict(title="CLIP-IQA", range=[0, 1]),
        yaxis=dict(title="GRMP-IQA", range=[0, 1]),
        height=420,
        margin=dict(l=10, r=10, t=50, b=10),
        showlegend=False,
    )
    if not scored:
        figure.add_annotation(
            text="No GRMP-IQA scores: choose a GRMP-IQA checkpoint", x=0.5, y=0.5, showarrow=False, font=dict(size=14)
        )
    return figure


def training_curves(history: Sequence[Mapping[str, float]]) -> go.Figure:
    """Training loss (left axis) and validation SRCC (right axis) against the step.

    Each entry holds "step" and "loss", and "val_srcc" where a validation was run.
    """
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    steps = [h["step"] for h in history]
    figure.add_trace(
        go.Scatter(
            x=steps,
            y=[h["loss"] for h in history],
            mode="lines",
            name="training loss",
            line=dict(color=NEGATIVE_COLOUR),
        ),
        secondary_y=False,
    )
    validated = [h for h in history if _finite(h.get("val_srcc"))]
    figure.add_trace(
        go.Scatter(
            x=[h["step"] for h in validated],
            y=[h["val_srcc"] for h in validated],
            mode="lines+markers",
            name="validation SRCC",
            line=dict(color=POSITIVE_COLOUR),
        ),
        secondary_y=True,
    )
    figure.update_layout(
        title="Adaptation", height=360, margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.2)
    )
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(title_text="loss", secondary_y=False)
    figure.update_yaxes(title_text="SRCC", range=[-1, 1], secondary_y=True)
    return figure


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def pair_ranking(report: LabReport) -> go.Figure:
    """SRCC and PLCC of each pair, best first, with the chosen pairs' mean as reference lines."""
    labels = [r.pair.label + ("" if r.pair.enabled else " (off)") for r in report.ranks]
    figure = go.Figure(
        [
            go.Bar(
                name="SRCC", y=labels, x=[r.srcc for r in report.ranks], orientation="h", marker_color=POSITIVE_COLOUR
            ),
            go.Bar(name="PLCC", y=labels, x=[r.plcc for r in report.ranks], orientation="h", marker_color=GRMP_COLOUR),
        ]
    )
    if _finite(report.chosen_srcc):
        figure.add_vline(
            x=report.chosen_srcc,
            line_dash="dash",
            line_color=POSITIVE_COLOUR,
            annotation_text=f"mean of chosen pairs: SRCC {report.chosen_srcc:.3f}",
        )
    figure.update_layout(
        barmode="group",
        title=f"Prompt pairs against the labels ({report.n} photos)",
        xaxis=dict(range=[-1, 1], title="correlation"),
        yaxis=dict(autorange="reversed"),
        height=200 + 46 * len(labels),
        margin=dict(l=10, r=10, t=60, b=10),
        legend=dict(orientation="h", y=-0.15),
    )
    return figure


def quality_map_chart(
    qmap: QualityMap, image: Image.Image, pair: int | None = None, dark: bool = False, max_side: int = 800
) -> go.Figure:
    """The photo with the quality map over it, half transparent; `pair` (0-based) or None for overall.

    Colours span this map's own range (the colour bar gives the values); hovering a cell names the
    windows that cover it and their mean. `dark` picks the dark template for a dark page.
    """
    xs, ys, values, counts = qmap.cells(pair)
    flat, label = qmap.values(pair).reshape(-1), qmap.title(pair)
    hover = [
        [_cell_hover(qmap, flat, (xs[c], ys[r], xs[c + 1], ys[r + 1]), counts[r, c], label) for c in range(len(xs) - 1)]
        for r in range(len(ys) - 1)
    ]
    low, high = colour_range(qmap, pair)
    width, height = qmap.size
    shown = image.convert("RGB").resize(qmap.size) if image.size != qmap.size else image.convert("RGB")
    shown.thumbnail((max_side, max_side))
    figure = go.Figure(
        [
            go.Image(source=_data_uri(shown), dx=width / shown.width, dy=height / shown.height, hoverinfo="skip"),
            go.Heatmap(
                x=xs,
                y=ys,
                z=values,
                zmin=low,
                zmax=high,
                opacity=0.55,
                colorscale=[[i / (len(COLOURS) - 1), c] for i, c in enumerate(COLOURS)],
                colorbar=dict(title=dict(text=label, side="right")),
                text=hover,
                hovertemplate="%{text}<extra></extra>",
            ),
        ]
    )
    title = f"Quality map of {qmap.name}: {qmap.rows}x{qmap.cols} windows of {qmap.window} px"
    if qmap.notes:
        title += f"<br><sup>{'; '.join(qmap.notes)}</sup>"
    figure.update_layout(
        template="plotly_dark" if dark else "plotly_white",
        title=title,
        xaxis=dict(range=[0, width], showgrid=False, title="x (pixels)", constrain="domain"),
        yaxis=dict(range=[height, 0], showgrid=False, title="y (pixels)", scaleanchor="x"),
        height=min(900, 160 + 560 * height // max(width, 1)),
        margin=dict(l=10, r=10, t=70, b=10),
    )
    return figure


def _cell_hover(qmap: QualityMap, flat, cell, count: int, label: str) -> str:
    """Hover text of one cell: the boxes and values of the windows covering it, and their mean."""
    left, top, right, bottom = cell
    covering = [
        (box, float(flat[i]))
        for i, box in enumerate(qmap.boxes)
        if box[0] <= left and right <= box[2] and box[1] <= top and bottom <= box[3]
    ]
    lines = [f"window x {b[0]}-{b[2]}, y {b[1]}-{b[3]}: {value:.4f}" for b, value in covering]
    mean = sum(value for _, value in covering) / max(count, 1)
    return "<br>".join([*lines, f"{label}: mean of {count} window(s) here = {mean:.4f}"])


def _data_uri(image: Image.Image) -> str:
    """The photo as an embedded JPEG (a data URI: the figure needs no file beside it)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
