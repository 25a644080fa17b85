"""Typed handler results: each field is named after the component it fills.

A handler returns one of these; `outputs()` is the list Gradio gets, and `components(ui)` the
matching output components, by field name, so the two can never drift apart. The API's endpoints
get `values()` instead (`api_components(ui)`): plain values and files, never Gradio's update dicts.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import gradio as gr
import pandas as pd


class Outputs:
    """Base of the typed results (dataclasses).

    Fields named in `HIDDEN_WHEN_EMPTY` (downloads, charts) hold plain values here and are hidden
    on the page while they are None, so the page shows no empty boxes. Fields named in `PAGE_ONLY`
    (a button's visibility) mean nothing to an API client and are left out of its values.
    """

    HIDDEN_WHEN_EMPTY: ClassVar[tuple[str, ...]] = ()
    PAGE_ONLY: ClassVar[tuple[str, ...]] = ()

    def outputs(self) -> list[Any]:
        values = []
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self.HIDDEN_WHEN_EMPTY:
                value = gr.update(value=value, visible=value is not None)
            elif f.name == "ranking" and isinstance(value, pd.DataFrame):
                value = ranking_update(value)
            values.append(value)
        return values

    def values(self) -> list[Any]:
        """What an API client gets: each field's plain value (a dropdown update's chosen value)."""
        return [_plain(getattr(self, f.name)) for f in fields(self) if f.name not in self.PAGE_ONLY]  # type: ignore[arg-type]

    @classmethod
    def components(cls, ui: Mapping[str, Any]) -> list[Any]:
        return [ui[f.name] for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def api_components(cls, ui: Mapping[str, Any]) -> list[Any]:
        return [ui[f.name] for f in fields(cls) if f.name not in cls.PAGE_ONLY]  # type: ignore[arg-type]


RANK_FIXED = {"#": ("number", "32px"), "photo": ("html", "52px"), "decision": ("str", "76px"), "name": ("str", "300px")}


def ranking_layout(columns: Sequence[str]) -> tuple[list[Any], list[Any]]:
    """The ranking's datatypes and widths in pixels for `columns`: a score column (a method's or a
    pair's) as text with 3 decimals, wide enough for a method's name whole (about 10 px a character,
    at most 110: a long pair name is cut, its cells are short), so a phone shows the default ones."""
    layout = [RANK_FIXED.get(c, ("str", f"{min(110, max(80, 10 * len(c)))}px")) for c in columns]
    return [kind for kind, _ in layout], [width for _, width in layout]


def ranking_update(frame: pd.DataFrame) -> dict[str, Any]:
    """The ranking with the datatypes and widths of its own columns (the methods chosen and the
    attribute presets' pairs change them)."""
    datatype, widths = ranking_layout(list(frame.columns))
    return gr.update(value=frame, datatype=datatype, column_widths=widths)


def _plain(value: Any) -> Any:
    """An update dict's value (None when it changes no value); anything else as it is."""
    if isinstance(value, dict) and value.get("__type__") == "update":
        return value.get("value")
    return value


@dataclass
class PhotosOutput(Outputs):
    session: Any
    gallery: list[tuple[str, str]]
    photo_info: str


@dataclass
class ClearedOutput(PhotosOutput):
    """After "Clear photos": the upload box is emptied too (an upload sends every file the box lists)."""

    files: None = None


@dataclass
class ScoreOutput(Outputs):
    HIDDEN_WHEN_EMPTY = ("breakdown", "side_by_side", "scatter", "results_csv")
    session: Any
    prompts: pd.DataFrame
    ranking: pd.DataFrame
    photo_pick: Any  # a dropdown update: the photos, and the one shown
    breakdown: Any  # plotly Figure or None
    compare_pick: Any  # a dropdown update: the photo shown beside it
    side_by_side: Any
    scatter: Any
    results_csv: str | None
    status: str
    grmp_note: str  # the start-up note on GRMP-IQA, or "" once the session scores with its own checkpoint


@dataclass
class RankOutput(Outputs):
    HIDDEN_WHEN_EMPTY = ("results_csv",)
    ranking: pd.DataFrame
    results_csv: str | None


@dataclass
class PickOutput(Outputs):
    HIDDEN_WHEN_EMPTY = ("breakdown", "side_by_side", "scatter")
    photo_pick: Any
    breakdown: Any
    side_by_side: Any
    scatter: Any


@dataclass
class ScatterOutput(Outputs):
    """The scatter with the two methods chosen for it."""

    HIDDEN_WHEN_EMPTY = ("scatter",)
    scatter: Any


@dataclass
class AxesOutput(Outputs):
    """What offers the chosen methods: the decision bar's method and the scatter's two axes (dropdown updates)."""

    method: Any
    scatter_x: Any
    scatter_y: Any


@dataclass
class MapOutput(Outputs):
    """The quality map of the chosen photo: the pair choices (they follow the table), the figure, a message."""

    HIDDEN_WHEN_EMPTY = ("quality_map",)
    map_pair: Any  # a dropdown update: "overall" and the table's usable pairs
    quality_map: Any  # plotly Figure, or None while the map is not open or cannot be drawn
    map_status: str  # what the map shows, or why there is none


@dataclass
class PresetOutput(Outputs):
    """The prompt table after a preset, a file or an edit, and the preset box's name for it."""

    HIDDEN_WHEN_EMPTY = ("saved_prompts",)
    session: Any
    prompts: pd.DataFrame
    preset: str
    saved_prompts: str | None  # cleared: the saved file no longer holds the table


@dataclass
class TableNameOutput(Outputs):
    """What an edit of the prompt table changes besides the table: the preset box's name, the saved file."""

    HIDDEN_WHEN_EMPTY = ("saved_prompts",)
    session: Any
    preset: str
    saved_prompts: str | None


@dataclass
class ShareOutput(Outputs):
    """A shared link's settings, restored when the page opens."""

    prompts: Any
    preset: Any
    backbone: Any
    temperature: Any
    checkpoint: Any
    threshold: Any
    method: Any
    methods: Any


@dataclass
class RowOutput(Outputs):
    prompts: pd.DataFrame
    row_number: int


@dataclass
class CheckpointOutput(Outputs):
    session: Any
    checkpoint: Any  # a dropdown update


@dataclass
class FilterOutput(Outputs):
    HIDDEN_WHEN_EMPTY = ("histogram", "filter_list", "kept_zip")
    PAGE_ONLY = ("make_zip",)
    kept: Any  # the gallery's photos, or an update that also names why it is empty
    rejected: list[tuple[str, str]]
    histogram: Any
    filter_list: str | None
    filter_summary: str
    kept_zip: str | None = None  # cleared: it is made again, on request, for the current split
    make_zip: bool = False  # the zip button is offered only while a photo is kept

    def outputs(self) -> list[Any]:
        values = super().outputs()
        values[-1] = gr.update(visible=self.make_zip)
        return values


@dataclass
class ZipOutput(Outputs):
    HIDDEN_WHEN_EMPTY = ("kept_zip",)
    kept_zip: str | None


@dataclass
class LabOutput(Outputs):
    HIDDEN_WHEN_EMPTY = ("lab_chart",)
    lab_table: pd.DataFrame
    lab_chart: Any
    lab_summary: str


@dataclass
class CalibrationOutput(Outputs):
    """The Prompt lab's filter calibration: figures, the threshold for the target, curves, mistakes."""

    HIDDEN_WHEN_EMPTY = ("cal_threshold", "cal_roc", "cal_pr", "cal_false_keeps", "cal_false_rejects")
    cal_summary: str
    cal_threshold: float | None
    cal_roc: Any
    cal_pr: Any
    cal_false_keeps: list | None  # (thumbnail, caption) of bad photos kept
    cal_false_rejects: list | None  # (thumbnail, caption) of good photos rejected


@dataclass
class ThresholdOutput(Outputs):
    """The decision bar set from a calibration."""

    threshold: float
    method: str


@dataclass
class SearchOutput(Outputs):
    HIDDEN_WHEN_EMPTY = ("search_table",)
    search_table: pd.DataFrame | None  # None while the search runs
    search_summary: str


@dataclass
class WeightsOutput(PresetOutput):
    """The prompt table with its fitted weights, and their report."""

    fit_summary: str = ""


@dataclass
class AdaptOutput(Outputs):
    HIDDEN_WHEN_EMPTY = ("adapt_chart", "adapt_download")
    adapt_chart: Any
    adapt_status: str
    session: Any
    checkpoint: Any
    adapt_download: list[str] | None


def as_outputs(handler: Callable) -> Callable:
    """`handler` for the page's events: its `Outputs` turned into the list of values (generators too)."""
    return _converted(handler, page=True)


def as_values(handler: Callable) -> Callable:
    """`handler` for an API endpoint: its `Outputs` turned into plain values (generators too)."""
    return _converted(handler, page=False)


def _converted(handler: Callable, page: bool) -> Callable:
    """`handler` returning its `Outputs` as the page's outputs, or as an API client's plain values.

    `functools.wraps` keeps the signature Gradio reads for `gr.Progress` and `gr.SelectData`.
    """

    def convert(value):
        if not isinstance(value, Outputs):
            return value if page else _plain(value)
        values = value.outputs() if page else value.values()
        return values[0] if len(values) == 1 else values  # Gradio takes one output's value alone

    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def generator(*args, **kwargs):
            for value in handler(*args, **kwargs):
                yield convert(value)

        return generator

    @functools.wraps(handler)
    def function(*args, **kwargs):
        return convert(handler(*args, **kwargs))

    return function
