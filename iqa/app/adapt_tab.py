"""The Adapt tab: few-shot adaptation of the seed variant in the browser, with a live chart."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import gradio as gr

from iqa.app import calls
from iqa.app.base import AppContext
from iqa.app.checkpoints import CheckpointHandlers
from iqa.app.config import EXAMPLES
from iqa.app.events import Chains, on
from iqa.app.jobs import AdaptDone, Failed, max_adapt_steps
from iqa.app.lab_tab import BUNDLED_SET, UPLOADED_SET, LabHandlers
from iqa.app.layout import banner, how_to
from iqa.app.messages import shown_as_message
from iqa.app.models import CheckpointRef, Models
from iqa.app.outputs import AdaptOutput
from iqa.app.session import Session
from iqa.app.zerogpu import on_zerogpu
from iqa.labels.datasets import load_csv
from iqa.methods.grmp.checkpoint import write_checkpoint
from iqa.report import charts


class AdaptHandlers:
    """Few-shot adaptation on the lab's kind of labelled set (`lab`); the result joins `checkpoints`."""

    def __init__(self, app: AppContext, lab: LabHandlers, checkpoints: CheckpointHandlers):
        self.app, self.lab, self.checkpoints = app, lab, checkpoints
        self.models, self.config = app.models, app.config

    @shown_as_message
    def adapt(
        self,
        adapt_source: str,
        adapt_csv: str | None,
        adapt_files: Sequence[str] | None,
        lam: float,
        steps: float,
        backbone: str,
        session: Session,
        progress=gr.Progress(),
    ) -> Iterator[AdaptOutput]:
        """Few-shot adaptation of the seed variant, streaming the loss / validation-SRCC chart.

        The GPU call yields every step, drawn at most twice a second; its last yield is the adapted
        weights, saved here as the session's checkpoint and offered on the first tab and for download.
        """
        self.app.use(session)
        labelled = self.lab.labelled_set(adapt_source, adapt_csv, adapt_files)
        store = self.app.store_or_default(backbone)
        steps = int(steps)
        history: list[dict] = []
        done: AdaptDone | None = None
        drawn = 0.0
        items = calls.adapt_steps(self.models, store, labelled.images(), steps, float(lam))
        for item in items:
            if isinstance(item, Failed):
                raise gr.Error(f"adaptation failed: {item.error}")
            if isinstance(item, AdaptDone):  # finished: a Stop pressed now no longer loses it
                done = item
                continue
            if session.stop_adapting:
                items.close()  # the GPU call ends, and its training at its next step
                yield self._stopped(session, history, steps)
                return
            history.append({"step": item.step, "loss": item.loss, "val_srcc": item.val_srcc})
            if time.monotonic() - drawn >= 0.5:
                drawn = time.monotonic()
                self.app.budget.use(session)  # a long adaptation is not idle
                progress((len(history), steps), desc="adapting")
                yield AdaptOutput(
                    charts.training_curves(history), f"Step {len(history)} of {steps}…", session, gr.update(), None
                )
        if done is None:
            raise gr.Error("adaptation failed: the GPU call ended without the adapted weights")
        folder = session.directory(self.config.work_dir) / "checkpoints"
        stem = folder / f"seed-adapted-{len(session.checkpoints) + 1}"
        tensors, config = write_checkpoint(done.tensors, done.meta, stem)
        ran = len(history)
        early = ran < steps  # the learning rate fell below its floor: validation had stopped improving
        ran_text = f"stopped early after {ran} of {steps} steps" if early else f"{steps} steps"
        label = f"{stem.name} (adapted, λ={lam:g}, {ran_text})"
        ref = CheckpointRef.of(stem)
        session.checkpoints[label] = ref
        self.app.caches.results(calls.checkpoint_key(ref)).description = store.backbone.description
        record = done.meta["config"]["training"]
        status = (
            f"Done: {len(labelled.images())} labelled photos on {store.backbone.description}; best step "
            f"{record['best_step']}, validation SRCC {record['val_srcc']:.3f}, PLCC {record['val_plcc']:.3f}. "
            f"'{label}' is now selectable on the first tab and scores there."
        )
        if early:
            status += (
                f"\n\nStopped early at step {ran} of {steps}: validation SRCC had stopped improving, so the "
                "learning rate was cut until it fell below its floor; the checkpoint is the best validated step."
            )
        yield AdaptOutput(
            charts.training_curves(history),
            status,
            session,
            self.checkpoints.choices(session, ref.id),
            [str(tensors), str(config)],
        )

    @staticmethod
    def _stopped(session: Session, history: list[dict], steps: int) -> AdaptOutput:
        status = (
            f"Stopped at step {len(history)} of {steps}: no checkpoint was saved (one is saved when an "
            "adaptation runs to its end; fewer steps end sooner)."
        )
        chart = charts.training_curves(history) if history else None
        return AdaptOutput(chart, status, session, gr.update(), None)

    @staticmethod
    def start_adapting(session: Session) -> None:
        """The Adapt button, before its run is queued: a Stop pressed from now on (the run still
        waiting in the queue included) ends this run."""
        session.stop_adapting = False

    @staticmethod
    def stop_adapting(session: Session) -> None:
        """The Stop button: the session's running adaptation ends at its next step, saving nothing."""
        session.stop_adapting = True


