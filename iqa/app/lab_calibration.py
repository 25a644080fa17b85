"""The Prompt lab's filter calibration: where to put the threshold, from keep/reject labels.

The labelled set is the lab's; the prompt table scores it with CLIP-IQA (a GPU job,
`iqa.app.gpu.calibrate`), and the calibration itself (`iqa.lab.calibration`) runs here on the CPU.
The threshold bar takes three decimals, so the counts shown are those of the threshold rounded so.
"""

from __future__ import annotations

from collections.abc import Sequence

import gradio as gr
import numpy as np
import pandas as pd

from iqa.app import calls
from iqa.app.base import AppContext
from iqa.app.events import Chains, on
from iqa.app.lab_tab import LabHandlers, server_set_label, table_method
from iqa.app.messages import inform, shown_as_message
from iqa.app.outputs import CalibrationOutput, ThresholdOutput
from iqa.app.score_tab import TEMPERATURES
from iqa.app.table import table_pairs
from iqa.lab.calibration import (
    Calibration,
    CalibrationError,
    OperatingPoint,
    TargetKind,
    calibrate,
    choose_point,
    exact,
    point_at,
)
from iqa.lab.prompt_lab import LabelledPhotos
from iqa.labels.keep import require_labels
from iqa.methods.prompts import PromptPair
from iqa.photos.photo import Photo
from iqa.report.lab_charts import pr_chart, roc_chart

TARGETS: dict[str, TargetKind] = {
    "reject precision at least": "precision",
    "bad photos rejected at least": "recall",
    "best F1": "f1",
}
BAR_DECIMALS = 3  # the threshold bar's step
GALLERY_PHOTOS = 24  # the worst mistakes shown of each kind
THUMBNAIL = 192
HOW_TO = (
    "**How to read this.** The labelled set needs keep / reject labels (a `label` column in the CSV; the "
    "bundled set has them). The bad photos are what the filter should find: **ROC AUC** is the chance that a "
    "bad photo scores below a good one (0.5: no better than chance), **average precision** how pure the "
    "rejects stay as more bad photos are found. The threshold is the one meeting the target; **false keeps** "
    "are bad photos it keeps, **false rejects** good photos it rejects. **Use this threshold** sets the bar "
    "at the top, so the Filter tab, downloads and share links follow it."
)


class CalibrationHandlers:
    """The filter calibrated on the lab's labelled set (`lab`)."""

    def __init__(self, app: AppContext, lab: LabHandlers):
        self.app, self.lab = app, lab
        self.models, self.config = app.models, app.config

    @shown_as_message
    def calibrate_filter(
        self,
        lab_source: str,
        lab_csv: str | None,
        lab_files: Sequence[str] | None,
        prompts: pd.DataFrame,
        backbone: str,
        temperature: str,
        cal_target: str,
        cal_value: float,
        progress=gr.Progress(),
    ) -> CalibrationOutput:
        """AUC, average precision and curves of CLIP-IQA (and of each pair) on the labelled set, the
        threshold for the target, its counts and the photos it gets wrong."""
        server = lab_source == server_set_label(self.models)
        labelled = None if server else self.lab.labelled_set(lab_source, lab_csv, lab_files)
        store = self.app.store_or_default(backbone)
        pairs = table_pairs(prompts, store.backbone.tokenizer)
        reply = calls.calibrate_labelled(
            self.models, store, pairs, TEMPERATURES[temperature], labelled, calls.progress_bar(progress)
        )
        keep = require_labels(reply.keep)
        scores = reply.scores.double().numpy()
        method = calibrate(table_method(), scores, keep)
        point = choose_point(method.curves, TARGETS[cal_target], float(cal_value))
        bar = point_at(method.curves, round(point.threshold, BAR_DECIMALS))
        per_pair = _per_pair(reply.pairs, reply.p.double().numpy(), keep)
        false_keeps, false_rejects = _mistakes(labelled, scores, keep, bar.threshold)
        return CalibrationOutput(
            _summary(method, point, bar, per_pair, labelled is None),
            bar.threshold,
            roc_chart([method, *per_pair], bar),
            pr_chart([method, *per_pair], bar),
            false_keeps,
            false_rejects,
        )

    @shown_as_message
    def use_threshold(self, cal_threshold: float | None) -> ThresholdOutput:
        """The calibrated threshold into the bar (deciding by CLIP-IQA, which it was calibrated on)."""
        if cal_threshold is None:
            raise gr.Error("calibrate the filter first")
        inform(f"The cal_threshold bar now keeps CLIP-IQA scores of {cal_threshold:g} and above.")
        return ThresholdOutput(float(cal_threshold), table_method())


