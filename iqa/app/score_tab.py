"""The first tab, "Score": photos and prompt table in, ranking, breakdown, scatter and CSV out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import pandas as pd

from iqa.app import calls
from iqa.app.base import AppContext
from iqa.app.checkpoints import CheckpointHandlers
from iqa.app.events import Chains, on
from iqa.app.layout import banner, how_to
from iqa.app.messages import shown_as_message, warn
from iqa.app.method_settings import MethodSettings
from iqa.app.models import NO_CHECKPOINT, CheckpointRef, Models
from iqa.app.outputs import AxesOutput, MapOutput, PickOutput, RankOutput, ScatterOutput, ScoreOutput, ranking_layout
from iqa.app.photo_panel import build_photo_panel
from iqa.app.session import Session, icon_html
from iqa.app.table import build_prompt_panel, no_pair_reason, parse_table
from iqa.clip.features import FeatureStore
from iqa.methods import registry
from iqa.methods.clipiqa.quality_map import QualityMapError
from iqa.methods.prompts import PromptPair, is_attribute_set
from iqa.methods.results import PairScore
from iqa.report import charts
from iqa.report.compare import ComparedPhoto, ranked, rows_to_csv, split

DIGITS = 3  # every score, p and threshold on the page has three decimals
TEMPERATURES = {"checkpoint's logit scale": None, "t = 1 (the seed's formula)": 1.0}


def rank_columns(methods: Sequence[str] = ()) -> list[str]:
    """The ranking's columns: a score per chosen method (none chosen yet: those on by default)
    before the name, so that a phone shows them without scrolling sideways."""
    return ["#", "photo", *(methods or default_methods()), "decision", "name"]


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


class ScoreHandlers:
    """Scoring with the chosen methods, the ranking and its CSV, the breakdown of one photo (or two
    side by side), the scatter of two methods, and the quality map."""

    def __init__(self, app: AppContext, checkpoints: CheckpointHandlers):
        self.app, self.checkpoints = app, checkpoints
        self.models, self.config = app.models, app.config

    @shown_as_message
    def score(
        self,
        session: Session,
        prompts: pd.DataFrame,
        backbone: str,
        temperature: str,
        checkpoint: str,
        threshold: float,
        method: str,
        photo_pick: str | None = None,
        compare_pick: str | None = None,
        methods: Sequence[str] | None = None,
        progress=gr.Progress(),
    ) -> ScoreOutput:
        """Score the session's photos with the chosen `methods` (None: those on by default); prompt
        edits reuse cached image features. `photo_pick` (and `compare_pick`, shown beside it) stay
        chosen while they are among the photos."""
        self.app.use(session)
        chosen = chosen_methods(methods)
        store = self.app.store_or_default(backbone)
        pairs, status = parse_table(prompts, store.backbone.tokenizer)
        prompts = prompts.assign(status=status)
        valid = [p for p, s in zip(pairs, status) if p is not None and s == "ok"]
        session.methods = chosen
        if not session.photos:
            session.rows = []  # no warning: a setting may change before any photo is added
            return self._empty(session, prompts, "No photos to score.")
        followers = [name for name in chosen if registry.method(name).follows_prompts]
        if followers and not valid:
            session.rows = []
            reason = no_pair_reason(status)
            warn(reason)
            return self._empty(session, prompts, reason)
        ref = self.checkpoints.chosen(checkpoint, session)
        settings = MethodSettings(tuple(valid), TEMPERATURES[temperature], ref)
        requests, unscored = settings.requests(chosen)
        start = time.perf_counter()
        scored = calls.score_photos(
            self.models, self.app.caches, store, requests, session.photos, calls.progress_bar(progress)
        )
        session.rows = scored.rows
        session.attributes = bool(followers) and is_attribute_set(valid)
        session.settings = self._settings(store, scored, valid, ref)
        elapsed = time.perf_counter() - start
        used = f"{len(valid)} pair(s)" if followers else ", ".join(r.name for r in requests) or "no method"
        message = (
            f"Scored {len(session.photos)} photo(s) with {used} in {elapsed:.2f} s on "
            f"{store.backbone.description}; {scored.encoded} image(s) encoded, the rest from the feature cache."
        )
        with_checkpoint = {r.name for r in requests if r.checkpoint is not None}
        for name, error in scored.errors.items():
            warn(f"{name} checkpoint not used: {error}" if name in with_checkpoint else f"{name} not scored: {error}")
        for name, description in scored.descriptions.items():
            if ref is not None and name in with_checkpoint:
                message += f" {name}: {self.models.info(ref).label} on {description}."
        message += "".join(f" {name}: {why}." for name, why in unscored.items())
        if session.attributes:
            message += " " + ATTRIBUTES_NOTE
        names = [row.name for row in self.ordered(session, method)]
        photo_pick = photo_pick if photo_pick in names else names[0]
        compare_pick = (
            compare_pick
            if compare_pick in names and compare_pick != photo_pick
            else next((n for n in names if n != photo_pick), None)
        )
        rank = self.rerank(session, threshold, method)
        return ScoreOutput(
            session,
            prompts,
            rank.ranking,
            gr.update(choices=names, value=photo_pick),
            self.breakdown(session, photo_pick),
            gr.update(choices=names, value=compare_pick),
            self.side_by_side(session, photo_pick, compare_pick),
            self.scatter(session, photo_pick),
            rank.results_csv,
            message,
            self._checkpoint_note(ref),
        )

    def _checkpoint_note(self, ref: CheckpointRef | None) -> str:
        """The start-up note on the checkpoints while it still holds (not once one of the session's scores)."""
        own = ref is not None and ref not in self.models.startup_checkpoints.values()
        return "" if own else self.models.grmp_note

    def _settings(
        self, store: FeatureStore, scored: calls.Scored, pairs: list[PromptPair], ref: CheckpointRef | None
    ) -> dict[str, object]:
        """How the results were made, as the CSV's last columns (no server paths): the backbone, the
        prompt pairs when a method follows them, and each method's temperature and checkpoint."""
        backbone = store.backbone
        settings: dict[str, object] = {
            "backbone": backbone.name,
            "weights": Path(self.config.weights).name if self.config.weights else backbone.pretrained or "none",
        }
        results = scored.rows[0].results if scored.rows else {}
        for name, result in results.items():
            method = registry.method(name)
            if "checkpoint" in method.arguments and ref is not None:
                info = self.models.info(ref)
                settings[f"{method.column}_checkpoint"] = f"{info.label} on {info.backbone}"
            if result.temperature is not None:
                settings[f"{method.column}_temperature"] = f"{result.temperature:g}"
            if method.follows_prompts and "prompt_pairs" not in settings:
                settings["prompt_pairs"] = "; ".join(
                    f"{p.positive} / {p.negative} (weight {p.weight:g})" for p in pairs
                )
        return settings

    def _empty(self, session: Session, prompts: pd.DataFrame, status: str) -> ScoreOutput:
        return ScoreOutput(
            session,
            prompts,
            pd.DataFrame(columns=rank_columns(session.methods)),
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
    def clear_results(self, session: Session, prompts: pd.DataFrame) -> ScoreOutput:
        """After the photos are cleared: no ranking, charts or downloads are left over."""
        session.rows = []
        return self._empty(session, prompts, "No photos yet.")

    def decision_method(self, session: Session, method: str) -> str | None:
        """The method decisions are made by: `method`, the first method scored when `method` was
        not, and with attribute prompts a method that does not follow them or nothing: attribute
        prompts give no quality score."""
        scored = [name for name in shown_methods(session) if any(name in row.results for row in session.rows)]
        if not scored:
            return None
        if session.attributes:  # only a method that does not follow the prompt table gives a score
            return next((name for name in scored if not registry.method(name).follows_prompts), None)
        return method if method in scored else scored[0]

    def ordered(self, session: Session, method: str) -> list[ComparedPhoto]:
        """Best first by the decision method; in the order added when there is none."""
        by = self.decision_method(session, method)
        return ranked(session.rows, by) if by else list(session.rows)

    @shown_as_message
    def rerank(self, session: Session, threshold: float, method: str) -> RankOutput:
        """The ranking table and its CSV download, with keep/reject at `threshold` by `method`."""
        if not session.rows:
            return RankOutput(pd.DataFrame(columns=rank_columns(session.methods)), None)
        by = self.decision_method(session, method)
        kept_names = {row.name for row in split(session.rows, threshold, by)[0]} if by else set()
        columns = ["#", "photo", *_score_columns(session), "decision", "name"]
        records = []
        for i, row in enumerate(self.ordered(session, method), 1):
            decision = ("keep" if row.name in kept_names else "reject") if by else "—"
            icon = icon_html(session.icons.get(row.name, ""))
            records.append([i, icon, *_score_cells(session, row), decision, row.name])
        table = pd.DataFrame(records, columns=columns)
        if not any(row.results for row in session.rows):  # no chosen method could score: nothing to download
            return RankOutput(table, None)
        csv_path = session.directory(self.config.work_dir) / "iqa-results.csv"
        csv_path.write_text(rows_to_csv(session.rows, threshold, by, session.settings), encoding="utf-8")
        return RankOutput(table, str(csv_path))

    @shown_as_message
    def pick_ranked(self, session: Session, compare_pick: str | None, event: gr.SelectData) -> PickOutput:
        """Clicking a row of the ranking shows that photo's breakdown."""
        name = event.row_value[-1]  # the last column, whatever the attribute columns before it
        return self.show_photo(session, name, compare_pick)

    @shown_as_message
    def show_photo(self, session: Session, photo_pick: str | None, compare_pick: str | None) -> PickOutput:
        """One photo chosen: its breakdown, its place in the scatter, and beside the other photo."""
        return PickOutput(
            gr.update(value=photo_pick),
            self.breakdown(session, photo_pick),
            self.side_by_side(session, photo_pick, compare_pick),
            self.scatter(session, photo_pick),
        )

    @staticmethod
    @shown_as_message
    def breakdown(session: Session, name: str | None):
        row = next((r for r in session.rows if r.name == name), None)
        if row is None:
            return None
        results = [row.results[m] for m in shown_methods(session) if m in row.results]
        return charts.pair_breakdown(results, attributes=session.attributes, name=row.name)

    @staticmethod
    def scatter(session: Session, selected: str | None):
        """One chosen method against another (`scatter_axes`: by default the first two chosen that were
        scored), or None (no box) until two were scored."""
        axes = scatter_axes(session, *session.axes)
        if axes is None:
            return None
        return charts.score_scatter(session.rows, selected, axes)

    @shown_as_message
    def choose_axes(
        self, session: Session, scatter_x: str | None, scatter_y: str | None, photo_pick: str | None
    ) -> ScatterOutput:
        """The scatter's two methods, chosen on the page (kept for the session's later scores)."""
        session.axes = (scatter_x, scatter_y)
        return ScatterOutput(self.scatter(session, photo_pick))

    @staticmethod
    @shown_as_message
    def follow_methods(
        methods: Sequence[str] | None, method: str, scatter_x: str | None, scatter_y: str | None
    ) -> AxesOutput:
        """The chooser changed: the decision bar and the scatter's axes offer the chosen methods (each
        keeps its choice while it is still chosen)."""
        chosen = chosen_methods(methods)
        x = scatter_x if scatter_x in chosen else chosen[0] if chosen else None
        y = scatter_y if scatter_y in chosen and scatter_y != x else next((m for m in chosen if m != x), None)
        return AxesOutput(
            gr.update(choices=chosen, value=method if method in chosen else next(iter(chosen), None)),
            gr.update(choices=chosen, value=x),
            gr.update(choices=chosen, value=y),
        )

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
        prompts: pd.DataFrame,
        backbone: str,
        temperature: str,
        photo_pick: str | None,
        map_pair: str | None,
        progress=gr.Progress(),
    ) -> MapOutput:
        """The map button: the quality map of the chosen photo, which from then on follows the photo,
        the pair, the prompt table and the settings (`refresh_map`)."""
        session.map_open = True
        return self.refresh_map(session, prompts, backbone, temperature, photo_pick, map_pair, progress)

    @shown_as_message
    def refresh_map(
        self,
        session: Session,
        prompts: pd.DataFrame,
        backbone: str,
        temperature: str,
        photo_pick: str | None,
        map_pair: str | None,
        progress=gr.Progress(),
    ) -> MapOutput:
        """The quality map again after what it depends on changed, or none (never a stale one).

        Runs after a re-score, never inside it; window features come from the backbone's
        FeatureStore, so a prompt edit re-draws encoding only the new texts.
        """
        self.app.use(session)
        store = self.app.store_or_default(backbone)
        pairs, status = parse_table(prompts, store.backbone.tokenizer)
        valid = [p for p, s in zip(pairs, status) if p is not None and s == "ok"]
        labels = [_pair_label(p) for p in valid]
        value = map_pair if map_pair in labels else MAP_OVERALL
        choices = gr.update(choices=[MAP_OVERALL, *labels], value=value)
        photo = next((p for p in session.photos if p.name == photo_pick), None)
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


def chosen_methods(methods: Sequence[str] | None) -> list[str]:
    """The registered methods among `methods`, in the registry's order (None: those on by default;
    an API client may send any text)."""
    wanted = default_methods() if methods is None else set(methods)
    return [name for name in registry.names() if name in wanted]


def default_methods() -> list[str]:
    """The chooser's methods when the page opens: those registered as on by default."""
    return [m.name for m in registry.methods() if m.on_by_default]


def scatter_axes(session: Session, x: str | None = None, y: str | None = None) -> tuple[str, str] | None:
    """The two methods the scatter compares: `x` and `y` when both were scored and differ, else the
    first two chosen methods that were scored; None when fewer than two were."""
    scored = [m for m in shown_methods(session) if any(m in row.results for row in session.rows)]
    if x in scored and y in scored and x != y:
        return x, y
    return (scored[0], scored[1]) if len(scored) >= 2 else None


def shown_methods(session: Session) -> list[str]:
    """The methods the session's results are shown by: those chosen when it scored, else (results
    made elsewhere, e.g. a test's) every registered method that has a result."""
    if session.methods:
        return list(session.methods)
    return [name for name in registry.names() if any(name in row.results for row in session.rows)]


def _attribute_method(session: Session, name: str) -> bool:
    """Whether `name`'s column is one per attribute prompt: attribute prompts, a method that follows them."""
    return session.attributes and registry.method(name).follows_prompts and name in session.rows[0].results


def _score_columns(session: Session) -> list[str]:
    """A score column per chosen method, or with attribute prompts one per attribute for the
    methods that follow the prompt table."""
    columns = []
    for name in shown_methods(session):
        if _attribute_method(session, name):
            columns += [_attribute(p) for p in session.rows[0].results[name].pairs]
        else:
            columns.append(name)
    return columns


def _score_cells(session: Session, row: ComparedPhoto) -> list[str]:
    """`row`'s values under `_score_columns`."""
    cells = []
    for name in shown_methods(session):
        if _attribute_method(session, name):
            cells += [f"{p.p:.{DIGITS}f}" for p in row.results[name].pairs]
        else:
            cells.append(_rounded(row, name))
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
    """Photos and prompts side by side, the methods and settings, then the results."""
    banner(models)
    how_to("score")
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            build_photo_panel(ui)
        with gr.Column(scale=3, min_width=300):
            build_prompt_panel(ui)
    with gr.Accordion("Methods and settings", open=True):
        ui["methods"] = gr.CheckboxGroup(
            registry.names(), value=default_methods(), label="Methods (the About tab describes each)", elem_id="methods"
        )
        with gr.Row():
            ui["backbone"] = gr.Dropdown(
                models.backbone_choices, value=models.config.backbone, label="Backbone", elem_id="backbone"
            )
            ui["temperature"] = gr.Radio(list(TEMPERATURES), value=next(iter(TEMPERATURES)), label="Temperature t")
            ui["checkpoint"] = gr.Dropdown(
                [("none", NO_CHECKPOINT), *((label, ref.id) for label, ref in models.startup_checkpoints.items())],
                value=models.default_checkpoint,
                label=f"{models.checkpoint_method} checkpoint",
                elem_id="checkpoint",
                **SESSION_CHOICES,
            )
            ui["upload_ckpt"] = gr.UploadButton(
                f"Upload {models.checkpoint_method} checkpoint (.json + .safetensors)",
                file_count="multiple",
                file_types=[".json", ".safetensors"],
                size="sm",
                min_width=160,
            )
    ui["grmp_note"] = gr.Markdown(models.grmp_note, elem_id="grmp-note")
    ui["score"] = gr.Button("Score photos", variant="primary", elem_id="score-button")
    ui["status"] = gr.Markdown(elem_id="score-status")
    datatype, widths = ranking_layout(rank_columns())  # each score's header whole; a phone scrolls
    ui["ranking"] = gr.Dataframe(
        headers=rank_columns(),
        label="Ranking, best first (keep / reject by the threshold and method at the top)",
        datatype=datatype,
        interactive=False,
        elem_id="ranking",
        max_height=420,
        column_widths=widths,
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
            chosen = default_methods()
            with gr.Row():
                ui["scatter_x"] = gr.Dropdown(
                    chosen, value=chosen[0] if chosen else None, label="Scatter: across", elem_id="scatter-x"
                )
                ui["scatter_y"] = gr.Dropdown(
                    chosen, value=chosen[1] if len(chosen) > 1 else None, label="against", elem_id="scatter-y"
                )
            ui["scatter"] = gr.Plot(label="One method against another", elem_id="scatter", visible=False)
            build_map_panel(ui)  # beside the breakdown (below it on a phone)
    with gr.Accordion("Side by side: two photos' breakdowns mirrored", open=False, elem_id="side-accordion"):
        ui["compare_pick"] = gr.Dropdown(
            [], label="Beside it (the photo above is on the left)", elem_id="compare-pick", **SESSION_CHOICES
        )
        ui["side_by_side"] = gr.Plot(label="Side by side", elem_id="side-by-side", visible=False)
    ui["results_csv"] = gr.File(label="Download results (CSV)", interactive=False, height=60, visible=False)
    ui["share_link"] = gr.Textbox(
        label="Share link: the prompt table, methods and settings as they are now (not the photos)",
        interactive=False,
        elem_id="share-link",
        buttons=["copy"],
    )


def wire_score_tab(h: ScoreHandlers, ui: dict, chains: Chains) -> None:
    """The Score tab's own events: scoring on request and on every setting, a photo picked, the map,
    the scatter's axes; what the results depend on elsewhere (photos, the table) re-scores through `chains`."""
    chains.refilter(on(ui["score"].click, h.score, ui))
    for setting in (ui["backbone"], ui["temperature"], ui["methods"]):
        chains.refilter(on(setting.input, h.score, ui, trigger_mode="always_last"))
    # .change, not .input: an uploaded or adapted checkpoint is chosen by the server, and re-scores too
    chains.refilter(on(ui["checkpoint"].change, h.score, ui, trigger_mode="always_last"))
    on(ui["methods"].change, h.follow_methods, ui)  # a shared link's methods too
    for axis in (ui["scatter_x"], ui["scatter_y"]):
        on(axis.input, h.choose_axes, ui, trigger_mode="always_last")
    chains.follow_map(on(ui["photo_pick"].input, h.show_photo, ui))
    on(ui["compare_pick"].input, h.show_photo, ui)
    chains.follow_map(on(ui["ranking"].select, h.pick_ranked, ui))
    on(ui["map_draw"].click, h.draw_map, ui)
    on(ui["map_pair"].input, h.refresh_map, ui, trigger_mode="always_last")


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
