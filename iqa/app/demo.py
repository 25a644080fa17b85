"""The whole app: the tabs put together, their events wired, and the server launched."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import gradio as gr
from starlette.middleware import Middleware

from ..backbones import BackboneUnavailable
from ..tiny_backbones import TEST_BACKBONE_WARNING
from .about_tab import build_about_tab
from .adapt_tab import AdaptHandlers, build_adapt_tab
from .config import AppConfig, parse_args
from .filter_tab import FilterHandlers, build_filter_tab
from .lab_tab import build_lab_tab
from .layout import CSS, THEME
from .models import Models
from .outputs import (
    AdaptOutput,
    CheckpointOutput,
    FilterOutput,
    LabOutput,
    PhotosOutput,
    PickOutput,
    RankOutput,
    RowOutput,
    ScoreOutput,
    as_outputs,
)
from .photo_panel import PhotoHandlers
from .score_tab import build_score_tab
from .security import SecurityHeaders, example_files
from .session import Session, return_freed_memory_promptly
from .table import PromptTableHandlers


class Handlers(PhotoHandlers, PromptTableHandlers, FilterHandlers, AdaptHandlers):
    """Every event handler of the app, tab by tab; tests call them directly."""


def build_demo(config: AppConfig, models: Models | None = None) -> gr.Blocks:
    """The whole app; models are loaded here unless given."""
    models = models or Models(config)
    h = Handlers(models)
    ui: dict = {}
    with gr.Blocks(title="Photo quality: CLIP-IQA and GRMP-IQA", delete_cache=(3600, 86400)) as demo:
        ui["session"] = gr.State(Session(), time_to_live=config.session_ttl, delete_callback=h.end_session)
        gr.Markdown("# Photo quality with CLIP: CLIP-IQA and GRMP-IQA")
        with gr.Tabs():
            with gr.Tab("Score and compare", id="score"):
                build_score_tab(models, ui)
            with gr.Tab("Prompt lab", id="lab"):
                build_lab_tab(models, ui)
            with gr.Tab("Adapt GRMP-IQA", id="adapt"):
                build_adapt_tab(models, ui)
            with gr.Tab("Filter", id="filter"):
                build_filter_tab(models, ui)
            with gr.Tab("About", id="about"):
                build_about_tab(models)
        wire(h, ui)
    return demo


def wire(h: Handlers, ui: dict) -> None:
    """Every event: what it reads, which handler runs, and the typed outputs it fills."""
    session, prompts, threshold, method = ui["session"], ui["prompts"], ui["threshold"], ui["method"]
    score_inputs = [session, prompts, ui["backbone"], ui["temperature"], ui["checkpoint"], threshold, method]
    score_outputs = ScoreOutput.components(ui)
    filter_inputs = [session, threshold, method]
    score, filter_ = as_outputs(h.score), as_outputs(h.filter)

    def then_score(event):
        return event.then(score, score_inputs, score_outputs, api_visibility="private").then(
            filter_, filter_inputs, FilterOutput.components(ui), api_visibility="private"
        )

    for event, name in ((threshold.input, "filter"), (method.input, "filter_method")):
        event(filter_, filter_inputs, FilterOutput.components(ui), api_name=name, trigger_mode="always_last").then(
            as_outputs(h.rerank), filter_inputs, RankOutput.components(ui), api_visibility="private"
        )
    ui["make_zip"].click(h.zip_kept, filter_inputs, ui["kept_zip"], api_name="zip_kept")
    ui["score"].click(score, score_inputs, score_outputs, api_name="score").then(
        filter_, filter_inputs, FilterOutput.components(ui), api_visibility="private"
    )
    photo_outputs = PhotosOutput.components(ui)
    then_score(
        ui["files"].upload(as_outputs(h.add_photos), [ui["files"], session], photo_outputs, api_name="add_photos")
    )
    then_score(ui["examples"].click(as_outputs(h.add_examples), [session], photo_outputs, api_name="add_examples"))
    ui["clear"].click(as_outputs(h.clear_photos), [session], photo_outputs, api_name="clear_photos")
    ui["files"].clear(as_outputs(h.clear_photos), [session], photo_outputs, api_visibility="private")
    then_score(ui["preset"].input(h.load_preset, ui["preset"], prompts, api_name="load_preset"))
    then_score(ui["prompt_file"].upload(h.load_prompts, ui["prompt_file"], prompts, api_name="load_prompts"))
    prompts.input(score, score_inputs, score_outputs, api_name="rescore", trigger_mode="always_last")
    for setting in (ui["backbone"], ui["temperature"], ui["checkpoint"]):
        setting.input(score, score_inputs, score_outputs, api_visibility="private")
    row_number = ui["row_number"]
    prompts.select(h.select_row, None, row_number, api_visibility="private")
    ui["add"].click(h.add_row, prompts, prompts, api_name="add_row")
    ui["delete"].click(h.delete_row, [prompts, row_number], prompts, api_name="delete_row")
    ui["up"].click(as_outputs(h.row_up), [prompts, row_number], RowOutput.components(ui), api_name="row_up")
    ui["down"].click(as_outputs(h.row_down), [prompts, row_number], RowOutput.components(ui), api_name="row_down")
    ui["save"].click(h.save_prompts, [prompts, session], ui["saved_prompts"], api_name="save_prompts")
    ui["upload_ckpt"].upload(
        as_outputs(h.upload_checkpoint),
        [ui["upload_ckpt"], session],
        CheckpointOutput.components(ui),
        api_name="upload_checkpoint",
    )
    ui["photo_pick"].input(h.breakdown, [session, ui["photo_pick"]], ui["breakdown"], api_name="breakdown")
    ui["ranking"].select(as_outputs(h.pick_ranked), [session], PickOutput.components(ui), api_visibility="private")
    ui["lab_run"].click(
        as_outputs(h.run_lab),
        [ui["lab_source"], ui["lab_csv"], ui["lab_files"], prompts, ui["backbone"], ui["temperature"]],
        LabOutput.components(ui),
        api_name="prompt_lab",
    )
    ui["adapt_run"].click(
        as_outputs(h.adapt),
        [ui["adapt_source"], ui["adapt_csv"], ui["adapt_files"], ui["lam"], ui["steps"], ui["backbone"], session],
        AdaptOutput.components(ui),
        api_name="adapt",
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
        footer_links=["api", "settings"],
        app_kwargs={"middleware": [middleware]},
        **kwargs,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
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
