"""The Prompt lab's pair search and learned weights, on the lab's labelled set.

A search encodes hundreds of candidate texts, so it streams its progress and can be stopped: the
handler is a generator reading the GPU call's progress, and closing it (Stop) closes the call,
whose work ends at its next progress report (`iqa.app.gpu._reporting`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import gradio as gr
import pandas as pd

from iqa.app import calls
from iqa.app.base import AppContext
from iqa.app.events import PRIVATE, Chains, on
from iqa.app.jobs import Failed, Progress, SearchReply
from iqa.app.lab_tab import LabHandlers, server_set_label
from iqa.app.messages import inform, shown_as_message
from iqa.app.outputs import PresetOutput, SearchOutput, WeightsOutput
from iqa.app.score_tab import TEMPERATURES
from iqa.app.session import Session
from iqa.app.table import CUSTOM, pairs_table, table_pairs
from iqa.lab.folds import DEFAULT_FOLDS
from iqa.lab.prompt_lab import LabelledPhotos
from iqa.lab.search import DEFAULT_MAX_PAIRS, Metric, SearchReport
from iqa.lab.vocabulary import VOCABULARY, candidate_pairs, parse_words
from iqa.lab.weights import WeightReport
from iqa.methods.prompts import DEFAULT_PRESET, PromptPair, preset

SEARCH_COLUMNS = ["rank", "figure", "tag", "positive", "negative", "selected"]
SHOWN_CANDIDATES = 30
TABLE = "the prompt table"
HOW_TO = (
    "**How to read this.** The search tries 63 quality words with their antonyms (and yours) in three "
    "templates, ranks them by AUC against keep / reject labels (SRCC against scores where labels are "
    "missing), and adds pairs one at a time while the combined score improves. The **cross-validated** "
    "figure repeats the whole selection without each fold's photos and measures it on them: close to the "
    "table's and the preset's means the suggestion generalises; far below its figure on all photos means it "
    "only fits these labels. **Fit the table's weights** learns non-negative weights for the table's pairs."
)


class SearchHandlers:
    """Pair search and learned weights on the lab's labelled set (`lab`)."""

    def __init__(self, app: AppContext, lab: LabHandlers):
        self.app, self.lab = app, lab
        self.models, self.config = app.models, app.config

    def _labels(
        self, source: str, csv_file: str | None, files: Sequence[str] | None
    ) -> tuple[LabelledPhotos | None, Metric]:
        """The lab's labelled set (None: the server's) and the metric its labels allow: AUC where
        every photo has a keep/reject label, else SRCC against the scores."""
        if source == server_set_label(self.models):
            assert self.models.lab_set is not None  # offered only when there is one
            return None, _metric(self.models.lab_set.keep)
        labelled = self.lab.labelled_set(source, csv_file, files)
        return labelled, _metric(labelled.keep)

    @shown_as_message
    def search_pairs(
        self,
        lab_source: str,
        lab_csv: str | None,
        lab_files: Sequence[str] | None,
        prompts: pd.DataFrame,
        backbone: str,
        temperature: str,
        search_words: str,
        search_max_pairs: float,
        search_folds: float,
        progress=gr.Progress(),
    ) -> Iterator[SearchOutput]:
        """Rank the vocabulary's pairs and the visitor's words, select a set, and cross-validate it
        beside the prompt table and the pyiqa preset; progress as it goes."""
        labelled, metric = self._labels(lab_source, lab_csv, lab_files)
        store = self.app.store_or_default(backbone)
        candidates = candidate_pairs([*VOCABULARY, *parse_words(search_words or "", "your words")])
        baselines = {
            TABLE: table_pairs(prompts, store.backbone.tokenizer),
            f"{DEFAULT_PRESET} preset": preset(DEFAULT_PRESET),
        }
        bar = calls.progress_bar(progress)
        base = calls.labelled_job(self.models, store, [], TEMPERATURES[temperature], labelled, bar)
        steps = calls.search_steps(base, candidates, baselines, metric, int(search_folds), int(search_max_pairs))
        reply: SearchReply | None = None
        try:
            for item in steps:
                if isinstance(item, Failed):
                    raise item.error
                if isinstance(item, Progress):
                    progress((item.done, item.total), desc=item.desc)
                    yield SearchOutput(None, f"Searching: {item.done} of {item.total} candidate pairs encoded…")
                else:
                    reply = item
        finally:
            steps.close()
        if reply is None:
            raise gr.Error("the search ended without a result")
        store.merge(reply.added)
        yield SearchOutput(_ranking(reply.report), _search_summary(reply.report))

    @shown_as_message
    def use_search_pairs(self, search_table: pd.DataFrame | None, session: Session) -> PresetOutput:
        """The selected pairs into the prompt table, in the order chosen, all on."""
        if search_table is None or search_table.empty or "selected" not in search_table:
            raise gr.Error("search for pairs first")
        chosen = search_table[search_table["selected"].astype(str).str.strip() != ""]
        chosen = chosen.sort_values("selected", key=lambda s: s.astype(int), kind="stable")
        pairs = [PromptPair(str(r["positive"]), str(r["negative"])) for r in chosen.to_dict("records")]
        table = pairs_table(pairs)
        session.custom_table = table.copy()
        inform(f"The prompt table on the first tab now holds the {len(pairs)} selected pair(s).")
        return PresetOutput(session, table, CUSTOM, None)

    @shown_as_message
    def fit_weights(
        self,
        lab_source: str,
        lab_csv: str | None,
        lab_files: Sequence[str] | None,
        prompts: pd.DataFrame,
        backbone: str,
        temperature: str,
        search_folds: float,
        session: Session,
        progress=gr.Progress(),
    ) -> WeightsOutput:
        """Non-negative weights for the table's pairs, fitted on the labels, into its weight column."""
        labelled, metric = self._labels(lab_source, lab_csv, lab_files)
        store = self.app.store_or_default(backbone)
        pairs = table_pairs(prompts, store.backbone.tokenizer)
        bar = calls.progress_bar(progress)
        base = calls.labelled_job(self.models, store, pairs, TEMPERATURES[temperature], labelled, bar)
        report = calls.fit_weights(store, base, metric, int(search_folds), bar).report
        weighted = pairs_table(report.pairs)
        session.custom_table = weighted.copy()
        inform("The prompt table's weights are now the fitted ones.")
        return WeightsOutput(session, weighted, CUSTOM, None, _weights_summary(report))


