"""The first tab, "Score and compare": photos and prompt table in, ranking, breakdown, scatter and CSV out."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import pandas as pd

from .. import charts
from ..backbones import BackboneUnavailable
from ..clipiqa import CLIPIQA
from ..compare import CachedScorer, ComparedPhoto, ranked, rows_to_csv, split
from ..names import CLIP_IQA, GRMP_IQA
from . import gpu
from .base import HandlerBase
from .layout import banner
from .messages import shown_as_message
from .models import NO_GRMP, Models, grmp_model
from .outputs import CheckpointOutput, PickOutput, RankOutput, ScoreOutput
from .photo_panel import build_photo_panel
from .session import Session, icon_html
from .table import build_prompt_panel, parse_table

TEMPERATURES = {"checkpoint's logit scale": None, "t = 1 (the seed's formula)": 1.0}
RANK_COLUMNS = ["rank", "photo", "name", CLIP_IQA, GRMP_IQA, "decision"]


class ScoreHandlers(HandlerBase):
    """Scoring, the ranking and its CSV, the breakdown of one photo, GRMP-IQA checkpoints."""

    @shown_as_message
    def score(
        self,
        session: Session,
        table: pd.DataFrame,
        backbone: str,
        temperature: str,
        checkpoint: str,
        threshold: float,
        method: str,
        progress=gr.Progress(),
    ) -> ScoreOutput:
        """Score the session's photos; prompt edits reuse cached image features."""
        self._use(session)
        store = self._store_or_default(backbone)
        pairs, status = parse_table(table, store.backbone.tokenizer)
        table = table.assign(status=status)
        valid = [p for p, s in zip(pairs, status) if p is not None and s == "ok"]
        if not session.photos:
            gr.Warning("add photos first (upload them, or click 'Add example photos')")
            return self._empty(session, table, "No photos to score.")
        if not valid:
            gr.Warning("no usable prompt pair: every row is off or invalid (see the status column)")
            return self._empty(session, table, "No usable prompt pair.")
        grmp = self._grmp_or_none(checkpoint, session)
        start = time.perf_counter()
        clip = CLIPIQA(store, valid, TEMPERATURES[temperature])
        session.rows, added = gpu.run_compare(
            session.photos, clip, grmp, lambda done, total: progress((done, total), desc="encoding photos")
        )
        store.merge(added)
        elapsed = time.perf_counter() - start
        message = (
            f"Scored {len(session.photos)} photo(s) with {len(valid)} pair(s) in {elapsed:.2f} s on "
            f"{store.backbone.description}; {len(added[0])} image(s) encoded, "
            f"the rest from the feature cache."
        )
        if grmp is not None:
            message += f" GRMP-IQA: {grmp.label} on {grmp_model(grmp).description}."
        method = self._available(session, method)
        names = [row.name for row in ranked(session.rows, method)]
        rank = self.rerank(session, threshold, method)
        return ScoreOutput(
            session,
            table,
            rank.ranking,
            gr.update(choices=names, value=names[0]),
            self.breakdown(session, names[0]),
            charts.score_scatter(session.rows),
            rank.results_csv,
            message,
        )

    @staticmethod
    def _empty(session: Session, table: pd.DataFrame, status: str) -> ScoreOutput:
        return ScoreOutput(
            session,
            table,
            pd.DataFrame(columns=RANK_COLUMNS),
            gr.update(choices=[], value=None),
            None,
            None,
            None,
            status,
        )

    def _grmp_or_none(self, checkpoint: str | None, session: Session) -> CachedScorer | None:
        if not checkpoint:
            return None
        if checkpoint not in self.checkpoint_paths(session):  # the API lets a client send any text
            gr.Warning(f"GRMP-IQA checkpoint not used: {checkpoint!r} is not one of this session's checkpoints")
            return None
        try:
            return self.models.grmp(checkpoint)
        except (BackboneUnavailable, ValueError, OSError) as err:  # ValueError: CheckpointError, CheckpointMismatch
            gr.Warning(f"GRMP-IQA checkpoint not used: {err}")
            return None

    @shown_as_message
    def rerank(self, session: Session, threshold: float, method: str) -> RankOutput:
        """The ranking table and its CSV download, with keep/reject at `threshold` by `method`."""
        if not session.rows:
            return RankOutput(pd.DataFrame(columns=RANK_COLUMNS), None)
        method = self._available(session, method)
        kept_names = {row.name for row in split(session.rows, threshold, method)[0]}
        table = pd.DataFrame(
            [
                [
                    i,
                    icon_html(session.icons.get(row.name, "")),
                    row.name,
                    *(_rounded(row, m) for m in (CLIP_IQA, GRMP_IQA)),
                    "keep" if row.name in kept_names else "reject",
                ]
                for i, row in enumerate(ranked(session.rows, method), 1)
            ],
            columns=RANK_COLUMNS,
        )
        csv_path = session.directory(self.config.work_dir) / "iqa-results.csv"
        csv_path.write_text(rows_to_csv(session.rows, threshold, method), encoding="utf-8")
        return RankOutput(table, str(csv_path))

    @staticmethod
    def _available(session: Session, method: str) -> str:
        """`method`, or CLIP-IQA when it was not scored (GRMP-IQA without a checkpoint)."""
        if not session.rows or method not in session.rows[0].results:
            return CLIP_IQA
        return method

    @shown_as_message
    def pick_ranked(self, session: Session, event: gr.SelectData) -> PickOutput:
        """Clicking a row of the ranking shows that photo's breakdown."""
        name = event.row_value[RANK_COLUMNS.index("name")]
        return PickOutput(gr.update(value=name), self.breakdown(session, name))

    @staticmethod
    @shown_as_message
    def breakdown(session: Session, name: str | None):
        row = next((r for r in session.rows if r.name == name), None)
        if row is None:
            return None
        return charts.pair_breakdown(row.result(CLIP_IQA), row.results.get(GRMP_IQA))

    @shown_as_message
    def upload_checkpoint(self, files: Sequence[str] | None, session: Session) -> CheckpointOutput:
        """Add an uploaded GRMP checkpoint (its .json and .safetensors) to this session's choices.

        The upload is checked (config, sizes against the tensors, an allowed backbone) before any
        model is built from it; a refused one leaves no files behind.
        """
        self._use(session)
        files = list(files or [])
        by_suffix = {Path(f).suffix.lower(): Path(f) for f in files}
        if len(files) != 2 or set(by_suffix) != {".json", ".safetensors"}:
            raise gr.Error("upload a GRMP-IQA checkpoint as its two files: <name>.json and <name>.safetensors")
        stem = by_suffix[".json"].stem
        folder = session.directory(self.config.work_dir) / "checkpoints" / uuid.uuid4().hex[:8]
        folder.mkdir(parents=True)
        for suffix, path in by_suffix.items():
            shutil.copyfile(path, folder / f"{stem}{suffix}")
        try:
            scorer = self.models.grmp(str(folder / stem))
        except (BackboneUnavailable, ValueError) as err:  # ValueError: CheckpointError, CheckpointMismatch
            shutil.rmtree(folder, ignore_errors=True)
            raise gr.Error(f"{by_suffix['.json'].name}: {err}") from None
        session.checkpoints[f"{stem} (uploaded)"] = str(folder / stem)
        gr.Info(f"{stem}: {scorer.label} on {grmp_model(scorer).description}")
        return CheckpointOutput(session, self.checkpoint_choices(session, str(folder / stem)))

    def checkpoint_paths(self, session: Session) -> set[str]:
        """The checkpoints this session may score with: the server's and its own."""
        return {*self.models.startup_checkpoints.values(), *session.checkpoints.values()}

    def checkpoint_choices(self, session: Session, value: str | None = None):
        choices = [("none", NO_GRMP), *self.models.startup_checkpoints.items(), *session.checkpoints.items()]
        return gr.update(choices=choices, value=value if value is not None else NO_GRMP)


