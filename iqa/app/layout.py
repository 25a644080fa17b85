"""The look of the app: theme and CSS (light, dark, phone), the test-backbone banner, the
"how to read this" notes, and the decision bar shared by every tab."""

from __future__ import annotations

import gradio as gr

from iqa.app.models import Models
from iqa.clip.test_backbones import TEST_BACKBONE_WARNING
from iqa.methods import registry
from iqa.report.charts import MAP_HEIGHT

THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
# The banner keeps its own dark-on-yellow colours in both themes (contrast about 11:1). Plotly draws
# its text and grid lines with fixed colours: in the dark theme they take the theme's text colour.
# The ranking's columns have fixed widths, so on a phone it scrolls sideways instead of cutting numbers.
CSS = """
.test-warning {background: #fff3cd !important; border: 1px solid #8a6d00; border-radius: 6px; padding: 4px 12px;}
.test-warning, .test-warning * {color: #3b2f00 !important;}
.how-to {border-left: 3px solid var(--color-accent); padding-left: 10px !important;}
.dark .js-plotly-plot .main-svg text {fill: var(--body-text-color) !important;}
.dark .js-plotly-plot .gridlayer path, .dark .js-plotly-plot .zerolinelayer path {stroke: #4b5563 !important;}
#gallery .caption-label, #kept .caption-label, #rejected .caption-label {white-space: normal !important;
  overflow-wrap: anywhere; max-width: 100% !important; left: 0; right: 0 !important; bottom: 0 !important;
  border-radius: 0 !important; font-size: 11px !important; line-height: 1.2;}
#checkpoint input {padding-right: 2.2em; text-overflow: ellipsis;}
#ranking .cell-wrap {padding-left: 4px !important; padding-right: 4px !important;}
#ranking .header-content {gap: 0 !important;}
#ranking .cell-menu-button {display: none;}  /* the ranking has its order; the menu only cut the headers */
#prompt-table .header {white-space: nowrap; word-break: keep-all; overflow-wrap: normal;}  /* never "we/ig/ht" */
#prompt-table .header-content {gap: 4px !important;}
@media (max-width: 640px) {
  .gradio-container {padding: 4px !important;}
  #ranking .header-cell, #prompt-table .header-cell {font-size: 12px !important;}
  #prompt-table .cell-menu-button {display: none;}
  #prompt-table .cell-wrap {padding-left: 4px !important; padding-right: 4px !important;}
  /* every tab's button in one row (the menu hid four of five behind "..."); Gradio counts what fits */
  .tab-container button {padding: 4px 7px !important; font-size: 13px !important;}
  /* a finger cannot hover: the toolbar would stay over the chart's title and labels */
  .js-plotly-plot .modebar-container {display: none !important;}
}
"""

# Plotly sizes a chart to its box when it draws and when the window resizes, not when the box
# itself changes: a chart drawn while hidden (the side-by-side one, as its accordion opens) keeps
# plotly's 700 px, cut on a phone. Every chart follows its box here. The quality map's height
# follows its width too, so its photo fills the width on a phone as on a desktop (the width is
# only known in the browser).
CHARTS_JS = f"""
() => {{
  const fitMap = gd => {{
    const layout = gd._fullLayout, size = layout?._size;
    if (!size || !gd.closest('#quality-map')) return;
    const [x0, x1] = layout.xaxis.range, [y0, y1] = layout.yaxis.range;
    const photo = size.w * Math.abs(y1 - y0) / Math.abs(x1 - x0);
    const height = Math.min({MAP_HEIGHT}, Math.round(layout.height - size.h + photo));
    if (Math.abs(height - layout.height) > 2) Plotly.relayout(gd, {{height}});
  }};
  const boxes = new ResizeObserver(entries => entries.forEach(entry => Plotly.Plots.resize(entry.target)));
  new MutationObserver(() => document.querySelectorAll('.js-plotly-plot:not([data-follows])').forEach(gd => {{
    gd.dataset.follows = '';
    boxes.observe(gd);
    gd.on('plotly_afterplot', () => fitMap(gd));
    fitMap(gd);
  }})).observe(document.body, {{childList: true, subtree: true}});
}}
"""

HOW_TO = {
    "score": (
        "**How to read this.** Every score is between 0 and 1, and higher means better quality. "
        "**CLIP-IQA**: for each prompt pair, *p* is the probability CLIP gives the positive prompt "
        "rather than the negative one (0.5: undecided); the score is the weighted mean of *p* over the "
        "pairs switched on. **GRMP-IQA**: the same kind of probability from learned prompts (its seed "
        "variant adds a small MLP head's correction; the breakdown shows both). **keep / reject** uses "
        "the threshold and method in the bar at the top. Scores show 3 decimals; the CSV has 6. Any edit "
        "re-scores at once, from cached image features."
    ),
    "lab": (
        "**How to read this.** Each pair scores the labelled photos on its own. **SRCC** (Spearman) says "
        "whether it puts them in the labels' order, **PLCC** (Pearson, after a logistic fit) whether its "
        "scores follow the labels in a straight line: 1 is perfect agreement, 0 none, below 0 the wrong "
        "way round (positive and negative swapped). The dashed line is the SRCC of the combined score "
        "(the weighted mean of p over the pairs switched on in the table), not a mean of their SRCCs. "
        "**Use the best pairs** puts them first in the prompt table, on, and the rest off."
    ),
    "adapt": (
        "**How to read this.** The training loss (left axis) should fall and the validation SRCC (right "
        "axis: 1 = held-out photos in the labels' order) should rise. Training stops early once the "
        "validation stops improving; the checkpoint kept is the best validated step."
    ),
    "filter": (
        "**How to read this.** The histogram shows how the chosen method's scores spread; the dashed line "
        "is the threshold, and photos at or right of it are kept. Change the threshold or the method in "
        "the bar at the top: the galleries, the ranking and every download follow."
    ),
}


def banner(models: Models) -> None:
    """The warning that scores are meaningless, on every tab, when a test backbone is loaded."""
    if models.config.is_test:
        gr.Markdown(f"⚠️ **{TEST_BACKBONE_WARNING}**", elem_classes=["test-warning"])


def how_to(tab: str) -> None:
    gr.Markdown(HOW_TO[tab], elem_classes=["how-to"])


def build_decision_bar(ui: dict) -> None:
    """The threshold and method of every keep / reject decision: one pair of controls for all tabs."""
    with gr.Row(equal_height=True, elem_id="decision-bar"):
        ui["threshold"] = gr.Slider(
            0,
            1,
            value=0.5,
            step=0.001,
            precision=3,
            label="Threshold: keep a photo when its score >= this",
            elem_id="threshold",
            scale=3,
        )
        first = next(m.name for m in registry.methods() if m.on_by_default)
        ui["method"] = gr.Radio(registry.names(), value=first, label="Decide by", elem_id="method", scale=2)


# the threshold as used: within [0, 1], with the page's three decimals (DIGITS)
THRESHOLD_JS = "(t) => Math.min(1, Math.max(0, Math.round(Number(t) * 1000) / 1000 || 0))"
