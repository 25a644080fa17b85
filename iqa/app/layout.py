"""The look of the app: theme, CSS and the test-backbone banner every tab shows."""

from __future__ import annotations

import gradio as gr

from ..tiny_backbones import TEST_BACKBONE_WARNING
from .models import Models

THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = ".test-warning {background: #fff3cd; border: 1px solid #e0b100; border-radius: 6px; padding: 4px 12px;}"


def banner(models: Models) -> None:
    """The warning that scores are meaningless, on every tab, when a test backbone is loaded."""
    if models.config.is_test:
        gr.Markdown(f"⚠️ **{TEST_BACKBONE_WARNING}**", elem_classes=["test-warning"])