def _metric(keep: Sequence[bool | None]) -> Metric:
    return "auc" if keep and all(k is not None for k in keep) else "srcc"


def _ranking(report: SearchReport) -> pd.DataFrame:
    """The best candidates, and every selected pair (with its step) even below them."""
    step = {c.pair: i for i, c in enumerate(report.selected, 1)}
    shown = [(i, c) for i, c in enumerate(report.ranking, 1) if i <= SHOWN_CANDIDATES or c.pair in step]
    rows = [[i, round(c.figure, 3), c.tag, c.pair.positive, c.pair.negative, step.get(c.pair, "")] for i, c in shown]
    return pd.DataFrame(rows, columns=SEARCH_COLUMNS)


def _search_summary(report: SearchReport) -> str:
    name = report.metric.upper()
    lines = [
        f"**{len(report.selected)} pair(s) selected** from {len(report.ranking)} candidates ({name} of the "
        "pairs so far on all photos):",
        *(
            f"- pair {i}: {c.pair.positive} / {c.pair.negative} ({c.figure:.3f})"
            for i, c in enumerate(report.selected, 1)
        ),
        "",
        f"**Cross-validated {name}** (mean ± spread over the held-out folds; {report.counts}):",
        f"- selected pairs (the selection repeated on each fold's training photos): {report.selection.text()}",
    ]
    lines += [f"- {b.name}: {b.text()}" for b in report.baselines]
    if report.left_out:
        lines.append(f"Left out: {'; '.join(report.left_out)}")
    return "\n".join(lines)


def _weights_summary(report: WeightReport) -> str:
    name = report.metric.upper()
    lines = [f"**Fitted weights** written into the prompt table. Cross-validated {name} ({report.counts}):"]
    lines.append(f"- fitted weights: {report.fitted.text()}")
    if report.table is not None:
        lines.append(f"- the table's own weights: {report.table.text()}")
    return "\n".join(lines)


def build_search_panel(ui: dict) -> None:
    """Pair search and learned weights: words, sizes, the buttons, the report and the ranking."""
    with gr.Accordion("Suggest pairs and weights", open=True, elem_id="pair-search"):
        gr.Markdown(HOW_TO, elem_classes=["how-to"])
        with gr.Row():
            ui["search_words"] = gr.Textbox(
                label="Your words (one 'good / bad' a line), tried beside the built-in vocabulary",
                lines=2,
                elem_id="search-words",
            )
            ui["search_max_pairs"] = gr.Slider(1, 10, value=DEFAULT_MAX_PAIRS, step=1, label="Pairs to select at most")
            ui["search_folds"] = gr.Slider(2, 10, value=DEFAULT_FOLDS, step=1, label="Cross-validation folds")
        with gr.Row():
            ui["search_run"] = gr.Button("Search pairs", variant="primary", elem_id="search-run")
            ui["search_stop"] = gr.Button("Stop", variant="stop", elem_id="search-stop")
            ui["search_use"] = gr.Button("Use these pairs", elem_id="search-use")
            ui["fit_run"] = gr.Button("Fit the table's weights", elem_id="fit-run")
        ui["search_summary"] = gr.Markdown(elem_id="search-summary")
        ui["fit_summary"] = gr.Markdown(elem_id="fit-summary")
        ui["search_table"] = gr.Dataframe(
            headers=SEARCH_COLUMNS,
            interactive=False,
            visible=False,
            label="Candidates, best first",
            elem_id="search-table",
        )


def wire_search_panel(h: SearchHandlers, ui: dict, chains: Chains) -> None:
    """The search (Stop cancels it: its generator closes, and the GPU call with it), its pairs and the
    fitted weights into the table, which re-scores."""
    search = on(ui["search_run"].click, h.search_pairs, ui)
    ui["search_stop"].click(None, None, None, cancels=[search], **PRIVATE)
    chains.rescore(on(ui["search_use"].click, h.use_search_pairs, ui))
    chains.rescore(on(ui["fit_run"].click, h.fit_weights, ui))
