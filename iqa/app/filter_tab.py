"""The Filter tab: kept and rejected galleries at a threshold, the decision list and the kept photos' zip."""

from __future__ import annotations

import gradio as gr

from iqa.app.base import AppContext
from iqa.app.events import PRIVATE, Chains, on
from iqa.app.layout import THRESHOLD_JS, banner, how_to
from iqa.app.messages import shown_as_message, warn
from iqa.app.models import Models
from iqa.app.outputs import FilterOutput, ZipOutput
from iqa.app.score_tab import ATTRIBUTES_NOTE, ScoreHandlers
from iqa.app.session import Session
from iqa.report import charts
from iqa.report.compare import rows_to_csv, split, zip_photos

KEPT = "Kept"
NONE_KEPT = "Kept: no photo at or above the threshold"


class FilterHandlers:
    """Keep / reject by the decision bar, with `scoring`'s choice of method."""

    def __init__(self, app: AppContext, scoring: ScoreHandlers):
        self.app, self.scoring = app, scoring
        self.models, self.config = app.models, app.config

    @shown_as_message
    def filter(self, session: Session, threshold: float, method: str) -> FilterOutput:
        """Kept and rejected galleries, the score histogram and the decision list, by `method`'s score
        against `threshold`; the kept photos' zip is cleared (it held the previous split)."""
        self.app.use(session)
        if not session.rows:
            why = "nothing could be scored (the first tab's status says why)" if session.photos else "no photos yet"
            return FilterOutput([], [], None, None, f"No scores to filter: {why}.")
        by = self._filter_method(session, method)
        if by is None:
            return FilterOutput(
                [],
                [],
                None,
                None,
                ATTRIBUTES_NOTE + " Choose a method that does not follow the prompt table, or a quality preset."
                if session.attributes
                else "No scores to filter: no chosen method could score (the first tab's status says why).",
            )
        kept, rejected = split(session.rows, threshold, by)
        list_path = session.directory(self.config.work_dir) / "iqa-filter.csv"
        list_path.write_text(rows_to_csv(session.rows, threshold, by, session.settings), encoding="utf-8")

        def gallery(rows):
            return [(session.thumbnails[r.name], f"{r.result(by).score:.3f} {r.name}") for r in rows]

        summary = f"{len(kept)} kept, {len(rejected)} rejected: keep when the {by} score >= {threshold:.3f}."
        histogram = charts.score_histogram(session.rows, by, threshold)
        shown = gr.update(value=gallery(kept), label=KEPT if kept else NONE_KEPT)
        return FilterOutput(shown, gallery(rejected), histogram, str(list_path), summary, make_zip=bool(kept))

    @shown_as_message
    def zip_kept(self, session: Session, threshold: float, method: str) -> ZipOutput:
        """A zip of the kept photos (their original files where there are any)."""
        self.app.use(session)
        if not session.rows:
            raise gr.Error("score photos on the first tab first")
        by = self._filter_method(session, method)
        if by is None:
            raise gr.Error(
                "attribute prompts give no quality score to filter by; choose a method that does not follow them"
                if session.attributes
                else "no chosen method could score the photos: nothing to zip"
            )
        kept, _ = split(session.rows, threshold, by)
        if not kept:
            raise gr.Error(f"no photo has a {by} score at or above {threshold:.3f}: nothing to zip")
        by_name = {p.name: p for p in session.photos}
        path = session.directory(self.config.work_dir) / "kept-photos.zip"
        return ZipOutput(str(zip_photos([by_name[r.name] for r in kept if r.name in by_name], path)))

    def _filter_method(self, session: Session, method: str) -> str | None:
        by = self.scoring.decision_method(session, method)
        if by is not None and by != method:
            why = "attribute prompts give no quality score" if session.attributes else f"no {method} scores"
            warn(f"{why}; filtering by {by}")
        return by


def build_filter_tab(models: Models, ui: dict) -> None:
    banner(models)
    how_to("filter")
    ui["filter_summary"] = gr.Markdown("No scores to filter: no photos yet.", elem_id="filter-summary")
    ui["histogram"] = gr.Plot(label="Scores and the threshold", elem_id="histogram", visible=False)
    with gr.Row():
        ui["kept"] = gr.Gallery(label=KEPT, columns=4, height=300, elem_id="kept")
        ui["rejected"] = gr.Gallery(label="Rejected", columns=4, height=300, elem_id="rejected")
    with gr.Row():
        ui["filter_list"] = gr.File(
            label="Download the list (CSV)", interactive=False, visible=False, elem_id="filter-list"
        )
        with gr.Column():
            ui["make_zip"] = gr.Button("Zip the kept photos", size="sm", elem_id="make-zip", visible=False)
            ui["kept_zip"] = gr.File(
                label="Download the kept photos (zip)", interactive=False, visible=False, elem_id="kept-zip"
            )


def wire_filter_tab(h: FilterHandlers, ui: dict, chains: Chains):
    """The decision bar: a new threshold (put in range and rounded in the box first, so the box shows
    the value used) or method re-filters and re-ranks; the zip on request. Returns the threshold's
    event once in range, which the share link follows."""
    threshold = ui["threshold"]
    shown = threshold.input(None, threshold, threshold, js=THRESHOLD_JS, **PRIVATE)
    for event in (shown.then, ui["method"].input):
        on(on(event, h.filter, ui, trigger_mode="always_last").then, chains.scoring.rerank, ui)
    on(ui["make_zip"].click, h.zip_kept, ui)
    return shown