def build_adapt_tab(models: Models, ui: dict) -> None:
    banner(models)
    how_to("adapt")
    gr.Markdown(
        "Few-shot adaptation of GRMP-IQA's **seed** variant on the CLIP-IQA backbone: both encoders "
        "stay frozen, the prompt and the MLP head learn from the labelled photos (MSE + λ·pairwise "
        "regularizer). The new checkpoint becomes selectable on the first tab."
    )
    with gr.Row():
        ui["adapt_source"] = gr.Radio([BUNDLED_SET, UPLOADED_SET], value=BUNDLED_SET, label="Labelled set")
        ui["adapt_files"] = gr.File(label="Photos", file_count="multiple")
        ui["adapt_csv"] = gr.File(label="Scores CSV (path or name, score)", file_types=[".csv"])
    with gr.Row():
        ui["lam"] = gr.Slider(0, 20, value=1.0, step=0.1, label="λ (pairwise regularizer weight)")
        most = max_steps(models)
        ui["steps"] = gr.Slider(10, most, value=min(300, most), step=10, label="Steps", elem_id="steps")
    with gr.Row():
        ui["adapt_run"] = gr.Button("Adapt", variant="primary", elem_id="adapt-button", scale=3)
        ui["adapt_stop"] = gr.Button("Stop", variant="stop", elem_id="adapt-stop", scale=1)
    ui["adapt_status"] = gr.Markdown()
    ui["adapt_chart"] = gr.Plot(label="Training loss and validation SRCC", elem_id="adapt-chart", visible=False)
    ui["adapt_download"] = gr.File(
        label="Download the new checkpoint", file_count="multiple", interactive=False, visible=False
    )


def max_steps(models: Models) -> int:
    """The Steps slider's end: on ZeroGPU what one GPU call holds for the bundled set (a visitor's
    quota), in tens; elsewhere 2000, and the Stop button ends a longer run."""
    if not on_zerogpu():
        return 2000
    photos = len(load_csv(EXAMPLES / "labels.csv"))
    return max(10, max_adapt_steps(models.config.backbone, photos) // 10 * 10)


def wire_adapt_tab(h: AdaptHandlers, ui: dict, chains: Chains) -> None:
    """Adapt (a Stop pressed from the click on, the queue included, ends the run) and Stop; the
    adapted checkpoint is chosen on the first tab, which re-scores (`wire_score_tab`)."""
    adapting = on(ui["adapt_run"].click, h.start_adapting, ui, out=[], queue=False)
    on(adapting.then, h.adapt, ui)
    on(ui["adapt_stop"].click, h.stop_adapting, ui, out=[])
