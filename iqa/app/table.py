"""The prompt table of the first tab: its rows read with `iqa.methods.prompts`' rules, and written back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import pandas as pd

from iqa.app.base import AppContext
from iqa.app.events import PRIVATE, Chains, on
from iqa.app.messages import inform, shown_as_message, warn
from iqa.app.outputs import PresetOutput, RowOutput, TableNameOutput
from iqa.app.session import Session
from iqa.methods.prompts import (
    DEFAULT_PRESET,
    PRESETS,
    PromptError,
    PromptPair,
    check_pairs,
    load_pairs,
    pair_from_record,
    save_pairs,
)

PROMPT_COLUMNS = ["on", "positive", "negative", "weight", "status"]
ZERO_WEIGHTS = "invalid: the enabled weights add up to 0"
CUSTOM = "custom"  # the preset box's name for a table that is no preset (edited, loaded from a file)


def parse_table(table: pd.DataFrame | None, tokenizer=None) -> tuple[list[PromptPair | None], list[str]]:
    """The table's rows as pairs (None where a row cannot be read) and each row's status:
    "ok", "off", or "invalid: <reason>".

    A row is read as a record of a prompt file is (`iqa.methods.prompts.pair_from_record`), so "Y" in the
    "on" column means on here as in a CSV.
    """
    pairs: list[PromptPair | None] = []
    status: list[str] = []
    for row in [] if table is None else table.fillna("").to_dict("records"):
        record = {
            "positive": str(row.get("positive", "")).strip(),
            "negative": str(row.get("negative", "")).strip(),
            "weight": row.get("weight"),
            "enabled": row.get("on", True),
        }
        try:
            pairs.append(pair_from_record(record))
            status.append("")
        except PromptError as err:
            pairs.append(None)
            status.append(f"invalid: {err}")
    reasons = iter(check_pairs([p for p in pairs if p is not None], tokenizer))
    for i, pair in enumerate(pairs):
        if pair is not None:
            reason = next(reasons)
            status[i] = f"invalid: {reason}" if reason else ("ok" if pair.enabled else "off")
    weights = [p.weight for p, s in zip(pairs, status) if p is not None and s == "ok"]
    if weights and sum(weights) <= 0:  # CLIP-IQA's weighted mean has nothing to divide by: no row is usable
        status = [ZERO_WEIGHTS if s == "ok" else s for s in status]
    return pairs, status


def no_pair_reason(status: Sequence[str]) -> str:
    """Why a table gives no usable pair, in one line for the page."""
    if ZERO_WEIGHTS in status:
        return "No usable prompt pair: every enabled row has weight 0 (give one a weight above 0)."
    if not status:
        return "No usable prompt pair: the prompt table is empty."
    return "No usable prompt pair: every row is off or invalid (see the status column)."


def table_pairs(table: pd.DataFrame | None, tokenizer) -> list[PromptPair]:
    """The table's pairs the lab ranks, on or off, without the rows its status marks invalid (an
    empty side, a prompt over the tokenizer's length): the rows the Score tab leaves out too."""
    pairs, status = parse_table(table, tokenizer)
    return [p for p, s in zip(pairs, status) if p is not None and not s.startswith("invalid")]


def pairs_table(pairs: Sequence[PromptPair]) -> pd.DataFrame:
    return pd.DataFrame(
        [[p.enabled, p.positive, p.negative, p.weight, "ok" if p.enabled else "off"] for p in pairs],
        columns=PROMPT_COLUMNS,
    )


def preset_name(table: pd.DataFrame) -> str:
    """The preset the table holds exactly, else CUSTOM."""
    pairs = parse_table(table)[0]
    return next((name for name, preset in PRESETS.items() if pairs == preset), CUSTOM)


