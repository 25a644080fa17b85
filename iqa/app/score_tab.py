"""The first tab, "Score": photos and prompt table in, ranking, breakdown, scatter and CSV out."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from iqa.app import calls
from iqa.app.about_tab import loaded_text
from iqa.app.base import HandlerBase
from iqa.app.layout import banner, how_to
from iqa.app.messages import inform, shown_as_message, warn
from iqa.app.models import NO_GRMP, CheckpointInfo, CheckpointRef, Models
from iqa.app.outputs import CheckpointOutput, MapOutput, PickOutput, RankOutput, ScoreOutput
from iqa.app.photo_panel import build_photo_panel
from iqa.app.session import Session, icon_html
from iqa.app.table import build_prompt_panel, no_pair_reason, parse_table
from iqa.clip.backbones import BackboneUnavailable
from iqa.clip.features import FeatureStore
from iqa.methods import registry
from iqa.methods.clipiqa.quality_map import QualityMapError
from iqa.methods.prompts import PromptPair, is_attribute_set
from iqa.methods.results import PairScore
from iqa.names import CLIP_IQA, GRMP_IQA
from iqa.report import charts
from iqa.report.compare import ComparedPhoto, ranked, rows_to_csv, split

DIGITS = 3  # every score, p and threshold on the page has three decimals
TEMPERATURES = {"checkpoint's logit scale": None, "t = 1 (the seed's formula)": 1.0}


def rank_columns() -> list[str]:
    """The ranking's columns: a score per registered method before the name, so that a phone shows
    them without scrolling sideways."""
    return ["#", "photo", *registry.names(), "decision", "name"]


# dropdowns whose choices are the session's own (its photos, pairs, checkpoints): an API client sends
# their values without the page's per-session choices, and the handlers check them themselves
SESSION_CHOICES: dict = {"allow_custom_value": True}

MAP_OVERALL = "overall (weighted mean of the pairs)"
MAP_HOW_TO = (
    "**How to read this.** CLIP-IQA scores overlapping square windows of the chosen photo with the "
    "prompt table; each window's *p* (or the weighted mean over the pairs, *overall*) colours the part "
    "of the photo it covers, averaged where windows overlap. Colours span this photo's own range (see the "
    "colour bar): yellow is the most positive part, purple the least, so look for *where* it is blurry, "
    "noisy or dark, not at absolute values. Hover a cell for its windows' values."
)


ATTRIBUTES_NOTE = (
    "The prompt table holds the paper's attribute prompts (look / feel): each is read on its own "
    "(columns and bars below), never averaged into a quality score."
)


class ScoreHandlers(HandlerBase):
    """Scoring, the ranking and its CSV, the breakdown of one photo (or two side by side), checkpoints."""

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
        selected: str | None = None,
        other: str | None = None,
        progress=gr.Progress(),
    ) -> ScoreOutput:
        """Score the session's photos; prompt edits reuse cached image features. `selected` (and
        `other`, shown beside it) stay chosen while they are among the photos."""
        self._use(session)
        store = self._store_or_default(backbone)
        pairs, status = parse_table(table, store.backbone.tokenizer)
        table = table.assign(status=status)
        valid = [p for p, s in zip(pairs, status) if p is not None and s == "ok"]
        if not session.photos:
            session.rows = []  # no warning: a setting may change before any photo is added
            return self._empty(session, table, "No photos to score.")
        if not valid:
            session.rows = []
            reason = no_pair_reason(status)
            warn(reason)
            return self._empty(session, table, reason)
        ref = self._checkpoint_or_none(checkpoint, session)
        start = time.perf_counter()
        t = TEMPERATURES[temperature]
        scored = calls.score_photos(
            self.models, self.caches, store, valid, t, ref, session.photos, calls.progress_bar(progress)
        )
        session.rows = scored.rows
        session.attributes = is_attribute_set(valid)
        session.settings = self._settings(store, scored, valid, self.models.info(ref) if ref is not None else None)
        elapsed = time.perf_counter() - start
        message = (
            f"Scored {len(session.photos)} photo(s) with {len(valid)} pair(s) in {elapsed:.2f} s on "
            f"{store.backbone.description}; {scored.encoded} image(s) encoded, "
            f"the rest from the feature cache."
        )
        if scored.grmp_error:
            warn(f"GRMP-IQA checkpoint not used: {scored.grmp_error}")
        elif ref is not None:
            message += f" GRMP-IQA: {self.models.info(ref).label} on {scored.grmp_description}."
        if session.attributes:
            message += " " + ATTRIBUTES_NOTE
        names = [row.name for row in self.ordered(session, method)]
        selected = selected if selected in names else names[0]
        other = other if other in names and other != selected else next((n for n in names if n != selected), None)
        rank = self.rerank(session, threshold, method)
        return ScoreOutput(
            session,
            table,
            rank.ranking,
            gr.update(choices=names, value=selected),
            self.breakdown(session, selected),
            gr.update(choices=names, value=other),
            self.side_by_side(session, selected, other),
            self.scatter(session, selected),
            rank.results_csv,
            message,
            self._grmp_note(ref),
        )

    def _grmp_note(self, ref: CheckpointRef | None) -> str:
        """The start-up note on GRMP-IQA while it still holds (not once a checkpoint of the session's scores)."""
        own = ref is not None and ref not in self.models.startup_checkpoints.values()
        return "" if own else self.models.grmp_note

    def _settings(
        self, store: FeatureStore, scored: calls.Scored, pairs: list[PromptPair], info: CheckpointInfo | None
    ) -> dict[str, object]:
        """How the results were made, as the CSV's last columns (no server paths)."""
        backbone = store.backbone
        clip = scored.rows[0].results[CLIP_IQA]
        settings: dict[str, object] = {
            "backbone": backbone.name,
            "weights": Path(self.config.weights).name if self.config.weights else backbone.pretrained or "none",
            "clip_iqa_temperature": f"{clip.temperature:g}",
            "prompt_pairs": "; ".join(f"{p.positive} / {p.negative} (weight {p.weight:g})" for p in pairs),
        }
        grmp = scored.rows[0].results.get(GRMP_IQA)
        if grmp is not None and info is not None:
            settings["grmp_iqa_checkpoint"] = f"{info.label} on {info.backbone}"
            settings["grmp_iqa_temperature"] = f"{grmp.temperature:g}"
        return settings

    def _empty(self, session: Session, table: pd.DataFrame, status: str) -> ScoreOutput:
        return ScoreOutput(
            session,
            table,
            pd.DataFrame(columns=rank_columns()),
            gr.update(choices=[], value=None),
            None,
            gr.update(choices=[], value=None),
            None,
            None,
            None,
            status,
            self.models.grmp_note,
        )

    @shown_as_message
    def clear_results(self, session: Session, table: pd.DataFrame) -> ScoreOutput:
        """After the photos are cleared: no ranking, charts or downloads are left over."""
        session.rows = []
        return self._empty(session, table, "No photos yet.")

    def _checkpoint_or_none(self, checkpoint: str | None, session: Session) -> CheckpointRef | None:
        """The session's chosen GRMP-IQA checkpoint, or None (said in a warning when it cannot be used)."""
        if not checkpoint:
            return None
        ref = self.checkpoint_refs(session).get(checkpoint)
        if ref is None:  # the API lets a client send any text
            warn(f"GRMP-IQA checkpoint not used: {checkpoint!r} is not one of this session's checkpoints")
        return ref

    def decision_method(self, session: Session, method: str) -> str | None:
        """The method decisions are made by: `method`, the first method scored when `method` was
        not, and with attribute prompts a method that does not follow them (GRMP-IQA) or nothing:
        attribute prompts give no quality score."""
        if not session.rows:
            return None
        scored = session.rows[0].results
        if session.attributes:  # only a method that does not follow the prompt table gives a score
            return next((m.name for m in registry.methods() if m.name in scored and not m.follows_prompts), None)
        return method if method in scored else next(iter(scored))

    def ordered(self, session: Session, method: str) -> list[ComparedPhoto]:
        """Best first by the decision method; in the order added when there is none."""
        by = self.decision_method(session, method)
        return ranked(session.rows, by) if by else list(session.rows)

    @shown_as_message
    def rerank(self, session: Session, threshold: float, method: str) -> RankOutput:
        """The ranking table and its CSV download, with keep/reject at `threshold` by `method`."""
        if not session.rows:
            return RankOutput(pd.DataFrame(columns=rank_columns()), None)
        by = self.decision_method(session, method)
        kept_names = {row.name for row in split(session.rows, threshold, by)[0]} if by else set()
        columns = ["#", "photo", *_score_columns(session), "decision", "name"]
        records = []
        for i, row in enumerate(self.ordered(session, method), 1):
            decision = ("keep" if row.name in kept_names else "reject") if by else "—"
            icon = icon_html(session.icons.get(row.name, ""))
            records.append([i, icon, *_score_cells(session, row), decision, row.name])
        table = pd.DataFrame(records, columns=columns)
        csv_path = session.directory(self.config.work_dir) / "iqa-results.csv"
        csv_path.write_text(rows_to_csv(session.rows, threshold, by, session.settings), encoding="utf-8")
        return RankOutput(table, str(csv_path))

    @shown_as_message
    def pick_ranked(self, session: Session, other: str | None, event: gr.SelectData) -> PickOutput:
        """Clicking a row of the ranking shows that photo's breakdown."""
        name = event.row_value[-1]  # the last column, whatever the attribute columns before it
        return self.show_photo(session, name, other)

    @shown_as_message
    def show_photo(self, session: Session, name: str | None, other: str | None) -> PickOutput:
        """One photo chosen: its breakdown, its place in the scatter, and beside the other photo."""
        return PickOutput(
            gr.update(value=name),
            self.breakdown(session, name),
            self.side_by_side(session, name, other),
            self.scatter(session, name),
        )

    @staticmethod
    @shown_as_message
    def breakdown(session: Session, name: str | None):
        row = next((r for r in session.rows if r.name == name), None)
        if row is None:
            return None
        return charts.pair_breakdown(list(row.results.values()), attributes=session.attributes, name=row.name)

    @staticmethod
    def scatter(session: Session, selected: str | None):
        """The first method against a second one (CLIP-IQA against GRMP-IQA), or None (no box) until two were scored."""
        if not session.rows or len(session.rows[0].results) < 2:
            return None
        return charts.score_scatter(session.rows, selected)

    @staticmethod
    @shown_as_message
    def side_by_side(session: Session, name: str | None, other: str | None):
        """The two photos' breakdowns mirrored (None until two different photos are chosen)."""
        rows = {r.name: r for r in session.rows}
        if name not in rows or other not in rows or name == other:
            return None
        return charts.mirrored_breakdown(rows[name], rows[other])

    @shown_as_message
    def draw_map(
        self,
        session: Session,
        table: pd.DataFrame,
        backbone: str,
        temperature: str,
        name: str | None,
        pair: str | None,
        progress=gr.Progress(),
    ) -> MapOutput:
        """The map button: the quality map of the chosen photo, which from then on follows the photo,
        the pair, the prompt table and the settings (`refresh_map`)."""
        session.map_open = True
        return self.refresh_map(session, table, backbone, temperature, name, pair, progress)

    @shown_as_message
    def refresh_map(
        self,
        session: Session,
        table: pd.DataFrame,
        backbone: str,
        temperature: str,
        name: str | None,
        pair: str | None,
        progress=gr.Progress(),
    ) -> MapOutput:
        """The quality map again after what it depends on changed, or none (never a stale one).

        Runs after a re-score, never inside it; window features come from the backbone's
        FeatureStore, so a prompt edit re-draws encoding only the new texts.
        """
        self._use(session)
        store = self._store_or_default(backbone)
        pairs, status = parse_table(table, store.backbone.tokenizer)
        valid = [p for p, s in zip(pairs, status) if p is not None and s == "ok"]
        labels = [_pair_label(p) for p in valid]
        value = pair if pair in labels else MAP_OVERALL
        choices = gr.update(choices=[MAP_OVERALL, *labels], value=value)
        photo = next((p for p in session.photos if p.name == name), None)
        if not session.map_open:
            return MapOutput(choices, None, "")
        if photo is None:
            return MapOutput(choices, None, "No quality map: choose a scored photo above.")
        if not valid:
            return MapOutput(choices, None, "No quality map: the prompt table has no usable pair.")
        try:
            qmap = calls.map_photo(
                self.models, store, valid, TEMPERATURES[temperature], photo, calls.progress_bar(progress)
            )
        except QualityMapError as err:
            return MapOutput(choices, None, f"**No quality map:** {err}")
        index = None if value == MAP_OVERALL else labels.index(value)
        figure = charts.themed(charts.quality_map_chart(qmap, photo.image, pair=index))
        shown = "the overall value" if index is None else f"p({valid[index].positive})"
        return MapOutput(
            choices,
            figure,
            f"Quality map of {photo.name}: {shown} on {qmap.rows}x{qmap.cols} windows of {qmap.window} px, "
            f"{store.backbone.description}.",
        )

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
            info = self.models.check_upload(str(folder / stem))
            ref = CheckpointRef.of(folder / stem)
            description = calls.load_checkpoint(self.models, self.caches, ref)
        except (BackboneUnavailable, ValueError, OSError) as err:  # ValueError: CheckpointError, CheckpointMismatch
            shutil.rmtree(folder, ignore_errors=True)
            raise gr.Error(f"{by_suffix['.json'].name}: {err}") from None
        session.checkpoints[f"{stem} (uploaded)"] = ref
        inform(f"{stem}: {info.label} on {description}")
        return CheckpointOutput(session, self.checkpoint_choices(session, ref.id))

    def loaded(self, session: Session) -> str:
        """The About tab's note on what is loaded, with this session's own checkpoints."""
        return loaded_text(self.models, list(session.checkpoints))

    def checkpoint_refs(self, session: Session) -> dict[str, CheckpointRef]:
        """The checkpoints this session may score with, by the value the page chooses them by: the
        server's and its own."""
        refs = [*self.models.startup_checkpoints.values(), *session.checkpoints.values()]
        return {ref.id: ref for ref in refs}

    def checkpoint_choices(self, session: Session, value: str | None = None):
        own = {**self.models.startup_checkpoints, **session.checkpoints}
        choices = [("none", NO_GRMP), *((label, ref.id) for label, ref in own.items())]
        return gr.update(choices=choices, value=value if value is not None else NO_GRMP)


def _attribute_method(session: Session, method: registry.Method) -> bool:
    """Whether `method`'s column is one per attribute prompt: attribute prompts, a method that follows them."""
    return session.attributes and method.follows_prompts and method.name in session.rows[0].results


def _score_columns(session: Session) -> list[str]:
    """A score column per registered method, or with attribute prompts one per attribute for the
    methods that follow the prompt table."""
    columns = []
    for method in registry.methods():
        if _attribute_method(session, method):
            columns += [_attribute(p) for p in session.rows[0].results[method.name].pairs]
        else:
            columns.append(method.name)
    return columns


def _score_cells(session: Session, row: ComparedPhoto) -> list[str]:
    """`row`'s values under `_score_columns`."""
    cells = []
    for method in registry.methods():
        if _attribute_method(session, method):
            cells += [f"{p.p:.{DIGITS}f}" for p in row.results[method.name].pairs]
        else:
            cells.append(_rounded(row, method.name))
    return cells


def _rounded(row: ComparedPhoto, method: str) -> str:
    """The score as shown: always DIGITS decimals ("0.010", not "0.01"); "" where it was not scored."""
    return f"{row.results[method].score:.{DIGITS}f}" if method in row.results else ""


def _pair_label(pair: PromptPair) -> str:
    """A pair as the map's dropdown names it (the texts: a row moved or deleted keeps its choice)."""
    return f"{pair.positive} / {pair.negative}"


def _attribute(pair: PairScore) -> str:
    """A short column name for an attribute pair: "Bright photo. / Dark photo." -> "Bright/Dark"."""
    return "/".join(side.removesuffix(" photo.").removesuffix(".") for side in (pair.positive, pair.negative))


def build_score_tab(models: Models, ui: dict) -> None:
    """Photos and prompts side by side, the settings, then the results."""
    banner(models)
    how_to("score")
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            build_photo_panel(ui)
        with gr.Column(scale=3, min_width=300):
            build_prompt_panel(ui)
    with gr.Accordion("Settings", open=True):
        with gr.Row():
            ui["backbone"] = gr.Dropdown(
                models.backbone_choices, value=models.config.backbone, label="CLIP-IQA backbone", elem_id="backbone"
            )
            ui["temperature"] = gr.Radio(list(TEMPERATURES), value=next(iter(TEMPERATURES)), label="Temperature t")
            ui["checkpoint"] = gr.Dropdown(
                [("none", NO_GRMP), *((label, ref.id) for label, ref in models.startup_checkpoints.items())],
                value=models.default_checkpoint,
                label="GRMP-IQA checkpoint",
                elem_id="checkpoint",
                **SESSION_CHOICES,
            )
            ui["upload_ckpt"] = gr.UploadButton(
                "Upload GRMP-IQA checkpoint (.json + .safetensors)",
                file_count="multiple",
                file_types=[".json", ".safetensors"],
                size="sm",
                min_width=160,
            )
    ui["grmp_note"] = gr.Markdown(models.grmp_note, elem_id="grmp-note")
    ui["score"] = gr.Button("Score photos", variant="primary", elem_id="score-button")
    ui["status"] = gr.Markdown(elem_id="score-status")
    scores: list[Any] = ["str"] * len(registry.names())  # scores as text: 3 decimals each
    ui["ranking"] = gr.Dataframe(
        headers=rank_columns(),
        label="Ranking, best first (keep / reject by the threshold and method at the top)",
        datatype=["number", "html", *scores, "str", "str"],
        interactive=False,
        elem_id="ranking",
        max_height=420,
        # pixels: nothing is cut, a phone scrolls
        column_widths=["32px", "52px", *["80px"] * len(registry.names()), "76px", "300px"],
    )
    with gr.Row():
        with gr.Column(min_width=300):
            ui["photo_pick"] = gr.Dropdown(
                [],
                label="Breakdown for photo (or click a ranking row)",
                elem_id="photo-pick",
                **SESSION_CHOICES,
            )
            ui["breakdown"] = gr.Plot(label="What the scores are made of", elem_id="breakdown", visible=False)
        with gr.Column(min_width=300):
            ui["scatter"] = gr.Plot(label="CLIP-IQA against GRMP-IQA", elem_id="scatter", visible=False)
            build_map_panel(ui)  # beside the breakdown (below it on a phone)
    with gr.Accordion("Side by side: two photos' breakdowns mirrored", open=False, elem_id="side-accordion"):
        ui["compare_pick"] = gr.Dropdown(
            [], label="Beside it (the photo above is on the left)", elem_id="compare-pick", **SESSION_CHOICES
        )
        ui["side_by_side"] = gr.Plot(label="Side by side", elem_id="side-by-side", visible=False)
    ui["results_csv"] = gr.File(label="Download results (CSV)", interactive=False, height=60, visible=False)
    ui["share_link"] = gr.Textbox(
        label="Share link: the prompt table and settings as they are now (not the photos)",
        interactive=False,
        elem_id="share-link",
        buttons=["copy"],
    )


def build_map_panel(ui: dict) -> None:
    """ "Where in the photo": the quality map of the photo chosen for the breakdown, drawn on request."""
    with gr.Accordion("Where in the photo: quality map", open=True, elem_id="map-accordion"):
        gr.Markdown(MAP_HOW_TO, elem_classes=["how-to"])
        with gr.Row():
            ui["map_pair"] = gr.Dropdown(
                [MAP_OVERALL],
                value=MAP_OVERALL,
                label="Map of",
                elem_id="map-pair",
                scale=3,
                min_width=200,
                **SESSION_CHOICES,
            )
            ui["map_draw"] = gr.Button("Show where in the photo", elem_id="map-button", scale=1, min_width=160)
        ui["map_status"] = gr.Markdown(elem_id="map-status")
        ui["quality_map"] = gr.Plot(label="Quality map of the chosen photo", elem_id="quality-map", visible=False)
