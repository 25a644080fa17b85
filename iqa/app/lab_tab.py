"""The Prompt lab tab: every pair of the prompt table ranked by SRCC / PLCC against quality labels."""

from __future__ import annotations

from collections.abc import Sequence

import gradio as gr
import pandas as pd

from .. import charts
from ..prompt_lab import LabelledPhotos, load_labelled_folder, load_labelled_uploads, rank_pairs
from .base import HandlerBase
from .config import EXAMPLES
from .layout import banner
from .messages import shown_as_message
from .models import Models
from .outputs import LabOutput
from .score_tab import TEMPERATURES
from .table import parse_table

LAB_COLUMNS = ["rank", "positive", "negative", "on", "SRCC", "PLCC"]
BUNDLED_SET = "bundled synthetic set (examples/)"
UPLOADED_SET = "uploaded photos + CSV"


class LabHandlers(HandlerBase):
    def labelled_set(self, source: str, csv_file: str | None, files: Sequence[str] | None) -> LabelledPhotos:
        if source == BUNDLED_SET:
            return load_labelled_folder(EXAMPLES / "labels.csv")
        if not csv_file or not files:
            raise gr.Error("upload the photos and a CSV with their scores (columns: path or name, score)")
        try:
            return load_labelled_uploads(csv_file, files)
        except ValueError as err:
            raise gr.Error(str(err)) from None

    @shown_as_message
    def run_lab(
        self,
        source: str,
        csv_file: str | None,
        files: Sequence[str] | None,
        table: pd.DataFrame,
        backbone: str,
        temperature: str,
    ) -> LabOutput:
        """Rank every valid prompt pair of the table by SRCC/PLCC on a labelled set."""
        labelled = self.labelled_set(source, csv_file, files)
        store = self._store_or_default(backbone)
        pairs = [p for p in parse_table(table)[0] if p is not None]
        try:
            report = rank_pairs(store, pairs, labelled, TEMPERATURES[temperature])
        except ValueError as err:
            raise gr.Error(str(err)) from None
        rows = [
            [i, r.pair.positive, r.pair.negative, r.pair.enabled, round(r.srcc, 4), round(r.plcc, 4)]
            for i, r in enumerate(report.ranks, 1)
        ]
        summary = (
            f"**Mean of the chosen (enabled) pairs:** SRCC {report.chosen_srcc:.3f}, PLCC "
            f"{report.chosen_plcc:.3f} on {report.n} photos (t = {report.temperature:g}, "
            f"{store.backbone.description})."
        )
        notes = [f"left out: {m}" for m in report.invalid] + [f"skipped: {m}" for m in labelled.skipped]
        if notes:
            summary += "\n\n" + "\n".join(f"- {n}" for n in notes)
        return LabOutput(pd.DataFrame(rows, columns=LAB_COLUMNS), charts.pair_ranking(report), summary)


def build_lab_tab(models: Models, ui: dict) -> None:
    banner(models)
    gr.Markdown("Rank every pair of the prompt table (first tab) against quality labels.")
    with gr.Row():
        ui["lab_source"] = gr.Radio([BUNDLED_SET, UPLOADED_SET], value=BUNDLED_SET, label="Labelled set")
        ui["lab_files"] = gr.File(label="Photos", file_count="multiple")
        ui["lab_csv"] = gr.File(label="Scores CSV (path or name, score)", file_types=[".csv"])
    ui["lab_run"] = gr.Button("Rank prompt pairs", variant="primary")
    ui["lab_summary"] = gr.Markdown()
    ui["lab_table"] = gr.Dataframe(headers=LAB_COLUMNS, interactive=False, label="Pairs, best SRCC first")
    ui["lab_chart"] = gr.Plot(label="SRCC / PLCC per pair")
