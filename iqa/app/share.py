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

import gradio as gr
import pandas as pd

from iqa.app.base import HandlerBase
from iqa.app.messages import shown_as_message, warn
from iqa.app.outputs import ShareOutput
from iqa.app.score_tab import TEMPERATURES
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


class ShareHandlers(HandlerBase):
    @shown_as_message
    def share_query(
        self,
        table: pd.DataFrame,
        backbone: str,
        temperature: str,
        checkpoint: str,
        threshold: float,
        method: str,
    ) -> str:
        """The query string of a link to these prompts and settings (the page adds its own address)."""
        pairs = [p for p in parse_table(table)[0] if p is not None]
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
        }
        if checkpoint in self.models.startup_ids:  # a session's own does not travel
            settings["checkpoint"] = checkpoint
        return "?share=" + encode_share(settings)

    @shown_as_message
    def share_link(
        self,
        table: pd.DataFrame,
        backbone: str,
        temperature: str,
        checkpoint: str,
        threshold: float,
        method: str,
    ) -> str:
        """The link's query after any change of what it holds, or why there is none (no notice: it
        follows every edit, and the table's status column already says what is wrong)."""
        if not any(p is not None for p in parse_table(table)[0]):
            return NO_LINK
        return self.share_query(table, backbone, temperature, checkpoint, threshold, method)

    @shown_as_message
    def restore_shared(self, request: gr.Request) -> ShareOutput:
        """When the page opens with `?share=...`: that table and those settings; else nothing changes."""
        text = request.query_params.get("share") if request is not None else None
        if not text:
            return ShareOutput(*(gr.update() for _ in range(7)))
        try:
            settings = decode_share(text)
            table = share_table(settings)
            threshold = settings.get("threshold", 0.5)
            if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or not 0 <= threshold <= 1:
                raise ShareError(f"threshold {threshold!r} is not a number between 0 and 1")
        except ShareError as err:
            warn(f"the shared link could not be read: {err}")
            return ShareOutput(*(gr.update() for _ in range(7)))
        checkpoint = settings.get("checkpoint")
        return ShareOutput(
            prompts=table,
            preset=preset_name(table),
            backbone=self._choice(settings.get("backbone"), self.models.backbone_choices),
            temperature=self._choice(settings.get("temperature"), list(TEMPERATURES)),
            checkpoint=checkpoint if checkpoint in self.models.startup_ids else gr.update(),
            threshold=float(threshold),
            method=self._choice(settings.get("method"), registry.names()),
        )

    @staticmethod
    def _choice(value: object, choices: list[str]):
        """`value` when it is one of `choices`, else no change (a link from another server)."""
        return value if isinstance(value, str) and value in choices else gr.update()
