"""The whole app: the tabs put together, their events wired, and the server launched."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

import gradio as gr
from starlette.middleware import Middleware

from iqa.app.about_tab import build_about_tab
from iqa.app.adapt_tab import AdaptHandlers, build_adapt_tab
from iqa.app.config import AppConfig, parse_args
from iqa.app.filter_tab import FilterHandlers, build_filter_tab
from iqa.app.lab_calibration import CalibrationHandlers, build_calibration_panel
from iqa.app.lab_search import SearchHandlers, build_search_panel
from iqa.app.lab_tab import build_lab_tab
from iqa.app.layout import CHARTS_JS, CSS, THEME, build_decision_bar
from iqa.app.models import Models
from iqa.app.outputs import (
    AdaptOutput,
    CalibrationOutput,
    CheckpointOutput,
    ClearedOutput,
    FilterOutput,
    LabOutput,
    MapOutput,
    PhotosOutput,
    PickOutput,
    PresetOutput,
    RankOutput,
    RowOutput,
    ScoreOutput,
    SearchOutput,
    ShareOutput,
    TableNameOutput,
    ThresholdOutput,
    WeightsOutput,
    ZipOutput,
    as_outputs,
    as_values,
)
from iqa.app.photo_panel import PhotoHandlers
from iqa.app.score_tab import build_score_tab
from iqa.app.security import SecurityHeaders, example_files
from iqa.app.session import Session, return_freed_memory_promptly
from iqa.app.share import ShareHandlers
from iqa.app.table import PromptTableHandlers
from iqa.clip.backbones import BackboneUnavailable
from iqa.clip.test_backbones import TEST_BACKBONE_WARNING


class Handlers(
    PhotoHandlers,
    PromptTableHandlers,
    FilterHandlers,
    AdaptHandlers,
    CalibrationHandlers,
    SearchHandlers,
    ShareHandlers,
):
    """Every event handler of the app, tab by tab; tests call them directly."""


def build_demo(config: AppConfig, models: Models | None = None) -> gr.Blocks:
    """The whole app; models are loaded here unless given."""
    models = models or Models(config)
    h = Handlers(models)
    ui: dict = {}
    with gr.Blocks(title="Photo quality: CLIP-IQA and GRMP-IQA", delete_cache=(3600, 86400)) as demo:
        ui["session"] = gr.State(Session(), time_to_live=config.session_ttl, delete_callback=h.end_session)
        gr.Markdown("# Photo quality with CLIP: CLIP-IQA and GRMP-IQA")
        build_decision_bar(ui)
        with gr.Tabs():
            with gr.Tab("Score", id="score"):
                build_score_tab(models, ui)
            with gr.Tab("Prompt lab", id="lab"):
                build_lab_tab(models, ui)
                build_calibration_panel(ui)
                build_search_panel(ui)
            with gr.Tab("Adapt", id="adapt"):
                build_adapt_tab(models, ui)
            with gr.Tab("Filter", id="filter"):
                build_filter_tab(models, ui)
            with gr.Tab("About", id="about"):
                build_about_tab(models, ui)
        expose_api(h, ui)  # first: the endpoints get their names before the page's events take theirs
        wire(h, ui)
        demo.load(as_outputs(h.restore_shared), None, ShareOutput.components(ui), api_visibility="private").then(
            h.share_link, share_inputs(ui), ui["share_link"], api_visibility="private"
        ).then(None, ui["share_link"], ui["share_link"], js=SHARE_URL_JS, api_visibility="private")
    return demo


def share_inputs(ui: dict) -> list:
    """What a share link holds: the prompt table and the settings."""
    return [ui[name] for name in ("prompts", "backbone", "temperature", "checkpoint", "threshold", "method")]


def wire(h: Handlers, ui: dict) -> None:
    """Every event of the page: what it reads, which handler runs, and the typed outputs it fills.

    Every change of what the results depend on (photos, any table edit, a preset, a file, a setting,
    a checkpoint) re-scores, then re-filters; a new threshold or method re-filters and re-ranks.
    The page's events are private: API clients call `expose_api`'s endpoints, which return plain values.
    """
    session, prompts, threshold, method = ui["session"], ui["prompts"], ui["threshold"], ui["method"]
    score_inputs, filter_inputs = _score_inputs(ui), [session, threshold, method]
    score_outputs = ScoreOutput.components(ui)
    score, filter_ = as_outputs(h.score), as_outputs(h.filter)
    private: dict = {"api_visibility": "private"}

    map_inputs, map_outputs = _map_inputs(ui), MapOutput.components(ui)
    redraw_map = as_outputs(h.refresh_map)

    def follow_map(event):
        """The quality map (once asked for) follows a new score or photo: a step after it, never inside it."""
        return event.then(redraw_map, map_inputs, map_outputs, trigger_mode="always_last", **private)

    def refilter(event):
        follow_map(event)
        return event.then(filter_, filter_inputs, FilterOutput.components(ui), **private)

    def rescore(event):
        return refilter(event.then(score, score_inputs, score_outputs, trigger_mode="always_last", **private))

    def edited(event):
        """A table change: name it in the preset box (kept as the custom table), then re-score."""
        named = event.then(as_outputs(h.table_changed), [prompts, session], TableNameOutput.components(ui), **private)
        return rescore(named)

    # a typed threshold is put in range and rounded in the box first: the box shows the value used
    shown = threshold.input(None, threshold, threshold, js=THRESHOLD_JS, **private)
    for event in (shown.then, method.input):
        event(filter_, filter_inputs, FilterOutput.components(ui), trigger_mode="always_last", **private).then(
            as_outputs(h.rerank), filter_inputs, RankOutput.components(ui), **private
        )
    ui["make_zip"].click(as_outputs(h.zip_kept), filter_inputs, ZipOutput.components(ui), **private)
    refilter(ui["score"].click(score, score_inputs, score_outputs, **private))

    photo_outputs = PhotosOutput.components(ui)
    rescore(ui["files"].upload(as_outputs(h.add_photos), [ui["files"], session], photo_outputs, **private))
    rescore(ui["examples"].click(as_outputs(h.add_examples), [session], photo_outputs, **private))
    clear_outputs = [[session, prompts], score_outputs]
    cleared_outputs = ClearedOutput.components(ui)
    for cleared in (
        ui["clear"].click(as_outputs(h.clear_photos), [session], cleared_outputs, **private),
        ui["files"].clear(as_outputs(h.clear_photos), [session], cleared_outputs, **private),
    ):
        refilter(cleared.then(as_outputs(h.clear_results), *clear_outputs, **private))
    rescore(ui["files"].delete(as_outputs(h.remove_upload), [session], photo_outputs, **private))

    preset_outputs = PresetOutput.components(ui)
    rescore(ui["preset"].input(as_outputs(h.choose_preset), [ui["preset"], session], preset_outputs, **private))
    edited(ui["prompt_file"].upload(h.load_prompts, ui["prompt_file"], prompts, **private))
    once = prompts.input(None, prompts, None, js=SAME_EDIT_JS, **private)
    rescore(once.success(as_outputs(h.table_changed), [prompts, session], TableNameOutput.components(ui), **private))
    for setting in (ui["backbone"], ui["temperature"]):
        refilter(setting.input(score, score_inputs, score_outputs, trigger_mode="always_last", **private))
    # .change, not .input: an uploaded or adapted checkpoint is chosen by the server, and re-scores too
    refilter(ui["checkpoint"].change(score, score_inputs, score_outputs, trigger_mode="always_last", **private))

    row_number = ui["row_number"]
    prompts.select(h.select_row, None, row_number, **private)
    edited(ui["add"].click(h.add_row, prompts, prompts, **private))
    edited(ui["delete"].click(h.delete_row, [prompts, row_number], prompts, **private))
    for button, handler in ((ui["up"], h.row_up), (ui["down"], h.row_down)):
        edited(button.click(as_outputs(handler), [prompts, row_number], RowOutput.components(ui), **private))
    ui["save"].click(h.save_prompts, [prompts, session], ui["saved_prompts"], **private)
    ui["upload_ckpt"].upload(
        as_outputs(h.upload_checkpoint), [ui["upload_ckpt"], session], CheckpointOutput.components(ui), **private
    )

    pick_inputs = [session, ui["photo_pick"], ui["compare_pick"]]
    follow_map(ui["photo_pick"].input(as_outputs(h.show_photo), pick_inputs, PickOutput.components(ui), **private))
    ui["compare_pick"].input(as_outputs(h.show_photo), pick_inputs, PickOutput.components(ui), **private)
    follow_map(
        ui["ranking"].select(
            as_outputs(h.pick_ranked), [session, ui["compare_pick"]], PickOutput.components(ui), **private
        )
    )
    ui["map_draw"].click(as_outputs(h.draw_map), map_inputs, map_outputs, **private)
    ui["map_pair"].input(redraw_map, map_inputs, map_outputs, trigger_mode="always_last", **private)

    link_inputs = share_inputs(ui)
    # the link follows every change, the server's included; the threshold's once it is put in range
    for event in [c.change for c in link_inputs if c is not threshold] + [shown.then]:
        event(h.share_link, link_inputs, ui["share_link"], trigger_mode="always_last", **private).then(
            None, ui["share_link"], ui["share_link"], js=SHARE_URL_JS, **private
        )

    lab_inputs = _lab_inputs(ui)
    ui["lab_run"].click(as_outputs(h.run_lab), lab_inputs, LabOutput.components(ui), **private)
    used = ui["lab_use"].click(
        as_outputs(h.use_lab_pairs), [ui["lab_table"], session], PresetOutput.components(ui), **private
    )
    rescore(used)
    # the lab's figures follow the table it now fills: ranked again, the chosen pairs marked on
    used.success(as_outputs(h.run_lab), lab_inputs, LabOutput.components(ui), **private)
    wire_lab_design(h, ui, rescore, refilter_to_link(h, ui, filter_inputs, link_inputs))
    adapting = ui["adapt_run"].click(h.start_adapting, [session], None, queue=False, **private)
    adapting.then(as_outputs(h.adapt), _adapt_inputs(ui), AdaptOutput.components(ui), **private)
    ui["adapt_stop"].click(h.stop_adapting, [session], None, **private)
    # an uploaded or adapted checkpoint is chosen at once: About names it beside what was loaded at start
    ui["checkpoint"].change(h.loaded, [session], ui["loaded"], **private)


def refilter_to_link(h: Handlers, ui: dict, filter_inputs: list, link_inputs: list):
    """What a threshold set by a handler sets off, as a typed one does: the filter, the ranking, the link."""

    def follow(event):
        filtered = event.then(
            as_outputs(h.filter), filter_inputs, FilterOutput.components(ui), api_visibility="private"
        )
        filtered.then(as_outputs(h.rerank), filter_inputs, RankOutput.components(ui), api_visibility="private")
        event.then(h.share_link, link_inputs, ui["share_link"], api_visibility="private").then(
            None, ui["share_link"], ui["share_link"], js=SHARE_URL_JS, api_visibility="private"
        )

    return follow


def wire_lab_design(h: Handlers, ui: dict, rescore, follow_threshold) -> None:
    """The lab's calibration, pair search and weights: each fills the prompt table or the threshold
    bar the way the first tab's own controls do, so the scores, the filter and the link follow."""
    private: dict = {"api_visibility": "private"}
    session = ui["session"]
    ui["cal_run"].click(
        as_outputs(h.calibrate_filter), _calibrate_inputs(ui), CalibrationOutput.components(ui), **private
    )
    used = ui["cal_use"].click(
        as_outputs(h.use_threshold), ui["cal_threshold"], ThresholdOutput.components(ui), **private
    )
    follow_threshold(used)
    search = ui["search_run"].click(
        as_outputs(h.search_pairs), _search_inputs(ui), SearchOutput.components(ui), **private
    )
    ui["search_stop"].click(None, None, None, cancels=[search], **private)
    use_inputs = [ui["search_table"], session]
    rescore(ui["search_use"].click(as_outputs(h.use_search_pairs), use_inputs, PresetOutput.components(ui), **private))
    rescore(ui["fit_run"].click(as_outputs(h.fit_weights), _fit_inputs(ui), WeightsOutput.components(ui), **private))


