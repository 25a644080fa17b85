"""Plotly figures for the app: per-pair breakdown (one photo, or two mirrored), CLIP-IQA against
GRMP-IQA, the score histogram with its threshold, training curves, prompt pairs against labels,
and the quality map over a photo."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from iqa.lab.prompt_lab import LabReport
from iqa.methods import registry
from iqa.methods.clipiqa.quality_map import COLOURS, QualityMap, colour_range, quality_map
from iqa.methods.clipiqa.scorer import CLIPIQA
from iqa.methods.results import PairScore, ScoreResult
from iqa.photos.photo import Photo
from iqa.report.compare import ComparedPhoto

POSITIVE_COLOUR = "#2a9d8f"
NEGATIVE_COLOUR = "#e76f51"
SECOND_COLOUR = "#6a4c93"  # a second series beside POSITIVE_COLOUR's


SELECTED_COLOUR = "#e9a400"
TRANSPARENT = "rgba(0,0,0,0)"
P_AXIS = "p = P(positive prompt)"
# Plotly does not wrap text; lines of at most these many characters stay whole on a phone (390 px).
TITLE_WIDTH = 40  # a 14 px title
NOTE_WIDTH = 56  # a title's note in small type (<sup>)
TITLE_TOP = 38  # px above a title: the app's label covers the chart's top left corner
# At the chart's bottom edge, below the x axis's title (a legend placed in the plot's units lands on it).
LEGEND_BELOW = dict(orientation="h", yref="container", y=0, yanchor="bottom")
MAP_TICKS = 26  # px under the quality map's photo for the x axis's numbers; the colour bar below them
MAP_BOTTOM = 100  # px under the photo in all (plotly pads the colour bar by MAP_TICKS below too)
MAP_HEIGHT = 900  # px: the most a quality map takes (a tall photo gets narrower)


def themed(figure: go.Figure) -> go.Figure:
    """Transparent backgrounds, so the page's light or dark background shows through (the app's CSS
    colours the text and grid lines to match its theme)."""
    figure.update_layout(paper_bgcolor=TRANSPARENT, plot_bgcolor=TRANSPARENT)
    return figure


def _hover(pair: PairScore, temperature: float | None) -> str:
    t = f"{temperature:g}" if temperature is not None else "?"
    return (
        f"<b>{pair.positive}</b> vs <b>{pair.negative}</b><br>"
        f"s_pos = cos(photo, positive) = {pair.s_pos:.4f}<br>"
        f"s_neg = cos(photo, negative) = {pair.s_neg:.4f}<br>"
        f"t = temperature = {t}<br>"
        f"p = sigmoid(t·(s_pos − s_neg)) = {pair.p:.3f}<br>weight = {pair.weight:g}"
    )


def pair_breakdown(results: Sequence[ScoreResult | None], attributes: bool = False, name: str = "") -> go.Figure:
    """One bar per part of each result (`Method.parts`: for CLIP-IQA, p of each prompt pair, the
    probability CLIP gives the positive prompt, the negative getting 1 − p; for GRMP-IQA, what its
    score is made of), in the method's colour; 0.5 is the undecided middle. Hovering shows s_pos,
    s_neg, t and p.

    `attributes`: the pairs are separate attributes (the paper's look / feel prompts), so no
    averaged score is shown.
    """
    given = [result for result in results if result is not None]
    rows, colours = [], []
    for result in given:
        parts = breakdown(result)
        rows += parts
        colours += [registry.method(result.method).colour] * len(parts)
    labels = [_wrap(label) for label, _, _ in rows]
    figure = go.Figure(
        go.Bar(
            y=labels,
            x=[value for _, value, _ in rows],
            orientation="h",
            marker_color=colours,
            text=[f"{value:.3f}" for _, value, _ in rows],
            textposition="outside",
            cliponaxis=False,
            hovertext=[hover for _, _, hover in rows],
            hoverinfo="text",
            name="p",
        )
    )
    figure.add_vline(x=0.5, line_dash="dot", line_color="#999")
    name = name or (given[0].name if given else "")
    if attributes:
        title = _title(name, "one value per attribute (not averaged)")
    else:
        title = _title(name, ", ".join(f"{result.label} {result.score:.3f}" for result in given))
    figure.update_layout(
        title=title,
        xaxis=dict(range=[0, 1.2], title=P_AXIS, tickvals=[0, 0.25, 0.5, 0.75, 1], automargin=True),
        yaxis=dict(autorange="reversed", automargin=True),
        height=_top(title) + 100 + 44 * len(rows),
        margin=dict(l=10, r=10, t=_top(title), b=10),
        showlegend=False,
    )
    return themed(figure)


def breakdown(result: ScoreResult) -> list[tuple[str, float, str]]:
    """(label, value, hover) of each part of `result` (its method's `parts`)."""
    return [
        (part.label, part.value, _hover(part.pair, result.temperature) if part.pair else part.detail)
        for part in registry.method(result.method).parts(result)
    ]


def _wrap(text: str, width: int = 22) -> str:
    """Break a long label into lines (plotly does not wrap), so a narrow screen keeps the bars wide."""
    return "<br>".join(_lines(text, width))


def _lines(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` characters, broken at spaces, and inside a word (a long
    file name) only where the word is longer than a line."""
    words = [word[i : i + width] for word in text.split() for i in range(0, len(word), width)]
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line]


def _title(*parts: str, notes: Sequence[str] = (), size: int = 14) -> dict:
    """A title, each part on its own lines that fit a phone, and each note below them in small type."""
    lines = [line for part in parts for line in _lines(part, TITLE_WIDTH)]
    lines += [f"<sup>{line}</sup>" for note in notes for line in _lines(note, NOTE_WIDTH)]
    return dict(text="<br>".join(lines), font=dict(size=size))


def _top(title: dict) -> int:
    """The top margin for `title`: plotly centres a title in it, so its lines clear the app's label
    over the chart's top left corner and leave as much room for a label on the plot's top edge."""
    return 2 * TITLE_TOP + math.ceil(1.3 * title["font"]["size"] * (title["text"].count("<br>") + 1))


def mirrored_breakdown(left: ComparedPhoto, right: ComparedPhoto) -> go.Figure:
    """Two photos' breakdowns back to back: the left photo's p to the left, the right photo's to the right."""
    sides = []
    for row in (left, right):
        sides.append([entry for result in row.results.values() for entry in breakdown(result)])
    labels = [_wrap(label) for label, _, _ in sides[0]]
    figure = go.Figure()
    for sign, row, entries, colour in ((-1, left, sides[0], POSITIVE_COLOUR), (1, right, sides[1], SECOND_COLOUR)):
        figure.add_trace(
            go.Bar(
                y=[_wrap(label) for label, _, _ in entries],
                x=[sign * value for _, value, _ in entries],
                orientation="h",
                name=row.name,
                marker_color=colour,
                text=[f"{value:.3f}" for _, value, _ in entries],
                textposition="auto",  # inside a long bar: outside, it would run past a phone's edge
                cliponaxis=False,
                hovertext=[f"{row.name}<br>{hover}" for _, _, hover in entries],
                hoverinfo="text",
            )
        )
    title = _title(
        f"{left.name} (left) and {right.name} (right)", notes=["p of each pair: 0 in the middle, 1 at the edges"]
    )
    figure.update_layout(
        barmode="overlay",
        title=title,
        xaxis=dict(
            range=[-1.2, 1.2],
            tickvals=[-1, -0.5, 0, 0.5, 1],
            ticktext=["1", "0.5", "0", "0.5", "1"],
            title="p of each photo",
            automargin=True,
        ),
        yaxis=dict(autorange="reversed", automargin=True, categoryorder="array", categoryarray=labels),
        height=_top(title) + 180 + 44 * max(len(sides[0]), len(sides[1])),
        margin=dict(l=10, r=10, t=_top(title), b=110),  # two rows of legend on a phone
        legend=LEGEND_BELOW,
    )
    return themed(figure)


def _label(pair: PairScore) -> str:
    return f"{pair.positive} / {pair.negative}"


def score_scatter(
    rows: Sequence[ComparedPhoto], selected: str | None = None, axes: tuple[str, str] | None = None
) -> go.Figure:
    """Method `axes[0]` (x) against `axes[1]` (y); by default the first registered method against
    the next one scored (CLIP-IQA against GRMP-IQA), one dot per photo, the selected one
    highlighted; each axis spans its data (with a margin), and the dotted diagonal marks equal
    scores where the two ranges overlap. Names go where they overlap nothing (`_label_places`); a
    crowded dot's name is on hover."""
    if axes is None:
        first, *others = registry.methods()
        scored_methods = {m for row in rows for m in row.results}
        axes = (first.name, next((m for m in others if m.name in scored_methods), others[0]).name)
    x_name, y_name = axes
    second = registry.method(y_name)
    scored = [row for row in rows if x_name in row.results and y_name in row.results]
    xs = [r.results[x_name].score for r in scored]
    ys = [r.results[y_name].score for r in scored]
    x_range, y_range = _span(xs), _span(ys)
    low, high = max(x_range[0], y_range[0]), min(x_range[1], y_range[1])
    names = [r.name for r in scored]
    places = _label_places(
        xs, ys, x_range, y_range, [_short(n) for n in names], names.index(selected) if selected in names else None
    )
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[low, high] if low < high else [],
            y=[low, high] if low < high else [],
            mode="lines",
            line=dict(dash="dot", color="#999"),
            name="equal scores",
            hoverinfo="skip",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers+text",
            marker=dict(
                size=[16 if n == selected else 10 for n in names],
                color=[SELECTED_COLOUR if n == selected else second.colour for n in names],
                line=dict(width=1, color="#fff"),
            ),
            text=[_short(n) if place else "" for n, place in zip(names, places)],
            textposition=[place or "top center" for place in places],
            textfont=dict(size=LABEL_FONT_PX),
            customdata=names,
            name="photos",
            hovertemplate=f"%{{customdata}}<br>{x_name} score %{{x:.3f}}<br>{y_name} score %{{y:.3f}}<extra></extra>",
        )
    )
    notes = ["higher is better on both; dotted: equal scores"]
    if None in places:
        notes.append("crowded dots: names on hover")
    title = _title(f"{x_name} against {y_name}", notes=notes)
    figure.update_layout(
        title=title,
        xaxis=dict(title=f"{x_name} score (0 to 1)", range=list(x_range), automargin=True),
        yaxis=dict(title=f"{y_name} score (0 to 1)", range=list(y_range), automargin=True),
        height=_top(title) + SCATTER_HEIGHT,
        margin=dict(l=10, r=10, t=_top(title), b=10),
        showlegend=False,
    )
    if not scored:
        figure.add_annotation(
            text=f"No {y_name} scores" + (f": {second.unscored}" if second.unscored else ""),
            x=0.5,
            y=0.5,
            showarrow=False,
            font=dict(size=14),
        )
    return themed(figure)


# Dot names are placed in the narrowest plot area the page draws (a 390 px phone's, measured in
# Chromium): apart there, they are apart on any wider screen, where only the x distances grow.
SCATTER_HEIGHT = 360
PLOT_AREA_PX = (240.0, 300.0)
LABEL_FONT_PX = 10
CHAR_PX = 6.3  # the widest average advance of a 10 px sans-serif name
LINE_PX = 13.0
DOT_PX = 8.0  # a dot's radius and the gap plotly leaves between a dot and its name
NAME_CHARS = 18
# where a name may go, most readable first, as plotly's textposition and the box's offset from its dot
PLACES = {
    "top center": (-0.5, -1),
    "bottom center": (-0.5, 0),
    "top right": (0, -1),
    "bottom right": (0, 0),
    "top left": (-1, -1),
    "bottom left": (-1, 0),
    "middle right": (0, -0.5),
    "middle left": (-1, -0.5),
}
Box = tuple[float, float, float, float]


def _short(name: str) -> str:
    """A dot's name: without the extension, and cut in the middle when long ("astronaut…noise_L5")."""
    stem = name.rsplit(".", 1)[0] if "." in name[1:] else name
    if len(stem) <= NAME_CHARS:
        return stem
    half = (NAME_CHARS - 1) // 2
    return stem[:half] + "…" + stem[-(NAME_CHARS - 1 - half) :]


def _label_places(
    xs: Sequence[float],
    ys: Sequence[float],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    labels: Sequence[str],
    selected: int | None = None,
) -> list[str | None]:
    """Each dot's name place (a plotly textposition), or None where every place would overlap another
    name or dot or pass the plot's edge. The selected dot is placed first, then the dots farthest
    from the diagonal (where the two methods disagree most), so those are the names shown; the
    selected name is always shown."""
    width, height = PLOT_AREA_PX
    dots = [
        ((x - x_range[0]) / (x_range[1] - x_range[0]) * width, (y_range[1] - y) / (y_range[1] - y_range[0]) * height)
        for x, y in zip(xs, ys)
    ]
    taken: list[Box] = [(x - DOT_PX, y - DOT_PX, x + DOT_PX, y + DOT_PX) for x, y in dots]
    order = sorted(range(len(dots)), key=lambda i: (i != selected, -abs(xs[i] - ys[i])))
    places: list[str | None] = [None] * len(dots)
    for i in order:
        size = (len(labels[i]) * CHAR_PX, LINE_PX)
        for place, offset in PLACES.items():
            box = _name_box(dots[i], size, offset)
            within = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
            # the selected name, placed first, may cross other dots (never names): it is always shown
            clear = i == selected or not any(_overlap(box, other) for j, other in enumerate(taken) if j != i)
            if within and clear:
                places[i] = place
                taken.append(box)
                break
    return places


def _name_box(dot: tuple[float, float], size: tuple[float, float], offset: tuple[float, float]) -> Box:
    """The box a name of `size` takes beside its dot, `offset` in name sizes (x: -1 left .. 0 right;
    y: -1 above .. 0 below), kept `DOT_PX` from the dot's centre."""
    (x, y), (w, h), (ox, oy) = dot, size, offset
    left = x + ox * w + (DOT_PX if ox == 0 else -DOT_PX if ox == -1 else 0)
    top = y + oy * h + (DOT_PX if oy == 0 else -DOT_PX if oy == -1 else 0)
    return left, top, left + w, top + h


def _overlap(a: Box, b: Box) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _span(values: Sequence[float]) -> tuple[float, float]:
    """The range of `values` with a 15% margin (at least 0.05 wide), within [0, 1] (a little beyond when a
    value sits at either end, so its dot is whole)."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    margin = max((high - low) * 0.15, 0.025)
    return max(low - margin, -0.02 if low <= 0.01 else 0.0), min(high + margin, 1.02 if high >= 0.99 else 1.0)


def score_histogram(rows: Sequence[ComparedPhoto], method: str, threshold: float) -> go.Figure:
    """How `method`'s scores spread, with the threshold line: bars right of it are kept."""
    scores = [row.results[method].score for row in rows if method in row.results]
    kept = [s for s in scores if s >= threshold]
    rejected = [s for s in scores if s < threshold]
    low, high = _span([*scores, threshold])
    bins = dict(start=low, end=high, size=max((high - low) / 20, 1e-3))
    figure = go.Figure(
        [
            go.Histogram(x=kept, name=f"kept ({len(kept)})", marker_color=POSITIVE_COLOUR, xbins=bins),
            go.Histogram(x=rejected, name=f"rejected ({len(rejected)})", marker_color=NEGATIVE_COLOUR, xbins=bins),
        ]
    )
    figure.add_vline(
        x=threshold,
        line_dash="dash",
        line_color=SELECTED_COLOUR,
        annotation_text=f"threshold {threshold:.3f}",
        annotation_position="top right" if threshold < (low + high) / 2 else "top left",  # inside the chart
    )
    title = _title(f"{method} scores of {len(scores)} photos")
    figure.update_layout(
        barmode="stack",
        title=title,
        xaxis=dict(title=f"{method} score (0 to 1, higher is better)", range=[low, high], automargin=True),
        yaxis=dict(title="photos", automargin=True),
        height=_top(title) + 260,
        margin=dict(l=10, r=10, t=_top(title), b=70),
        showlegend=True,  # the colours' meaning, also when every photo is kept or every one rejected
        legend=LEGEND_BELOW,
    )
    return themed(figure)


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
    title = _title("Adaptation")
    figure.update_layout(
        title=title, height=_top(title) + 320, margin=dict(l=10, r=10, t=_top(title), b=70), legend=LEGEND_BELOW
    )
    figure.update_xaxes(title_text="step", automargin=True)
    figure.update_yaxes(title_text="loss", automargin=True, secondary_y=False)
    figure.update_yaxes(
        title_text="validation SRCC<br>(1: same order as the labels)", range=[-1, 1], automargin=True, secondary_y=True
    )
    return themed(figure)


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def pair_ranking(report: LabReport) -> go.Figure:
    """SRCC and PLCC of each pair, best first, with the chosen pairs' mean as reference lines."""
    labels = [_wrap(r.pair.label + ("" if r.pair.enabled else " (off)")) for r in report.ranks]
    figure = go.Figure(
        [
            go.Bar(
                name="SRCC", y=labels, x=[r.srcc for r in report.ranks], orientation="h", marker_color=POSITIVE_COLOUR
            ),
            go.Bar(
                name="PLCC", y=labels, x=[r.plcc for r in report.ranks], orientation="h", marker_color=SECOND_COLOUR
            ),
        ]
    )
    notes = []
    if _finite(report.chosen_srcc):
        figure.add_vline(x=report.chosen_srcc, line_dash="dash", line_color=POSITIVE_COLOUR)
        notes.append(f"dashed line: enabled pairs combined, SRCC {report.chosen_srcc:.3f}")
    title = _title(f"Prompt pairs against {report.n} photos' labels", notes=notes)
    figure.update_layout(
        barmode="group",
        title=title,
        xaxis=dict(range=[-1, 1], title="correlation with the labels<br>(1: perfect, 0: none)", automargin=True),
        yaxis=dict(autorange="reversed", automargin=True),
        height=_top(title) + 160 + 46 * len(labels),
        margin=dict(l=10, r=10, t=_top(title), b=70),
        legend=LEGEND_BELOW,
    )
    return themed(figure)


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
                # under the photo, across it: a phone's width goes to the photo, not to the bar
                colorbar=dict(
                    title=dict(text=label, side="top"),
                    orientation="h",
                    x=0.5,
                    xanchor="center",
                    y=0,
                    yanchor="top",
                    ypad=MAP_TICKS,
                    thickness=12,
                    len=1,
                ),
                text=hover,
                hovertemplate="%{text}<extra></extra>",
            ),
        ]
    )
    details = [
        f"{qmap.rows}x{qmap.cols} windows of {qmap.window} px (axes in pixels)",
        f"colours: this photo's own range, {low:.3f} to {high:.3f}",
        *qmap.notes,
    ]
    title = _title(f"Quality map of {qmap.name}", notes=details, size=13)
    figure.update_layout(
        template="plotly_dark" if dark else "plotly_white",
        title=title,
        xaxis=dict(range=[0, width], showgrid=False, constrain="domain", automargin=True),
        yaxis=dict(range=[height, 0], showgrid=False, scaleanchor="x", automargin=True),
        # the photo 480 px wide; the app fits the height to the width the photo gets (layout.CHARTS_JS)
        height=min(MAP_HEIGHT, _top(title) + MAP_BOTTOM + 480 * height // max(width, 1)),
        margin=dict(l=10, r=10, t=_top(title), b=MAP_BOTTOM),
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


def quality_map_figure(
    photo: Photo,
    scorer: CLIPIQA,
    pair: int | None = None,
    dark: bool = False,
    **grid: Any,
) -> tuple[go.Figure, QualityMap]:
    """The map of `photo` and its figure, in one call (for the app's handler); `grid` goes to `quality_map`."""
    qmap = quality_map(photo, scorer, **grid)
    return quality_map_chart(qmap, photo.image, pair=pair, dark=dark), qmap
