"""The whole app: the tabs put together, their events wired, and the server launched."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import gradio as gr
from starlette.middleware import Middleware

from iqa.app.about_tab import build_about_tab
from iqa.app.adapt_tab import AdaptHandlers, build_adapt_tab, wire_adapt_tab
from iqa.app.base import AppContext
from iqa.app.checkpoints import CheckpointHandlers, wire_checkpoints
from iqa.app.config import AppConfig, parse_args
from iqa.app.events import Chains, Components, endpoint
from iqa.app.filter_tab import FilterHandlers, build_filter_tab, wire_filter_tab
from iqa.app.lab_calibration import CalibrationHandlers, build_calibration_panel, wire_calibration_panel
from iqa.app.lab_search import SearchHandlers, build_search_panel, wire_search_panel
from iqa.app.lab_tab import LabHandlers, build_lab_tab, wire_lab_tab
from iqa.app.layout import CHARTS_JS, CSS, THEME, build_decision_bar
from iqa.app.models import Models
from iqa.app.photo_panel import PhotoHandlers, wire_photo_panel
from iqa.app.score_tab import ScoreHandlers, build_score_tab, wire_score_tab
from iqa.app.security import SecurityHeaders, example_files
from iqa.app.session import Session, return_freed_memory_promptly
from iqa.app.share import ShareHandlers, wire_share
from iqa.app.table import PromptTableHandlers, wire_prompt_panel
from iqa.clip.backbones import BackboneUnavailable
from iqa.clip.test_backbones import TEST_BACKBONE_WARNING
from iqa.methods import registry


class Handlers:
    """Every tab's handlers, each given what it needs (the shared `AppContext`, and the handlers of
    other tabs it asks) explicitly; tests call them directly."""

    def __init__(self, models: Models):
        self.app = app = AppContext(models)
        self.models, self.config = models, models.config
        self.photos = PhotoHandlers(app)
        self.table = PromptTableHandlers(app)
        self.checkpoints = CheckpointHandlers(app)
        self.scoring = ScoreHandlers(app, self.checkpoints)
        self.filtering = FilterHandlers(app, self.scoring)
        self.lab = LabHandlers(app)
        self.calibration = CalibrationHandlers(app, self.lab)
        self.search = SearchHandlers(app, self.lab)
        self.adapting = AdaptHandlers(app, self.lab, self.checkpoints)
        self.share = ShareHandlers(app)


def build_demo(config: AppConfig, models: Models | None = None) -> gr.Blocks:
    """The whole app; models are loaded here unless given."""
    models = models or Models(config)
    h = Handlers(models)
    ui = Components()
    names = ", ".join(registry.names())
    with gr.Blocks(title=f"Photo quality: {names}", delete_cache=(3600, 86400)) as demo:
        ui["session"] = gr.State(Session(), time_to_live=config.session_ttl, delete_callback=h.app.end_session)
        gr.Markdown(f"# Photo quality with CLIP: {names}")
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
        wire(h, ui, demo)
    return demo


def wire(h: Handlers, ui: Components, demo: gr.Blocks) -> None:
    """Every tab's events, each wired by its own module; `Chains` is what a change sets off on the
    page (re-score, re-filter, the map, the link). The page's events are private: API clients call
    `expose_api`'s endpoints, which return plain values."""
    chains = Chains(h.scoring, h.filtering, h.table, h.share, ui)
    wire_photo_panel(h.photos, ui, chains)
    wire_prompt_panel(h.table, ui, chains)
    wire_checkpoints(h.checkpoints, ui)
    wire_score_tab(h.scoring, ui, chains)
    threshold_shown = wire_filter_tab(h.filtering, ui, chains)
    wire_lab_tab(h.lab, ui, chains)
    wire_calibration_panel(h.calibration, ui, chains)
    wire_search_panel(h.search, ui, chains)
    wire_adapt_tab(h.adapting, ui, chains)
    wire_share(h.share, ui, chains, demo, threshold_shown)


def expose_api(h: Handlers, ui: Components) -> None:
    """The API: one endpoint per action, each returning plain values and files (never a visibility or
    choices update), with no trigger on the page; its inputs are the handler's parameters. A
    client's session holds its photos and checkpoints between calls, as a page's does; results
    follow only the calls a client makes (no chained re-score)."""
    # the handlers returning a plain value, not an `Outputs`: the component it fills
    plain = {
        "load_prompts": "prompts",
        "add_row": "prompts",
        "delete_row": "prompts",
        "save_prompts": "saved_prompts",
        "share": "share_link",
    }
    handlers = {
        "add_photos": h.photos.add_photos,
        "add_examples": h.photos.add_examples,
        "clear_photos": h.photos.clear_photos,
        "load_preset": h.table.choose_preset,
        "load_prompts": h.table.load_prompts,
        "add_row": h.table.add_row,
        "delete_row": h.table.delete_row,
        "row_up": h.table.row_up,
        "row_down": h.table.row_down,
        "save_prompts": h.table.save_prompts,
        "upload_checkpoint": h.checkpoints.upload_checkpoint,
        "score": h.scoring.score,
        "breakdown": h.scoring.show_photo,
        "quality_map": h.scoring.draw_map,
        "filter": h.filtering.filter,
        "zip_kept": h.filtering.zip_kept,
        "share": h.share.share_link,
        "prompt_lab": h.lab.run_lab,
        "use_pairs": h.lab.use_lab_pairs,
        "calibrate": h.calibration.calibrate_filter,
        "use_threshold": h.calibration.use_threshold,
        "search_pairs": h.search.search_pairs,
        "use_search": h.search.use_search_pairs,
        "fit_weights": h.search.fit_weights,
        "adapt": h.adapting.adapt,
    }
    for name, handler in handlers.items():
        endpoint(name, handler, ui, out=[ui[plain[name]]] if name in plain else None)


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
