"""Every handler error reaches the user as its message (`shown_as_message`)."""

from __future__ import annotations

import functools
import inspect
import sys
import traceback
from collections.abc import Callable

import gradio as gr


def shown_as_message(handler: Callable) -> Callable:
    """Wrap an event handler so that every error reaches the user as its message (gr.Error), never as
    Gradio's generic "Error". Unexpected ones are also logged with their traceback for the operator."""

    def as_message(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            return err
        if not isinstance(err, (ValueError, OSError)):
            traceback.print_exception(err, file=sys.stderr)
            return gr.Error(f"internal error ({type(err).__name__}: {err}); the server log has the details")
        return gr.Error(str(err) or type(err).__name__)

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
