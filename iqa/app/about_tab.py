"""The About tab: each registered method as its descriptor describes it (`Method.about`), what this
server uses (about.md), and what is loaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from iqa.app.layout import banner
from iqa.app.models import Models
from iqa.methods import registry

ABOUT_FILE = Path(__file__).with_name("about.md")
LATEX: list[dict[str, str | bool]] = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "$", "right": "$", "display": False},
]


def about_text() -> str:
    """Every registered method's formula, settings and citation (its `Method.about`; the name alone
    when it has none), then what this server uses (about.md)."""
    sections = [f"### {m.name}\n{m.about.strip()}".strip() for m in registry.methods()]
    return "\n\n".join([*sections, ABOUT_FILE.read_text(encoding="utf-8")])


def loaded_text(models: Models, session_checkpoints: Sequence[str] = ()) -> str:
    """What this server loaded at start, and the checkpoints this session uploaded or adapted since."""
    text = (
        f"**Loaded at start:** backbone {models.description}; {_downsizing(models.config.max_side)}. "
        f"{models.checkpoint_method} checkpoints: {', '.join(models.startup_checkpoints) or 'none'}."
    )
    if session_checkpoints:
        own = ", ".join(session_checkpoints)
        return f"{text}\n\n**This session's own {models.checkpoint_method} checkpoints** (first tab, Settings): {own}."
    return f"{text} {models.grmp_note}"


def build_about_tab(models: Models, ui: dict) -> None:
    banner(models)
    gr.Markdown(about_text(), latex_delimiters=LATEX)
    ui["loaded"] = gr.Markdown(loaded_text(models), elem_id="loaded")


def _downsizing(max_side: int) -> str:
    return f"photos downsized to {max_side} px on the long side on upload" if max_side else "photos kept at full size"