def _score_inputs(ui: dict) -> list:
    names = ("session", "prompts", "backbone", "temperature", "checkpoint", "threshold", "method")
    return [ui[name] for name in (*names, "photo_pick", "compare_pick")]


def _map_inputs(ui: dict) -> list:
    return [ui[name] for name in ("session", "prompts", "backbone", "temperature", "photo_pick", "map_pair")]


def _lab_inputs(ui: dict) -> list:
    return [ui[name] for name in ("lab_source", "lab_csv", "lab_files", "prompts", "backbone", "temperature")]


def _calibrate_inputs(ui: dict) -> list:
    return [*_lab_inputs(ui), ui["cal_target"], ui["cal_value"]]


def _search_inputs(ui: dict) -> list:
    return [*_lab_inputs(ui), ui["search_words"], ui["search_max_pairs"], ui["search_folds"]]


def _fit_inputs(ui: dict) -> list:
    return [*_lab_inputs(ui), ui["search_folds"], ui["session"]]


def _adapt_inputs(ui: dict) -> list:
    return [ui[name] for name in ("adapt_source", "adapt_csv", "adapt_files", "lam", "steps", "backbone", "session")]


def expose_api(h: Handlers, ui: dict) -> None:
    """The API: one endpoint per action, each returning plain values and files (never a visibility or
    choices update), with no trigger on the page. A client's session holds its photos and checkpoints
    between calls, as a page's does; results follow only the calls a client makes (no chained re-score)."""
    session = ui["session"]
    endpoints: list[tuple[str, Callable, list, list]] = [
        ("add_photos", h.add_photos, [ui["files"], session], PhotosOutput.api_components(ui)),
        ("add_examples", h.add_examples, [session], PhotosOutput.api_components(ui)),
        ("clear_photos", h.clear_photos, [session], ClearedOutput.api_components(ui)),
        ("load_preset", h.choose_preset, [ui["preset"], session], PresetOutput.api_components(ui)),
        ("load_prompts", h.load_prompts, [ui["prompt_file"]], [ui["prompts"]]),
        ("add_row", h.add_row, [ui["prompts"]], [ui["prompts"]]),
        ("delete_row", h.delete_row, [ui["prompts"], ui["row_number"]], [ui["prompts"]]),
        ("row_up", h.row_up, [ui["prompts"], ui["row_number"]], RowOutput.api_components(ui)),
        ("row_down", h.row_down, [ui["prompts"], ui["row_number"]], RowOutput.api_components(ui)),
        ("save_prompts", h.save_prompts, [ui["prompts"], session], [ui["saved_prompts"]]),
        ("upload_checkpoint", h.upload_checkpoint, [ui["upload_ckpt"], session], CheckpointOutput.api_components(ui)),
        ("score", h.score, _score_inputs(ui), ScoreOutput.api_components(ui)),
        ("breakdown", h.show_photo, [session, ui["photo_pick"], ui["compare_pick"]], PickOutput.api_components(ui)),
        ("quality_map", h.draw_map, _map_inputs(ui), MapOutput.api_components(ui)),
        ("filter", h.filter, [session, ui["threshold"], ui["method"]], FilterOutput.api_components(ui)),
        ("zip_kept", h.zip_kept, [session, ui["threshold"], ui["method"]], ZipOutput.api_components(ui)),
        ("share", h.share_link, share_inputs(ui), [ui["share_link"]]),
        ("prompt_lab", h.run_lab, _lab_inputs(ui), LabOutput.api_components(ui)),
        ("use_pairs", h.use_lab_pairs, [ui["lab_table"], session], PresetOutput.api_components(ui)),
        ("calibrate", h.calibrate_filter, _calibrate_inputs(ui), CalibrationOutput.api_components(ui)),
        ("use_threshold", h.use_threshold, [ui["cal_threshold"]], ThresholdOutput.api_components(ui)),
        ("search_pairs", h.search_pairs, _search_inputs(ui), SearchOutput.api_components(ui)),
        ("use_search", h.use_search_pairs, [ui["search_table"], session], PresetOutput.api_components(ui)),
        ("fit_weights", h.fit_weights, _fit_inputs(ui), WeightsOutput.api_components(ui)),
        ("adapt", h.adapt, _adapt_inputs(ui), AdaptOutput.api_components(ui)),
    ]
    for name, handler, inputs, outputs in endpoints:
        gr.on([], as_values(handler), inputs, outputs, api_name=name)


