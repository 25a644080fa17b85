"""The quality methods, each described once: every consumer (command line, Ray rows, CSV, charts,
the app) reads what it needs from here and names no method itself.

A method is a package under `iqa.methods` that calls `register(Method(...))`, plus one line in
`iqa.methods.builtin` (or, for a plug-in, any import of that package before the scorers are
built). Importing this module and a descriptor imports no torch: `build` is named by a dotted path
and imported only when a scorer is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iqa.errors import UsageError

if TYPE_CHECKING:
    from iqa.clip.features import FeatureStore
    from iqa.methods.results import PairScore, ScoreResult
    from iqa.methods.scoring import Scorer, ScorerSpec


@dataclass(frozen=True)
class Part:
    """One bar of a result's breakdown chart: a label, a value in [0, 1], and the pair it comes
    from (the chart shows its cosines) or else a sentence saying what it is."""

    label: str
    value: float
    pair: PairScore | None = None
    detail: str = ""


def pair_parts(result: ScoreResult) -> list[Part]:
    """The usual breakdown: p of each prompt pair."""
    return [Part(f"{pair.positive} / {pair.negative}", pair.p, pair) for pair in result.pairs]


@dataclass(frozen=True)
class Method:
    """What the rest of the project needs to know about a quality method.

    `build` is "module:function", a function `(spec, store) -> Scorer`: `store` is the feature cache
    of the spec's backbone, shared by every method built together; it is None only when every
    method built has `needs_store` False (each then loads what it needs). `arguments` are the
    per-method options it reads from `ScorerSpec.options[name]` (the command line passes those of
    its own options that are given); `required` names those that must be given, each with the
    hint shown when missing.
    """

    name: str  # `ScoreResult.method`, the key of `build_scorers` and `ComparedPhoto.results`
    option: str  # the command line's spelling (`--method`)
    column: str  # its score's column in tables and Parquet files
    colour: str  # its bars and points in charts
    # Its results change with the prompt table (the app re-scores it): its scorer has `pairs`, and
    # each result one `PairScore` per pair, in that order (the Ray rows' `p[...]` columns).
    follows_prompts: bool
    build: str
    arguments: tuple[str, ...] = ()
    required: Mapping[str, str] = field(default_factory=dict)
    unscored: str = ""  # what to do when it has no scores (the app's message), if anything
    needs_store: bool = True  # False: it loads its own backbone when no store is shared with it
    parts: Callable[[ScoreResult], list[Part]] = pair_parts  # its per-pair breakdown for charts
    # Markdown for the app's About tab: what it computes (its formula, LaTeX in $...$), the settings
    # that matter, its citation. Empty: the About tab lists the method by name only.
    about: str = ""
    # Its image features live in a store of its own, derived from the shared one (MA-CLIP's views):
    # the app sends it every photo's pixels, and its scorer's store encodes what it lacks.
    own_features: bool = False
    # Checked in the app's method chooser when a page opens (the others are one click away).
    on_by_default: bool = False

    def scorer(self, spec: ScorerSpec, store: FeatureStore | None) -> Scorer:
        module, function = self.build.split(":")
        return getattr(importlib.import_module(module), function)(spec, store)

    def missing(self, options: Mapping[str, Any]) -> list[str]:
        """The hints of the required options not given."""
        return [hint for option, hint in self.required.items() if options.get(option) is None]


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add `method` (replacing one of the same name, so a module imported twice is harmless)."""
    clash = [m.name for m in _METHODS.values() if m.name != method.name and m.option == method.option]
    if clash:
        raise ValueError(f"--method {method.option} already names {clash[0]}")
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (a test's toy method, once the test is done)."""
    _METHODS.pop(name, None)


def methods() -> list[Method]:
    """Every registered method, built-in ones first, in the order they were registered."""
    _load_builtin()
    return list(_METHODS.values())


def names() -> list[str]:
    return [m.name for m in methods()]


def method(name: str) -> Method:
    """The method called `name`; UsageError naming the known ones otherwise."""
    _load_builtin()
    if name not in _METHODS:
        raise UsageError(f"unknown method {name!r}; choose among {', '.join(_METHODS)}")
    return _METHODS[name]


ALL = "all"  # `--method all`: every registered method


def option_choices() -> list[str]:
    """`--method`'s choices: each method's spelling, and `all`."""
    return [m.option for m in methods()] + [ALL]


def from_option(option: str) -> tuple[str, ...]:
    """The method names a `--method` value stands for: one method's spelling, a comma-separated
    list of them, or `all`."""
    by_option = {m.option: m.name for m in methods()}
    if option == ALL:
        return tuple(by_option.values())
    wanted = [part.strip() for part in option.split(",") if part.strip()]
    unknown = [part for part in wanted if part not in by_option]
    if unknown or not wanted:
        raise UsageError(f"unknown --method {option!r}; choose among {', '.join(option_choices())}")
    return tuple(dict.fromkeys(by_option[part] for part in wanted))


def _load_builtin() -> None:
    importlib.import_module("iqa.methods.builtin")
