"""Share: a link that reopens the app with the same prompt table and settings (never the photos).

The settings travel in the URL's `share` query parameter as compressed, URL-safe base64 JSON. A
link is input like any other: it is size-limited, every field is checked, and a bad one is one
warning while the page opens with its defaults.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import fields

import gradio as gr
import pandas as pd

from iqa.app.base import AppContext
from iqa.app.events import Chains, inputs, on
from iqa.app.messages import shown_as_message, warn
from iqa.app.outputs import ShareOutput
from iqa.app.score_tab import TEMPERATURES, chosen_methods
from iqa.app.table import pairs_table, parse_table, preset_name
from iqa.methods import registry
from iqa.methods.prompts import PromptError, pair_from_record

MAX_LINK = 16_000  # characters of the parameter
MAX_JSON = 256_000  # bytes once decompressed
MAX_PAIRS = 200


class ShareError(ValueError):
    """A shared link that cannot be read, with the reason."""


def encode_share(settings: dict) -> str:
    data = zlib.compress(json.dumps(settings, ensure_ascii=False, separators=(",", ":")).encode(), 9)
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_share(text: str) -> dict:
    """The settings of a `share` parameter; ShareError naming the problem."""
    if len(text) > MAX_LINK:
        raise ShareError(f"it is {len(text)} characters long; at most {MAX_LINK}")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, MAX_JSON)
        if inflater.unconsumed_tail:
            raise ShareError(f"it unpacks to more than {MAX_JSON} bytes")
        settings = json.loads(raw)
    except (binascii.Error, zlib.error, ValueError, RecursionError) as err:
        if isinstance(err, ShareError):
            raise
        raise ShareError("it is not a link this app made (not compressed JSON)") from None
    if not isinstance(settings, dict):
        raise ShareError("it holds no settings")
    try:  # JSON's escapes can spell a lone surrogate, which no UTF-8 text (nor the table) can hold
        json.dumps(settings, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ShareError("it holds text that is not valid Unicode (a lone surrogate)") from None
    return settings


def share_table(settings: dict) -> pd.DataFrame:
    """The prompt table of shared settings, every pair checked as a prompt file's would be."""
    records = settings.get("pairs")
    if not isinstance(records, list) or not records or len(records) > MAX_PAIRS:
        raise ShareError(f"it needs 1 to {MAX_PAIRS} prompt pairs")
    try:
        return pairs_table([pair_from_record(r) for r in records])
    except PromptError as err:
        raise ShareError(f"a prompt pair: {err}") from None


NO_LINK = "No link: the prompt table has no readable pair."


class ShareHandlers:
    """Share links: made from the page's settings, read when a page opens with one."""

    def __init__(self, app: AppContext):
        self.app = app
        self.models, self.config = app.models, app.config

    @shown_as_message
    def share_query(
        self,
        prompts: pd.DataFrame,
        backbone: str,
        temperature: str,
        checkpoint: str,
        threshold: float,
        method: str,
        methods: Sequence[str] | None = None,
    ) -> str:
        """The query string of a link to these prompts, methods and settings (the page adds its own address)."""
        pairs = [p for p in parse_table(prompts)[0] if p is not None]
        if not pairs:
            raise gr.Error("the prompt table has no readable pair to share")
        settings = {
            "pairs": [
                {"positive": p.positive, "negative": p.negative, "weight": p.weight, "enabled": p.enabled}
                for p in pairs
            ],
            "backbone": backbone,
            "temperature": temperature,
            "threshold": float(threshold),
            "method": method,
            "methods": chosen_methods(methods),
        }
        if checkpoint in self.models.startup_ids:  # a session's own does not travel
            settings["checkpoint"] = checkpoint
        return "?share=" + encode_share(settings)

    @shown_as_message
    def share_link(
        self,
        prompts: pd.DataFrame,
        backbone: str,
        temperature: str,
        checkpoint: str,
        threshold: float,
        method: str,
        methods: Sequence[str] | None = None,
    ) -> str:
        """The link's query after any change of what it holds, or why there is none (no notice: it
        follows every edit, and the table's status column already says what is wrong)."""
        if not any(p is not None for p in parse_table(prompts)[0]):
            return NO_LINK
        return self.share_query(prompts, backbone, temperature, checkpoint, threshold, method, methods)

    @shown_as_message
    def restore_shared(self, request: gr.Request) -> ShareOutput:
        """When the page opens with `?share=...`: that table and those settings; else nothing changes."""
        text = request.query_params.get("share") if request is not None else None
        if not text:
            return _unchanged()
        try:
            settings = decode_share(text)
            table = share_table(settings)
            threshold = settings.get("threshold", 0.5)
            if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or not 0 <= threshold <= 1:
                raise ShareError(f"threshold {threshold!r} is not a number between 0 and 1")
        except ShareError as err:
            warn(f"the shared link could not be read: {err}")
            return _unchanged()
        checkpoint = settings.get("checkpoint")
        return ShareOutput(
            prompts=table,
            preset=preset_name(table),
            backbone=self._choice(settings.get("backbone"), self.models.backbone_choices),
            temperature=self._choice(settings.get("temperature"), list(TEMPERATURES)),
            checkpoint=checkpoint if checkpoint in self.models.startup_ids else gr.update(),
            threshold=float(threshold),
            method=self._choice(settings.get("method"), registry.names()),
            methods=_methods(settings.get("methods")),
        )

    @staticmethod
    def _choice(value: object, choices: list[str]):
        """`value` when it is one of `choices`, else no change (a link from another server)."""
        return value if isinstance(value, str) and value in choices else gr.update()


def _unchanged() -> ShareOutput:
    return ShareOutput(*(gr.update() for _ in fields(ShareOutput)))


def _methods(value: object):
    """A link's methods: those of them registered here (a link from a server with other methods
    keeps the ones this one knows); no change when it names none (a link made before the chooser)."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        return gr.update()
    known = chosen_methods(value)
    return known if known else gr.update()


def wire_share(h: ShareHandlers, ui: dict, chains: Chains, demo: gr.Blocks, threshold_shown) -> None:
    """A page opened from a link takes its settings; the link follows every change of what it holds,
    the server's included (the threshold's once it is put in range: `threshold_shown`)."""
    chains.relink(on(demo.load, h.restore_shared, ui).then)
    link_inputs = inputs(h.share_link, ui)
    for trigger in [c.change for c in link_inputs if c is not ui["threshold"]] + [threshold_shown.then]:
        chains.relink(trigger, trigger_mode="always_last")