# Enter in a table cell sends the same input event twice (gradio 6.31): the second (the same table
# within half a second) is stopped in the browser, so that each edit scores once and warns once
SAME_EDIT_JS = """(table) => {
    const key = JSON.stringify(table), now = Date.now();
    if (key === window.lastEdit && now - window.lastEditAt < 500) throw new Error('the same edit again');
    window.lastEdit = key;
    window.lastEditAt = now;
    return table;
}"""

# the threshold as used: within [0, 1], with the page's three decimals (DIGITS)
THRESHOLD_JS = "(t) => Math.min(1, Math.max(0, Math.round(Number(t) * 1000) / 1000 || 0))"

# the handler returns "?share=..."; the browser puts its own address (as the user sees it) in front
SHARE_URL_JS = (
    "(query) => query && query.startsWith('?') ? window.location.origin + window.location.pathname + query : query"
)


def launch(demo: gr.Blocks, config: AppConfig, **kwargs):
    """Queue and serve; extra keyword arguments go to `Blocks.launch` (tests pass prevent_thread_lock)."""
    demo.queue(default_concurrency_limit=config.concurrency, max_size=64)
    middleware = Middleware(SecurityHeaders, on_spaces=bool(os.environ.get("SPACE_ID")))
    return demo.launch(
        server_name=config.host,
        server_port=config.port,
        max_file_size=config.max_file_size,
        allowed_paths=example_files(),
        theme=THEME,
        css=CSS,
        js=CHARTS_JS,
        footer_links=["api", "settings"],
        app_kwargs={"middleware": [middleware]},
        **kwargs,
    )


def log_to_console() -> None:
    """The library's INFO lines (weights, conversions, device and precision, caches) on stderr, one
    line each: the log a Space's operator reads. Other libraries stay at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("iqa").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    log_to_console()
    try:
        models = Models(config)
    except (BackboneUnavailable, ValueError) as err:  # ValueError: CheckpointMismatch, CheckpointError, ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config.is_test:
        print(f"warning: {TEST_BACKBONE_WARNING}", file=sys.stderr)
    return_freed_memory_promptly()
    launch(build_demo(config, models), config)
    return 0