def _rounded(row: ComparedPhoto, method: str) -> float | None:
    return round(row.results[method].score, 4) if method in row.results else None


def build_score_tab(models: Models, ui: dict) -> None:
    """Photos and prompts side by side, the settings, then the results."""
    banner(models)
    with gr.Row():
        with gr.Column(scale=2):
            build_photo_panel(ui)
        with gr.Column(scale=3):
            build_prompt_panel(ui)
    with gr.Accordion("Settings", open=True):
        with gr.Row():
            ui["backbone"] = gr.Dropdown(
                models.backbone_choices, value=models.config.backbone, label="CLIP-IQA backbone"
            )
            ui["temperature"] = gr.Radio(list(TEMPERATURES), value=next(iter(TEMPERATURES)), label="Temperature t")
            ui["checkpoint"] = gr.Dropdown(
                [("none", NO_GRMP), *models.startup_checkpoints.items()],
                value=models.default_checkpoint,
                label="GRMP-IQA checkpoint",
            )
            ui["upload_ckpt"] = gr.UploadButton(
                "Upload GRMP-IQA checkpoint (.json + .safetensors)",
                file_count="multiple",
                file_types=[".json", ".safetensors"],
                size="sm",
                min_width=160,
            )
    gr.Markdown(models.grmp_note, elem_id="grmp-note")
    ui["score"] = gr.Button("Score photos", variant="primary", elem_id="score-button")
    ui["status"] = gr.Markdown(elem_id="score-status")
    ui["ranking"] = gr.Dataframe(
        headers=RANK_COLUMNS,
        label="Ranking (best first; keep/reject at the Filter tab's threshold and method)",
        datatype=["number", "html", "str", "number", "number", "str"],
        interactive=False,
        elem_id="ranking",
        max_height=420,
        column_widths=["7%", "12%", "39%", "14%", "14%", "14%"],
    )
    with gr.Row():
        with gr.Column():
            ui["photo_pick"] = gr.Dropdown([], label="Breakdown for photo (or click a ranking row)")
            ui["breakdown"] = gr.Plot(label="Per-pair softmax breakdown", elem_id="breakdown")
        ui["scatter"] = gr.Plot(label="CLIP-IQA against GRMP-IQA", elem_id="scatter")
    ui["results_csv"] = gr.File(label="Download results (CSV)", interactive=False, height=60)
