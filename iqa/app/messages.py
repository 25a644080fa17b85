"""Every handler error reaches the user as its message (`shown_as_message`), as text.

Gradio renders a notice's message as HTML, so "<name>.json" would vanish as an unknown tag; every
message is escaped first (`as_text`), and `warn` / `inform` are the app's gr.Warning / gr.Info.
"""

from __future__ import annotations

import functools
import html
import inspect
import sys
import traceback
from collections.abc import Callable

import gradio as gr


def as_text(message: str) -> str:
    """`message` as the page should show it: its <, > and & as characters, not markup."""
    return html.escape(message, quote=False)


def warn(message: str) -> None:
    gr.Warning(as_text(message))


def inform(message: str) -> None:
    gr.Info(as_text(message))


class TextError(gr.Error):
    """A gr.Error whose message is already escaped (a handler called by another is wrapped twice)."""


def shown_as_message(handler: Callable) -> Callable:
    """Wrap an event handler so that every error reaches the user as its message (gr.Error), never as
    Gradio's generic "Error". Unexpected ones are also logged with their traceback for the operator."""

    def as_message(err: Exception) -> gr.Error:
        if isinstance(err, TextError):
            return err
        if isinstance(err, gr.Error):
            return TextError(as_text(err.message), err.duration, err.visible, err.title, err.print_exception)
        if not isinstance(err, (ValueError, OSError)):
            traceback.print_exception(err, file=sys.stderr)
            return TextError(as_text(f"internal error ({type(err).__name__}: {err}); the server log has the details"))
        return TextError(as_text(str(err) or type(err).__name__))

    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def generator(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except Exception as err:
                raise as_message(err) from err

        return generator

    @functools.wraps(handler)
    def function(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as err:
            raise as_message(err) from err

    return function