def _per_pair(pairs: Sequence[PromptPair], p: np.ndarray, keep: list[bool]) -> list[Calibration]:
    """Each pair's p calibrated on its own; a pair whose p never changes is left out."""
    out = []
    for j, pair in enumerate(pairs):
        try:
            out.append(calibrate(pair.label, p[:, j], keep))
        except CalibrationError:
            continue
    return out


def _summary(
    method: Calibration, point: OperatingPoint, bar: OperatingPoint, pairs: list[Calibration], server: bool
) -> str:
    c = method.curves
    lines = [
        f"**{method.name}** finds the bad photos with **ROC AUC {method.auc:.3f}** and **average precision "
        f"{method.average_precision:.3f}** ({method.n} photos: {c.n_bad} reject, {c.n_good} keep).",
        f"**Threshold {bar.threshold:g}**: rejects {bar.rejected_bad} of {c.n_bad} bad photos, loses "
        f"{bar.rejected_good} of {c.n_good} good ones (reject precision {bar.precision:.3f}, "
        f"bad photos rejected {bar.recall:.3f}).",
    ]
    if bar != point:
        lines.append(
            f"(The target's own threshold, {exact(point.threshold)}, needs more than the bar's three decimals: "
            f"{point.sentence()}.)"
        )
    if pairs:
        lines.append("Each pair on its own: " + "; ".join(f"{c.name} AUC {c.auc:.3f}" for c in pairs) + ".")
    if server:
        lines.append("The server's set is held as features only: no photos to show.")
    return "\n\n".join(lines)


def _mistakes(
    labelled: LabelledPhotos | None, scores: np.ndarray, keep: list[bool], threshold: float
) -> tuple[list | None, list | None]:
    """Thumbnails of the bad photos kept (highest score first) and the good photos rejected (lowest first)."""
    if labelled is None:
        return None, None
    photos = list(labelled.photos)
    kept_bad = sorted((i for i, k in enumerate(keep) if not k and scores[i] >= threshold), key=lambda i: -scores[i])
    lost_good = sorted((i for i, k in enumerate(keep) if k and scores[i] < threshold), key=lambda i: scores[i])
    return _gallery(photos, scores, kept_bad) or None, _gallery(photos, scores, lost_good) or None


def _gallery(photos: list, scores: np.ndarray, indices: list[int]) -> list:
    shown = []
    for i in indices[:GALLERY_PHOTOS]:
        photo = photos[i]
        if isinstance(photo, Photo):
            image = photo.image.copy()
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            shown.append((image, f"{photo.name} · {scores[i]:.4f}"))
    return shown


def build_calibration_panel(ui: dict) -> None:
    """Calibration: the target, the button, the figures, the curves and the two galleries."""
    with gr.Accordion("Calibrate the filter (keep / reject labels)", open=True, elem_id="calibration"):
        gr.Markdown(HOW_TO, elem_classes=["how-to"])
        with gr.Row():
            ui["cal_target"] = gr.Radio(list(TARGETS), value=next(iter(TARGETS)), label="Target", elem_id="cal-target")
            ui["cal_value"] = gr.Slider(0.5, 1.0, value=0.9, step=0.01, label="Target value", elem_id="cal-value")
        with gr.Row():
            ui["cal_run"] = gr.Button("Calibrate", variant="primary", elem_id="cal-run")
            ui["cal_use"] = gr.Button("Use this threshold", elem_id="cal-use")
        ui["cal_summary"] = gr.Markdown(elem_id="cal-summary")
        ui["cal_threshold"] = gr.Number(
            label="Threshold for the target", interactive=False, visible=False, elem_id="cal-threshold"
        )
        with gr.Row():
            ui["cal_roc"] = gr.Plot(label="ROC", visible=False, elem_id="cal-roc")
            ui["cal_pr"] = gr.Plot(label="Precision-recall", visible=False, elem_id="cal-pr")
        with gr.Row():
            ui["cal_false_keeps"] = gr.Gallery(
                label="False keeps: bad photos the threshold keeps", visible=False, columns=6, elem_id="cal-false-keeps"
            )
            ui["cal_false_rejects"] = gr.Gallery(
                label="False rejects: good photos the threshold rejects",
                visible=False,
                columns=6,
                elem_id="cal-false-rejects",
            )


def wire_calibration_panel(h: CalibrationHandlers, ui: dict, chains: Chains) -> None:
    """Calibrating; its threshold into the bar, which the filter, the ranking and the link follow."""
    on(ui["cal_run"].click, h.calibrate_filter, ui)
    chains.follow_threshold(on(ui["cal_use"].click, h.use_threshold, ui))
