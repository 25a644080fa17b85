"""The About tab: the methods and their settings (from about.md, which the README links to), and what is loaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from iqa.app.layout import banner
from iqa.app.models import Models

ABOUT_FILE = Path(__file__).with_name("about.md")
LATEX: list[dict[str, str | bool]] = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "$", "right": "$", "display": False},
]


def about_text() -> str:
    """The methods, formulas, settings and citations: one file, shown here and linked from the README."""
    return ABOUT_FILE.read_text(encoding="utf-8")


def loaded_text(models: Models, session_checkpoints: Sequence[str] = ()) -> str:
    """What this server loaded at start, and the checkpoints this session uploaded or adapted since."""
    text = (
        f"**Loaded at start:** CLIP-IQA backbone {models.description}; {_downsizing(models.config.max_side)}. "
        f"GRMP-IQA checkpoints: {', '.join(models.startup_checkpoints) or 'none'}."
    )
    if session_checkpoints:
        own = ", ".join(session_checkpoints)
        return f"{text}\n\n**This session's own GRMP-IQA checkpoints** (first tab, Settings): {own}."
    return f"{text} {models.grmp_note}"


def build_about_tab(models: Models, ui: dict) -> None:
    banner(models)
    gr.Markdown(about_text(), latex_delimiters=LATEX)
    ui["loaded"] = gr.Markdown(loaded_text(models), elem_id="loaded")


def _downsizing(max_side: int) -> str:
    return f"photos downsized to {max_side} px on the long side on upload" if max_side else "photos kept at full size"
