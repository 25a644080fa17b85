"""The Filter tab: kept and rejected galleries at a threshold, the decision list and the kept photos' zip."""

from __future__ import annotations

import gradio as gr

from ..compare import rows_to_csv, split, zip_photos
from ..names import CLIP_IQA, METHODS
from .layout import banner
from .messages import shown_as_message
from .models import Models
from .outputs import FilterOutput
from .score_tab import ScoreHandlers
from .session import Session


class FilterHandlers(ScoreHandlers):
    @shown_as_message
    def filter(self, session: Session, threshold: float, method: str) -> FilterOutput:
        """Kept and rejected galleries and the decision list, by `method`'s score against `threshold`."""
        self._use(session)
        if not session.rows:
            return FilterOutput([], [], None, "Score photos on the first tab first.")
        method = self._filter_method(session, method)
        kept, rejected = split(session.rows, threshold, method)
        list_path = session.directory(self.config.work_dir) / "iqa-filter.csv"
        list_path.write_text(rows_to_csv(session.rows, threshold, method), encoding="utf-8")

        def gallery(rows):
            return [(session.thumbnails[r.name], f"{r.result(method).score:.3f} {r.name}") for r in rows]

        summary = f"{len(kept)} kept, {len(rejected)} rejected at {method} >= {threshold:.3f}."
        return FilterOutput(gallery(kept), gallery(rejected), str(list_path), summary)

    @shown_as_message
    def zip_kept(self, session: Session, threshold: float, method: str) -> str:
        """A zip of the kept photos (their original files where there are any)."""
        self._use(session)
        if not session.rows:
            raise gr.Error("score photos on the first tab first")
        kept, _ = split(session.rows, threshold, self._filter_method(session, method))
        by_name = {p.name: p for p in session.photos}
        path = session.directory(self.config.work_dir) / "kept-photos.zip"
        return str(zip_photos([by_name[r.name] for r in kept if r.name in by_name], path))

    def _filter_method(self, session: Session, method: str) -> str:
        if self._available(session, method) != method:
            gr.Warning("no GRMP-IQA scores (no checkpoint chosen); filtering by CLIP-IQA")
        return self._available(session, method)


def build_filter_tab(models: Models, ui: dict) -> None:
    banner(models)
    with gr.Row():
        ui["threshold"] = gr.Slider(0, 1, value=0.5, step=0.005, label="Threshold (keep when score >= it)")
        ui["method"] = gr.Radio(list(METHODS), value=CLIP_IQA, label="Filter by")
    ui["filter_summary"] = gr.Markdown("Score photos on the first tab first.")
    with gr.Row():
        ui["kept"] = gr.Gallery(label="Kept", columns=5, height=300)
        ui["rejected"] = gr.Gallery(label="Rejected", columns=5, height=300)
    with gr.Row():
        ui["filter_list"] = gr.File(label="Download the list (CSV)", interactive=False)
        with gr.Column():
            ui["make_zip"] = gr.Button("Zip the kept photos", size="sm")
            ui["kept_zip"] = gr.File(label="Download the kept photos (zip)", interactive=False)
