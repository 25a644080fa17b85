"""Events built from handlers: a handler's inputs are the components named like its parameters, its
outputs those named like the fields of the `Outputs` it returns (`iqa.app.outputs`).

So a handler's signature is the one place that says what an event reads: a parameter without a
component of its name fails when the page is built, never as a value in the wrong place at run time.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

import gradio as gr

from iqa.app.outputs import Outputs, as_outputs, as_values

PRIVATE: dict[str, Any] = {"api_visibility": "private"}  # the page's events: API clients call `expose_api`'s

# parameters Gradio fills itself (not from a component): by their annotation, or a `gr.Progress` default
_INJECTED = (gr.SelectData, gr.Request, gr.DeletedFileData, gr.EventData)


class Components(dict):
    """The page's components by name (a handler's parameter or an `Outputs` field); looking up a
    missing name says which, and which names there are."""

    def __missing__(self, name: str):
        raise KeyError(f"no component named {name!r}; the page has {', '.join(sorted(self))}")


def parameters(handler: Callable) -> list[str]:
    """The names of `handler`'s parameters that components fill, in order."""
    hints = _hints(handler)
    names = []
    for name, parameter in inspect.signature(handler).parameters.items():
        hint = hints.get(name)
        injected = isinstance(hint, type) and issubclass(hint, _INJECTED)
        if injected or isinstance(parameter.default, gr.Progress):
            continue
        names.append(name)
    return names


def inputs(handler: Callable, ui: Mapping[str, Any]) -> list[Any]:
    """The input components of `handler`: one per parameter, by name; KeyError naming the first missing."""
    missing = [name for name in parameters(handler) if name not in ui]
    if missing:
        raise KeyError(f"{_name(handler)}: no component for parameter(s) {', '.join(missing)}")
    return [ui[name] for name in parameters(handler)]


def result_type(handler: Callable) -> type[Outputs] | None:
    """The `Outputs` class `handler` returns (or yields), or None when it returns a plain value."""
    hint = _hints(handler).get("return")
    if typing.get_origin(hint) in (Iterator, Generator):  # a generator handler: what it yields
        hint = typing.get_args(hint)[0]
    return hint if isinstance(hint, type) and issubclass(hint, Outputs) else None


def outputs(handler: Callable, ui: Mapping[str, Any], api: bool = False) -> list[Any]:
    """The output components of `handler`'s `Outputs` (an API endpoint's leave the page-only ones out)."""
    kind = result_type(handler)
    if kind is None:
        raise TypeError(f"{_name(handler)} returns no Outputs: name its output components")
    return kind.api_components(ui) if api else kind.components(ui)


def on(trigger: Callable, handler: Callable, ui: Mapping[str, Any], out: list | Any = None, **kwargs):
    """`trigger(handler, inputs, outputs, ...)` for the page, private: inputs by parameter name,
    outputs from the `Outputs` it returns unless `out` names them (a handler returning a plain value)."""
    targets = outputs(handler, ui) if out is None else out
    return trigger(as_outputs(handler), inputs(handler, ui), targets, **PRIVATE, **kwargs)


def endpoint(name: str, handler: Callable, ui: Mapping[str, Any], out: list | None = None) -> None:
    """An API endpoint with no trigger on the page, returning plain values (never update dicts)."""
    targets = outputs(handler, ui, api=True) if out is None else out
    gr.on([], as_values(handler), inputs(handler, ui), targets, api_name=name)


def _hints(handler: Callable) -> dict[str, Any]:
    """`handler`'s annotations resolved in its own module (through `shown_as_message`'s wrapper)."""
    function = inspect.unwrap(getattr(handler, "__func__", handler))
    return typing.get_type_hints(function)


def _name(handler: Callable) -> str:
    return getattr(handler, "__qualname__", repr(handler))


class Chains:
    """What a change sets off on the page, for every tab's events to follow the same way.

    Every change of what the results depend on (photos, any table edit, a preset, a file, a
    setting, a checkpoint, the methods) re-scores, then re-filters; the quality map (once asked
    for) is re-drawn as a step after a score or a photo pick, never inside it; a threshold set by
    a handler re-filters, re-ranks and re-links as a typed one does.
    """

    def __init__(self, scoring: Any, filtering: Any, table: Any, share: Any, ui: Mapping[str, Any]):
        self.scoring, self.filtering, self.table, self.share, self.ui = scoring, filtering, table, share, ui

    def follow_map(self, event):
        return on(event.then, self.scoring.refresh_map, self.ui, trigger_mode="always_last")

    def refilter(self, event):
        self.follow_map(event)
        return on(event.then, self.filtering.filter, self.ui)

    def rescore(self, event):
        return self.refilter(on(event.then, self.scoring.score, self.ui, trigger_mode="always_last"))

    def edited(self, event):
        """A table change: name it in the preset box (kept as the custom table), then re-score."""
        return self.rescore(on(event.then, self.table.table_changed, self.ui))

    def relink(self, event, **kwargs):
        """The share link after `event`, completed with the page's own address in the browser."""
        link = self.ui["share_link"]
        linked = on(event, self.share.share_link, self.ui, out=link, **kwargs)
        return linked.then(None, link, link, js=SHARE_URL_JS, **PRIVATE)

    def follow_threshold(self, event):
        """A threshold (and method) set by a handler: the filter, the ranking and the link follow."""
        on(on(event.then, self.filtering.filter, self.ui).then, self.scoring.rerank, self.ui)
        self.relink(event.then)


# the handler returns "?share=..."; the browser puts its own address (as the user sees it) in front
SHARE_URL_JS = (
    "(query) => query && query.startsWith('?') ? window.location.origin + window.location.pathname + query : query"
)
