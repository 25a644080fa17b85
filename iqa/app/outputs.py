"""Typed handler results: each field is named after the component it fills.

A handler returns one of these; `outputs()` is the list Gradio gets, and `components(ui)` the
matching output components, by field name, so the two can never drift apart.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd


class Outputs:
    """Base of the typed results (dataclasses)."""

    def outputs(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]  # type: ignore[arg-type]

    @classmethod
    def components(cls, ui: Mapping[str, Any]) -> list[Any]:
        return [ui[f.name] for f in fields(cls)]  # type: ignore[arg-type]


@dataclass
class PhotosOutput(Outputs):
    session: Any
    gallery: list[tuple[str, str]]
    photo_info: str


@dataclass
class ScoreOutput(Outputs):
    session: Any
    prompts: pd.DataFrame
    ranking: pd.DataFrame
    photo_pick: Any  # a dropdown update: the photos, and the one shown
    breakdown: Any  # plotly Figure or None
    scatter: Any
    results_csv: str | None
    status: str


@dataclass
class RankOutput(Outputs):
    ranking: pd.DataFrame
    results_csv: str | None


@dataclass
class PickOutput(Outputs):
    photo_pick: Any
    breakdown: Any


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
    kept: list[tuple[str, str]]
    rejected: list[tuple[str, str]]
    filter_list: str | None
    filter_summary: str


@dataclass
class LabOutput(Outputs):
    lab_table: pd.DataFrame
    lab_chart: Any
    lab_summary: str


@dataclass
class AdaptOutput(Outputs):
    adapt_chart: Any
    adapt_status: str
    session: Any
    checkpoint: Any
    adapt_download: list[str] | None


def as_outputs(handler: Callable) -> Callable:
    """`handler` for Gradio: its `Outputs` turned into the list of values (generators too).

    `functools.wraps` keeps the signature Gradio reads for `gr.Progress` and `gr.SelectData`.
    """

    def convert(value):
        return value.outputs() if isinstance(value, Outputs) else value

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