class PromptTableHandlers:
    """Editing the prompt table: presets, rows, files. An edited table is kept as the session's
    'custom' table, so choosing a preset never loses it."""

    def __init__(self, app: AppContext):
        self.app = app
        self.models, self.config = app.models, app.config

    @shown_as_message
    def load_preset(self, name: str) -> pd.DataFrame:
        if name not in PRESETS:
            raise gr.Error(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return pairs_table(PRESETS[name])

    @shown_as_message
    def choose_preset(self, preset: str, session: Session) -> PresetOutput:
        """The preset box: a preset's pairs, or back to the custom table (the edits kept)."""
        if preset == CUSTOM:
            if session.custom_table is None:
                raise gr.Error("no custom table yet: edit the table, or load a prompt set from a file")
            return PresetOutput(session, session.custom_table, CUSTOM, None)
        if session.custom_table is not None and not session.told_custom_kept:
            session.told_custom_kept = True
            inform(f"Your edited table is kept: choose '{CUSTOM}' in the preset box to get it back.")
        return PresetOutput(session, self.load_preset(preset), preset, None)

    @shown_as_message
    def table_changed(self, prompts: pd.DataFrame, session: Session) -> TableNameOutput:
        """After an edit, a row change or a loaded file: keep the table as the custom one (unless it is a
        preset), name it in the preset box, and drop the saved file, which held the table before."""
        name = preset_name(prompts)
        if name == CUSTOM:
            session.custom_table = prompts.copy()
        return TableNameOutput(session, name, None)

    @shown_as_message
    def add_row(self, prompts: pd.DataFrame) -> pd.DataFrame:
        row = pd.DataFrame([[True, "", "", 1.0, "new: fill in both prompts"]], columns=PROMPT_COLUMNS)
        return pd.concat([prompts, row], ignore_index=True)

    @shown_as_message
    def delete_row(self, prompts: pd.DataFrame, row_number: float | None) -> pd.DataFrame:
        index = self._row_index(prompts, row_number)
        return prompts.drop(index=prompts.index[index]).reset_index(drop=True)

    def move_row(self, table: pd.DataFrame, row: float | None, step: int):
        """Move row number `row` (1-based) up (step -1) or down (+1); returns the table and new number."""
        index = self._row_index(table, row)
        target = min(max(index + step, 0), len(table) - 1)
        order = list(range(len(table)))
        order.insert(target, order.pop(index))
        return table.iloc[order].reset_index(drop=True), target + 1

    @shown_as_message
    def row_up(self, prompts: pd.DataFrame, row_number: float | None) -> RowOutput:
        return RowOutput(*self.move_row(prompts, row_number, -1))

    @shown_as_message
    def row_down(self, prompts: pd.DataFrame, row_number: float | None) -> RowOutput:
        return RowOutput(*self.move_row(prompts, row_number, 1))

    @staticmethod
    def _row_index(table: pd.DataFrame, row: float | None) -> int:
        if len(table) == 0:
            raise gr.Error("the prompt table has no rows: add one first")
        if row is None or not 1 <= int(row) <= len(table):
            raise gr.Error(f"pick a row number between 1 and {len(table)} (click a row of the table)")
        return int(row) - 1

    @staticmethod
    @shown_as_message
    def select_row(event: gr.SelectData) -> int:
        return event.index[0] + 1

    @shown_as_message
    def save_prompts(self, prompts: pd.DataFrame, session: Session):
        """Write the table as a JSON prompt set and show it for download."""
        pairs, status = parse_table(prompts)
        usable = [p for p in pairs if p is not None]
        if len(usable) < len(pairs):
            warn(f"{len(pairs) - len(usable)} row(s) with an unreadable weight were not saved")
        path = save_pairs(usable, session.directory(self.config.work_dir) / "prompts.json")
        return gr.update(value=str(path), visible=True)

    @shown_as_message
    def load_prompts(self, prompt_file: str | None) -> pd.DataFrame:
        if not prompt_file:
            raise gr.Error("choose a prompt set file (.json or .csv) first")
        try:
            pairs = load_pairs(prompt_file)
        except PromptError as err:
            raise gr.Error(str(err)) from None
        except UnicodeDecodeError:
            raise gr.Error(f"{Path(prompt_file).name} is not a text file; a prompt set is JSON or CSV") from None
        return self.check_table(pairs_table(pairs))

    def check_table(self, table: pd.DataFrame) -> pd.DataFrame:
        """The table with its status column filled in: the reason for every invalid row."""
        tokenizer = self.models.store(self.config.backbone).backbone.tokenizer
        return table.assign(status=parse_table(table, tokenizer)[1])


def build_prompt_panel(ui: dict) -> None:
    """The prompt table and its editing controls."""
    ui["prompts"] = gr.Dataframe(
        pairs_table(PRESETS[DEFAULT_PRESET]),
        label="Prompt pairs (edit any cell; the status column says why a row is not used)",
        datatype=["bool", "str", "str", "number", "str"],
        interactive=True,
        static_columns=[4],
        elem_id="prompt-table",
        wrap=True,
        column_widths=["13%", "25%", "25%", "16%", "21%"],  # "weight" and "status" whole on a phone
    )
    with gr.Row():
        ui["preset"] = gr.Dropdown(
            [*PRESETS, CUSTOM], value=DEFAULT_PRESET, label="Preset", scale=3, min_width=130, elem_id="preset"
        )
        ui["row_number"] = gr.Number(
            label="Row #", value=1, precision=0, minimum=1, scale=2, min_width=90, elem_id="row-number"
        )
        ui["add"] = gr.Button("Add row", size="sm", scale=1, min_width=70)
        ui["up"] = gr.Button("Up", size="sm", scale=1, min_width=50)
        ui["down"] = gr.Button("Down", size="sm", scale=1, min_width=50)
        ui["delete"] = gr.Button("Delete", size="sm", scale=1, min_width=60, variant="stop")
    with gr.Row():
        ui["prompt_file"] = gr.UploadButton("Load prompt set (.json/.csv)", file_types=[".json", ".csv"], size="sm")
        ui["save"] = gr.Button("Save prompt set as JSON", size="sm")
    ui["saved_prompts"] = gr.File(label="Saved prompt set", interactive=False, visible=False)


def wire_prompt_panel(h: PromptTableHandlers, ui: dict, chains: Chains) -> None:
    """Every change of the table (a preset, a file, an edit, a row added, moved or deleted) re-scores."""
    prompts = ui["prompts"]
    chains.rescore(on(ui["preset"].input, h.choose_preset, ui))
    chains.edited(on(ui["prompt_file"].upload, h.load_prompts, ui, out=prompts))
    once = prompts.input(None, prompts, None, js=SAME_EDIT_JS, **PRIVATE)
    chains.rescore(on(once.success, h.table_changed, ui))
    on(prompts.select, h.select_row, ui, out=ui["row_number"])
    chains.edited(on(ui["add"].click, h.add_row, ui, out=prompts))
    chains.edited(on(ui["delete"].click, h.delete_row, ui, out=prompts))
    for button, handler in ((ui["up"], h.row_up), (ui["down"], h.row_down)):
        chains.edited(on(button.click, handler, ui))
    on(ui["save"].click, h.save_prompts, ui, out=ui["saved_prompts"])


# Enter in a table cell sends the same input event twice (gradio 6.31): the second (the same table
# within half a second) is stopped in the browser, so that each edit scores once and warns once
SAME_EDIT_JS = """(table) => {
    const key = JSON.stringify(table), now = Date.now();
    if (key === window.lastEdit && now - window.lastEditAt < 500) throw new Error('the same edit again');
    window.lastEdit = key;
    window.lastEditAt = now;
    return table;
}"""
