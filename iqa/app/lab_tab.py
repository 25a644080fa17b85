"""The Prompt lab tab: every pair of the prompt table ranked by SRCC / PLCC against quality labels."""

from __future__ import annotations

from collections.abc import Sequence

import gradio as gr
import pandas as pd

from iqa.app import calls
from iqa.app.base import AppContext
from iqa.app.config import EXAMPLES
from iqa.app.events import Chains, on
from iqa.app.layout import banner, how_to
from iqa.app.messages import inform, shown_as_message
from iqa.app.models import Models
from iqa.app.outputs import LabOutput, PresetOutput
from iqa.app.score_tab import TEMPERATURES
from iqa.app.session import Session
from iqa.app.table import CUSTOM, pairs_table, table_pairs
from iqa.lab.prompt_lab import LabelledPhotos, load_labelled_folder, load_labelled_uploads
from iqa.methods import registry
from iqa.methods.prompts import PromptPair
from iqa.report import charts

LAB_COLUMNS = ["rank", "positive", "negative", "weight", "on", "SRCC", "PLCC"]
BEST_PAIRS = 3  # how many of the best pairs "use these pairs" turns on
BUNDLED_SET = "bundled synthetic set (examples/)"
UPLOADED_SET = "uploaded photos + CSV"


def server_set_label(models: Models) -> str | None:
    """The Prompt lab's choice for the server's labelled set (`--lab-dataset`), if there is one."""
    if models.lab_set is None:
        return None
    return f"server set: {models.config.lab_dataset} ({len(models.lab_set.scores)} photos)"


class LabHandlers:
    """The Prompt lab: its labelled set, the pairs ranked against it, the best ones into the table."""

    def __init__(self, app: AppContext):
        self.app = app
        self.models, self.config = app.models, app.config

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
        lab_source: str,
        lab_csv: str | None,
        lab_files: Sequence[str] | None,
        prompts: pd.DataFrame,
        backbone: str,
        temperature: str,
        progress=gr.Progress(),
    ) -> LabOutput:
        """Rank every valid prompt pair of the prompts by SRCC/PLCC on a labelled set."""
        server = self.models.lab_set if lab_source == server_set_label(self.models) else None
        labelled = None if server is not None else self.labelled_set(lab_source, lab_csv, lab_files)
        skipped = server.skipped if server is not None else labelled.skipped if labelled is not None else []
        store = self.app.store_or_default(backbone)
        pairs = table_pairs(prompts, store.backbone.tokenizer)
        try:
            report = calls.rank_labelled(
                self.models, store, pairs, TEMPERATURES[temperature], labelled, calls.progress_bar(progress)
            )
        except ValueError as err:
            raise gr.Error(str(err)) from None
        rows = [
            [i, r.pair.positive, r.pair.negative, r.pair.weight, r.pair.enabled, round(r.srcc, 3), round(r.plcc, 3)]
            for i, r in enumerate(report.ranks, 1)
        ]
        summary = (
            f"**SRCC of the combined score of the enabled pairs:** {report.chosen_srcc:.3f} (PLCC "
            f"{report.chosen_plcc:.3f}) on {report.n} photos (t = {report.temperature:g}, "
            f"{store.backbone.description})."
        )
        enabled = [r.srcc for r in report.ranks if r.pair.enabled]
        if enabled:
            summary += f" The enabled pairs' own SRCCs average {sum(enabled) / len(enabled):.3f}."
        notes = [f"left out: {m}" for m in report.invalid] + [f"skipped: {m}" for m in skipped]
        if notes:
            summary += "\n\n" + "\n".join(f"- {n}" for n in notes)
        return LabOutput(pd.DataFrame(rows, columns=LAB_COLUMNS), charts.pair_ranking(report), summary)

    @shown_as_message
    def use_lab_pairs(self, lab_table: pd.DataFrame | None, session: Session) -> PresetOutput:
        """The ranked pairs into the prompt table, best first: the best (with a positive SRCC) on,
        the others off, so none is lost."""
        if lab_table is None or lab_table.empty or "SRCC" not in lab_table:
            raise gr.Error("rank the prompt pairs first")
        rows = lab_table.sort_values("SRCC", ascending=False, kind="stable").to_dict("records")
        pairs = [
            PromptPair(str(r["positive"]), str(r["negative"]), float(r["weight"]), i < BEST_PAIRS and r["SRCC"] > 0)
            for i, r in enumerate(rows)
        ]
        if not any(p.enabled for p in pairs):
            raise gr.Error("no pair ranks the labelled photos the right way round (every SRCC <= 0)")
        table = pairs_table(pairs)
        session.custom_table = table.copy()
        inform(f"The prompt table on the first tab now uses the {sum(p.enabled for p in pairs)} best pair(s).")
        return PresetOutput(session, table, CUSTOM, None)


def build_lab_tab(models: Models, ui: dict) -> None:
    banner(models)
    how_to("lab")
    with gr.Row():
        server = server_set_label(models)
        choices = [*([server] if server else []), BUNDLED_SET, UPLOADED_SET]
        ui["lab_source"] = gr.Radio(choices, value=choices[0], label="Labelled set")
        ui["lab_files"] = gr.File(label="Photos", file_count="multiple")
        ui["lab_csv"] = gr.File(label="Scores CSV (path or name, score)", file_types=[".csv"])
    with gr.Row():
        ui["lab_run"] = gr.Button("Rank prompt pairs", variant="primary", elem_id="lab-run")
        ui["lab_use"] = gr.Button(
            f"Use the best pairs (up to {BEST_PAIRS}) in the prompt table", elem_id="lab-use", variant="secondary"
        )
    ui["lab_summary"] = gr.Markdown(elem_id="lab-summary")
    ui["lab_table"] = gr.Dataframe(
        headers=LAB_COLUMNS, interactive=False, label="Pairs, best SRCC first", elem_id="lab-table"
    )
    ui["lab_chart"] = gr.Plot(label="SRCC / PLCC per pair", visible=False, elem_id="lab-chart")


def wire_lab_tab(h: LabHandlers, ui: dict, chains: Chains) -> None:
    """Ranking the table's pairs; the best ones into the table, which re-scores, and the lab's figures
    follow the table it now fills (ranked again, the chosen pairs marked on)."""
    on(ui["lab_run"].click, h.run_lab, ui)
    used = on(ui["lab_use"].click, h.use_lab_pairs, ui)
    chains.rescore(used)
    on(used.success, h.run_lab, ui)


def table_method() -> str:
    """The method the lab designs prompts and filters for: the first registered one that follows the
    prompt table (its score is the weighted mean of p over the table's pairs, as the lab computes it)."""
    return next(m.name for m in registry.methods() if m.follows_prompts)
