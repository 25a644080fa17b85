"""The app in a real browser: Debian's headless Chromium driven by Playwright.

Skipped when Chromium or Playwright is missing, unless IQA_REQUIRE_BROWSER=1 (then it fails).
Screenshots (1440x900 light and dark, 390x844 phone) land in artifacts/ (git-ignored) for a
person to look at.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from hostile_app import good_checkpoint

from iqa.app.share import decode_share
from iqa.methods import registry
from iqa.report import charts

ROOT = Path(__file__).resolve().parents[1]
# The ranking's columns: #, photo, one per method the chooser checks at start, decision, name.
DECISION_COL = 2 + sum(m.on_by_default for m in registry.methods())
NAME_COL = DECISION_COL + 1
CHROMIUM = Path(os.environ.get("IQA_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "artifacts"
pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT = 60_000
# The texts of the plotly chart in `chart` (an element id) that cannot be read whole: those that end
# past the chart's box or the screen's edge (a dot's name: past the plot area, which clips it), and
# the titles, legend entries and annotations that overlap one another, a tick label or the app's
# label over the chart's corner.
UNREADABLE_JS = """(chart) => {
    const block = document.querySelector(chart), label = block.querySelector('[data-testid=block-label]');
    const box = e => e.getBoundingClientRect();
    const named = t => `${t.closest('[class]').getAttribute('class').split(' ')[0]} '${t.textContent}'`;
    const within = (r, b) =>
        r.left >= b.left - 1 && r.right <= b.right + 1 && r.top >= b.top - 1 && r.bottom <= b.bottom + 1;
    const overlap = (r, s) => Math.min(r.right, s.right) - Math.max(r.left, s.left) > 1
        && Math.min(r.bottom, s.bottom) - Math.max(r.top, s.top) > 1;
    const found = [];
    for (const plot of block.querySelectorAll('.js-plotly-plot')) {
        const texts = selector => [...plot.querySelectorAll(selector)]
            .filter(t => t.textContent.trim() && box(t).width);
        const svg = box(plot.querySelector('.main-svg')), outer = box(block);
        const shown = {left: Math.max(svg.left, outer.left, 0), top: svg.top, bottom: svg.bottom,
                       right: Math.min(svg.right, outer.right, document.documentElement.clientWidth)};
        const titles = texts('.gtitle, .g-xtitle text, .g-ytitle text, .g-y2title text, .annotation-text, '
                             + '.legendtext, .cbtitle text');
        const ticks = texts('.xtick text, .ytick text, .y2tick text, .cbaxis text');
        for (const t of [...titles, ...ticks, ...texts('.bartext')])
            if (!within(box(t), shown)) found.push(`cut: ${named(t)}`);
        const names = texts('.textpoint text');
        for (const t of names)
            if (!within(box(t), box(plot.querySelector('.nsewdrag')))) found.push(`cut: ${named(t)}`);
        names.forEach((t, i) => names.slice(i + 1).forEach(u => {
            if (overlap(box(t), box(u))) found.push(`overlap: ${named(t)} / ${named(u)}`);
        }));
        titles.forEach((t, i) => [...titles.slice(i + 1), ...ticks].forEach(u => {
            if (overlap(box(t), box(u))) found.push(`overlap: ${named(t)} / ${named(u)}`);
        }));
        for (const t of titles) if (label && overlap(box(t), box(label))) found.push(`overlap: ${named(t)} / label`);
        const bar = plot.querySelector('.modebar-container');  // the toolbar, where shown: clear of every text
        if (bar && bar.checkVisibility() && box(bar).width)
            for (const t of [...titles, ...ticks, ...texts('.textpoint text')])
                if (overlap(box(t), box(bar))) found.push(`overlap: ${named(t)} / toolbar`);
    }
    return found;
}"""
# The tallest band across a chart with nothing drawn in it (text, plot area, colour bar), in px.
EMPTY_BAND_JS = """(chart) => {
    const block = document.querySelector(chart), svg = block.querySelector('.main-svg').getBoundingClientRect();
    const drawn = [...block.querySelectorAll('[data-testid=block-label], .main-svg text, .nsewdrag, .cbfills')]
        .map(e => e.getBoundingClientRect()).filter(r => r.height > 0).sort((a, b) => a.top - b.top);
    let reached = svg.top, band = 0;
    for (const r of drawn) { band = Math.max(band, r.top - reached); reached = Math.max(reached, r.bottom); }
    return Math.max(band, svg.bottom - reached);
}"""


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    if not CHROMIUM.is_file() and not shutil.which(str(CHROMIUM)):
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium, or set IQA_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = _browser_missing()
    if reason:
        if os.environ.get("IQA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"IQA_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_page(browser, server):
    pages = []

    def open_(viewport=DESKTOP, query: str = ""):
        page = browser.new_page(viewport=viewport)
        pages.append(page)
        page.goto(server + query, timeout=TIMEOUT)
        page.wait_for_selector("#photo-upload input[type=file]", state="attached", timeout=TIMEOUT)
        return page

    yield open_
    for page in pages:
        page.close()


def _shot(page, name: str) -> None:
    """A full-page screenshot once every event has finished, without the notices on top."""
    page.wait_for_function("!document.body.innerText.includes('processing |')", timeout=TIMEOUT)
    for close in page.locator(".toast-close").all():
        close.click()
    page.wait_for_timeout(300)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _add_examples(page) -> None:
    page.click("#add-examples")
    page.wait_for_function(
        "document.querySelector('#score-status')?.innerText?.includes('Scored 12 photo')", timeout=TIMEOUT
    )
    page.wait_for_selector("#breakdown .main-svg .ytick", timeout=TIMEOUT)  # drawn, not only sent


def _wait_status(page, text: str) -> None:
    page.wait_for_function(f"document.querySelector('#score-status')?.innerText?.includes({text!r})", timeout=TIMEOUT)


def _bars(page, chart: str = "#breakdown") -> list[str]:
    """The y-axis labels of a bar chart, top to bottom as drawn (the lines of a label joined)."""
    return page.evaluate(
        f"""() => [...document.querySelectorAll('{chart} .yaxislayer-above .ytick text')]
            .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
            .map(t => t.textContent)"""
    )


def _choose(page, dropdown: str, option: str) -> None:
    page.click(f"{dropdown} input")
    page.get_by_role("option", name=option, exact=True).click()


def _tab(page, name: str) -> None:
    """Open a tab: one tap on its button, on a phone too."""
    page.get_by_role("tab", name=name).click()


def _unreadable(page, chart: str) -> list[str]:
    """What `UNREADABLE_JS` finds once the chart is drawn and its size has settled (it follows its box)."""
    page.wait_for_function(
        """(chart) => {
            const svg = document.querySelector(`${chart} .js-plotly-plot .main-svg`);
            const size = svg && `${svg.getAttribute('width')}x${svg.getAttribute('height')}`;
            const steady = size && size === window.lastChartSize;
            window.lastChartSize = size;
            return steady;
        }""",
        arg=chart,
        polling=300,
        timeout=TIMEOUT,
    )
    return page.evaluate(UNREADABLE_JS, chart)


def _upload_checkpoint(page, folder: Path) -> None:
    """A GRMP-IQA checkpoint, chosen on upload and scored at once."""
    tensors, json_path = good_checkpoint(folder)
    with page.expect_file_chooser() as chooser:
        page.click("text=Upload GRMP-IQA checkpoint")
    chooser.value.set_files([str(json_path), str(tensors)])
    _wait_status(page, "GRMP-IQA: GRMP-IQA (seed)")
    page.wait_for_function("document.querySelector('#breakdown')?.textContent?.includes('MLP head')", timeout=TIMEOUT)


def test_upload_edit_prompt_score_and_see_ranking_and_chart(open_page):
    page = open_page()
    assert page.locator(".test-warning").first.is_visible()
    page.set_input_files(
        "#photo-upload input[type=file]",
        [str(ROOT / "examples" / "astronaut.jpg"), str(ROOT / "examples" / "chelsea_jpeg_L5.jpg")],
    )
    _wait_status(page, "Scored 2 photo(s)")
    cell = page.locator('#prompt-table [data-testid="cell-0-1"]')
    cell.dblclick()
    page.keyboard.press("Control+a")
    page.keyboard.type("A stunning image")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "[...document.querySelectorAll('#breakdown text')].some(t => t.textContent.includes('A stunning image'))",
        timeout=TIMEOUT,
    )
    names = page.locator(f'#ranking [data-testid^="cell-"][data-col="{NAME_COL}"]').all_inner_texts()
    assert sorted(names) == ["astronaut.jpg", "chelsea_jpeg_L5.jpg"]
    assert page.locator('#ranking [data-testid^="cell-"][data-col="1"] img').count() == 2
    status = page.inner_text("#score-status")
    assert "on cpu" in status and "0 image(s) encoded" in status  # the edit re-used the cached features
    page.wait_for_function("document.querySelector('#preset input')?.value === 'custom'")  # named, and kept


def test_no_stale_state_after_any_table_edit_and_the_chosen_photo_stays(open_page, tmp_path):
    page = open_page()
    _add_examples(page)
    _wait_status(page, "with 5 pair(s)")
    _choose(page, "#photo-pick", "coffee.jpg")
    page.wait_for_function(
        "document.querySelector('#breakdown .gtitle')?.textContent?.startsWith('coffee.jpg')", timeout=TIMEOUT
    )
    page.wait_for_selector("#breakdown .ytick", timeout=TIMEOUT)
    first = _bars(page)[0]

    page.fill("#row-number input", "1")
    page.click("text=Delete")  # delete: 4 pairs, the deleted one gone from the breakdown
    _wait_status(page, "with 4 pair(s)")
    page.wait_for_function(f"!document.querySelector('#breakdown')?.textContent?.includes({first!r})", timeout=TIMEOUT)
    assert page.locator("#breakdown .gtitle").text_content().startswith("coffee.jpg")  # still the chosen photo

    second = _bars(page)[1]
    page.fill("#row-number input", "2")
    page.click("button:text-is('Up')")  # up: the second pair first in the breakdown
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('#breakdown .yaxislayer-above .ytick text')]
            .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)[0]
            .textContent === {second!r}""",
        timeout=TIMEOUT,
    )
    page.click("button:text-is('Add row')")  # add row: the empty row is marked and left out
    page.wait_for_function(
        "document.querySelector('#prompt-table')?.innerText?.includes('invalid: the positive prompt is empty')",
        timeout=TIMEOUT,
    )
    assert "with 4 pair(s)" in page.inner_text("#score-status")

    _upload_checkpoint(page, tmp_path)  # a checkpoint: chosen on upload, and scored at once
    assert page.locator("#breakdown .gtitle").text_content().startswith("coffee.jpg")
    assert page.locator("#scatter .js-plotly-plot").count() == 1
    assert _unreadable(page, "#breakdown") == [] and _unreadable(page, "#scatter") == []
    _shot(page, "light-score-with-grmp")

    page.get_by_role("tab", name="Filter").click()  # a zip made, then the threshold moves: the zip is gone
    _type_threshold(page, "0")
    page.click("#make-zip")
    page.wait_for_selector("#kept-zip", state="visible", timeout=TIMEOUT)
    slider = page.locator("#threshold input[type=range]")
    slider.fill("0.2")
    page.wait_for_selector("#kept-zip", state="hidden", timeout=TIMEOUT)
    page.wait_for_function(
        "document.querySelector('#filter-summary')?.innerText?.includes('>= 0.200')", timeout=TIMEOUT
    )


def _headers(page) -> list[str]:
    return [h.strip() for h in page.locator("#ranking thead th").all_inner_texts()]


def test_the_method_chooser_sets_the_columns_and_the_scatters_axes(open_page, tmp_path):
    page = open_page()
    _add_examples(page)
    _upload_checkpoint(page, tmp_path)
    page.wait_for_selector("#scatter .js-plotly-plot", timeout=TIMEOUT)
    page.locator("#methods").get_by_label("GRMP-IQA").uncheck()  # unchecked: its column and the scatter go
    page.wait_for_function(
        "![...document.querySelectorAll('#ranking thead th')].some(h => h.innerText.includes('GRMP-IQA'))",
        timeout=TIMEOUT,
    )
    page.wait_for_selector("#scatter", state="hidden", timeout=TIMEOUT)
    assert "CLIP-IQA" in " ".join(_headers(page))
    page.locator("#methods").get_by_label("GRMP-IQA").check()
    page.wait_for_selector("#scatter .js-plotly-plot", timeout=TIMEOUT)
    assert "GRMP-IQA" in " ".join(_headers(page))
    for axis, method in (("#scatter-y", "CLIP-IQA"), ("#scatter-x", "GRMP-IQA")):  # GRMP-IQA across, CLIP-IQA up
        page.click(f"{axis} input")
        page.locator(axis).get_by_role("option", name=method, exact=True).click()
    page.wait_for_function(
        "document.querySelector('#scatter .xtitle')?.textContent?.startsWith('GRMP-IQA')", timeout=TIMEOUT
    )
    assert page.locator("#scatter .ytitle").text_content().startswith("CLIP-IQA")


def test_five_methods_side_by_side_on_the_bundled_photos(open_page, tmp_path):
    """Every registered method chosen: a column each in the ranking, each in the chosen photo's
    breakdown, and the scatter across any two of them."""
    page = open_page()
    _add_examples(page)
    _upload_checkpoint(page, tmp_path)
    others = [name for name in registry.names() if name not in ("CLIP-IQA", "GRMP-IQA")]
    assert {"CLIP-IQA+", "MA-CLIP", "QualiCLIP"} <= set(others)
    for name in others:
        page.locator("#methods").get_by_label(name, exact=True).check()
        page.wait_for_function(
            f"[...document.querySelectorAll('#ranking thead th')].some(h => h.innerText.trim() === {name!r})",
            timeout=TIMEOUT,
        )
    _wait_status(page, "Scored 12 photo")
    headers = _headers(page)
    assert all(name in headers for name in registry.names())
    assert page.evaluate(CUT_HEADERS_JS, "#ranking") == []  # "CLIP-IQA+", "QualiCLIP" whole: widths follow the columns
    for name in registry.names():  # a score in every method's column of the first row
        cell = page.locator(f'#ranking [data-testid^="cell-"][data-col="{headers.index(name)}"]').first
        assert re.fullmatch(r"0\.\d{3}|1\.000", cell.inner_text().strip()), (name, cell.inner_text())
    for part in ("MLP head", "CLIP-IQA+: learned", "MA-CLIP: ", "QualiCLIP: "):
        page.wait_for_function(
            f"document.querySelector('#breakdown')?.textContent?.includes({part!r})", timeout=TIMEOUT
        )
    for axis, method in (("#scatter-x", "MA-CLIP"), ("#scatter-y", "QualiCLIP")):
        page.click(f"{axis} input")
        page.locator(axis).get_by_role("option", name=method, exact=True).click()
    page.wait_for_function(
        """() => document.querySelector('#scatter .xtitle')?.textContent?.startsWith('MA-CLIP')
            && document.querySelector('#scatter .ytitle')?.textContent?.startsWith('QualiCLIP')""",
        timeout=TIMEOUT,
    )
    assert not page.evaluate(UNREADABLE_JS, "#scatter")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "five-methods-desktop.png"), full_page=True)


def _luminance(rgb: list[float]) -> float:
    channels = [c / 255 for c in rgb[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_dark_theme_banner_is_readable_and_charts_follow_the_theme(open_page):
    page = open_page(query="?__theme=dark")
    _add_examples(page)
    page.wait_for_selector("#breakdown .xtick text", timeout=TIMEOUT)
    colours = page.evaluate(
        """() => {
        const parse = c => c.match(/[\\d.]+/g).map(Number);
        const text = document.querySelector('.test-warning strong');
        let node = text, background = null;
        while (node) {
            const c = getComputedStyle(node).backgroundColor;
            if (parse(c).length < 4 || parse(c)[3] > 0) { background = c; break; }
            node = node.parentElement;
        }
        const tick = document.querySelector('#breakdown .xtick text');
        let behind = null;  // what the chart's text is drawn on: the first opaque background behind it
        for (node = tick; node; node = node.parentElement) {
            const c = node instanceof Element ? getComputedStyle(node).backgroundColor : null;
            if (c && (parse(c).length < 4 || parse(c)[3] > 0)) { behind = c; break; }
        }
        return {text: parse(getComputedStyle(text).color), background: parse(background),
                page: parse(behind), tick: parse(getComputedStyle(tick).fill)};
    }"""
    )
    lighter, darker = sorted([_luminance(colours["text"]), _luminance(colours["background"])], reverse=True)
    assert (lighter + 0.05) / (darker + 0.05) >= 4.5, colours
    page_lum, tick_lum = _luminance(colours["page"]), _luminance(colours["tick"])
    assert page_lum < 0.1 and (max(page_lum, tick_lum) + 0.05) / (min(page_lum, tick_lum) + 0.05) >= 4.5, colours
    assert _unreadable(page, "#breakdown") == []
    _shot(page, "dark-score")
    page.get_by_role("tab", name="Filter").click()
    assert _unreadable(page, "#histogram") == []
    _shot(page, "dark-filter")


def test_phone_layout_shows_whole_scores_and_readable_charts(open_page):
    page = open_page(viewport=PHONE)
    _add_examples(page)
    cut = page.evaluate(
        """() => [...document.querySelectorAll('#ranking [data-testid^="cell-"]')]
            .filter(c => ['2', 'DECISION_COL'].includes(c.dataset.col))
            .filter(c => c.scrollWidth > c.clientWidth + 1 || c.innerText.includes('…'))
            .map(c => c.innerText)""".replace("DECISION_COL", str(DECISION_COL))
    )
    assert cut == []
    scores = page.locator('#ranking [data-testid^="cell-"][data-col="2"]').all_inner_texts()
    assert scores and all(len(s.strip()) == 5 for s in scores), scores  # "0.403": three decimals, whole
    on_screen = page.evaluate(
        """() => {
            const shown = document.querySelector('#ranking .table-wrap').getBoundingClientRect().right;
            return [...document.querySelectorAll('#ranking [data-testid^="cell-"][data-col="DECISION_COL"]')]
                .every(c => c.getBoundingClientRect().right <= shown);
        }""".replace("DECISION_COL", str(DECISION_COL))
    )
    assert on_screen  # the scores and the decision fit the phone's width, no sideways scrolling needed
    box = page.locator("#breakdown .js-plotly-plot").bounding_box()
    assert box["height"] > 250 and box["width"] <= PHONE["width"]
    assert _unreadable(page, "#breakdown") == []
    _shot(page, "phone-score")
    page.locator("#ranking").screenshot(path=str(ARTIFACTS / "phone-ranking.png"))
    page.locator("#breakdown").screenshot(path=str(ARTIFACTS / "phone-breakdown.png"))


# each header of a table whose text is cut (wider than its box) or broken onto a second line
CUT_HEADERS_JS = """(table) => [...document.querySelectorAll(`${table} th .header`)]
    .filter(h => h.scrollWidth > h.clientWidth + 1 || h.getBoundingClientRect().height > 24)
    .map(h => h.textContent.trim())"""


def test_a_phone_reaches_every_tab_in_one_tap_and_reads_every_header_whole(open_page):
    page = open_page(viewport=PHONE)
    tabs = page.get_by_role("tab")
    assert [t.inner_text() for t in tabs.all() if t.is_visible()] == ["Score", "Prompt lab", "Adapt", "Filter", "About"]
    assert page.locator("button[aria-label='More tabs']").is_hidden()
    assert page.evaluate(CUT_HEADERS_JS, "#prompt-table") == []  # "weight", "status": never "we/ig/ht"
    _add_examples(page)
    assert page.evaluate(CUT_HEADERS_JS, "#ranking") == []
    page.locator("#breakdown .nsewdrag").click()  # a finger on the chart: no toolbar over its title
    assert page.locator("#breakdown .modebar-container").is_hidden()
    _shot(page, "phone-tabs-and-tables")


def test_each_edit_scores_once_and_warns_once(open_page):
    """Enter in a cell sends the same input event twice; only one score request goes to the server."""
    page = open_page()
    config = page.evaluate("async () => (await (await fetch('config')).json()).dependencies")
    scoring = {d["id"] for d in config if str(d.get("api_name")).startswith("score")}
    _add_examples(page)
    _wait_status(page, "with 5 pair(s)")
    joins: list[int] = []
    page.on(
        "request",
        lambda r: joins.append(r.post_data_json["fn_index"]) if "queue/join" in r.url else None,
    )
    for row in range(5):  # every weight 0, one cell at a time: the last edit leaves nothing to score
        before = len(joins)
        page.locator(f'#prompt-table [data-testid="cell-{row}-3"]').dblclick()
        page.keyboard.press("Control+a")
        page.keyboard.type("0")
        page.keyboard.press("Enter")
        page.wait_for_function("!document.body.innerText.includes('processing |')", timeout=TIMEOUT)
        page.wait_for_timeout(500)
        assert sum(fn in scoring for fn in joins[before:]) == 1, joins[before:]
    _wait_status(page, "every enabled row has weight 0")
    warnings = [t for t in page.locator(".toast-body").all_inner_texts() if "weight 0" in t]
    assert len(warnings) == 1, warnings


def test_every_chart_is_whole_and_readable_on_a_phone(open_page, tmp_path):
    """Every title, axis title, tick label, legend entry, annotation and value of every chart on
    every tab lies within the chart and the screen at 390 px, clear of the others."""
    page = open_page(viewport=PHONE)
    _add_examples(page)
    _upload_checkpoint(page, tmp_path)  # GRMP-IQA's rows in the breakdown, and the scatter

    def whole(chart: str, shot: str) -> None:
        assert _unreadable(page, chart) == [], chart
        page.locator(chart).screenshot(path=str(ARTIFACTS / f"{shot}.png"))

    whole("#breakdown", "phone-breakdown-grmp")
    whole("#scatter", "phone-scatter")  # no name over another: they are placed for this plot area or larger
    area = page.locator("#scatter .nsewdrag").bounding_box()
    assert area["width"] >= charts.PLOT_AREA_PX[0] and area["height"] >= charts.PLOT_AREA_PX[1], area
    page.click("text=Side by side: two photos")  # drawn as the accordion opens: it fits the phone all the same
    whole("#side-by-side", "phone-side-by-side")
    _tab(page, "Filter")
    whole("#histogram", "phone-filter")
    _tab(page, "Score")
    page.locator("#threshold input[type=range]").fill("1")  # redrawn in the hidden tab, its label at the edge
    _tab(page, "Filter")
    page.wait_for_function("document.querySelector('#histogram')?.textContent?.includes('threshold 1.000')")
    whole("#histogram", "phone-filter-threshold-1")
    _tab(page, "Prompt lab")
    page.click("#lab-run")
    whole("#lab-chart", "phone-lab")
    _tab(page, "Adapt")
    page.click("#adapt-button")
    page.wait_for_function("document.body.innerText.includes('Done: ')", timeout=TIMEOUT)
    whole("#adapt-chart", "phone-adapt")


def test_share_link_restores_the_table_and_settings(open_page):
    page = open_page()
    _choose(page, "#preset", "paper-feel")
    page.wait_for_function("document.querySelector('#prompt-table')?.innerText?.includes('Aesthetic photo.')")
    page.wait_for_function(
        "document.querySelector('#share-link textarea, #share-link input')?.value?.includes('?share=')"
    )
    page.locator("#threshold input[type=range]").fill("0.35")  # the link follows each change, no click
    box = page.locator("#share-link textarea, #share-link input").first

    def shared_threshold() -> float | None:
        link = box.input_value()
        return decode_share(link.split("?share=")[1]).get("threshold") if "?share=" in link else None

    for _ in range(100):
        if shared_threshold() == 0.35:
            break
        page.wait_for_timeout(300)
    assert shared_threshold() == 0.35
    assert page.locator("#share-link button").count() >= 1  # a copy button
    link = box.input_value()
    assert link.startswith("http://127.0.0.1:")
    shared = open_page(query=link[link.index("?") :])
    shared.wait_for_function(
        "document.querySelector('#prompt-table')?.innerText?.includes('Aesthetic photo.')", timeout=TIMEOUT
    )
    assert shared.locator("#preset input").input_value() == "paper-feel"
    assert shared.locator("#threshold input[type=number]").input_value() == "0.35"


def test_screenshots_of_every_tab(open_page):
    page = open_page()
    _add_examples(page)
    page.click("text=Side by side: two photos")
    _choose(page, "#compare-pick", "rocket.jpg")
    assert _unreadable(page, "#side-by-side") == []
    _shot(page, "light-score")
    page.get_by_role("tab", name="Prompt lab").click()
    page.click("#lab-run")
    assert _unreadable(page, "#lab-chart") == []
    _shot(page, "light-lab")
    page.click("#lab-use")
    page.get_by_role("tab", name="Score").click()
    page.wait_for_function("document.querySelector('#preset input')?.value === 'custom'", timeout=TIMEOUT)
    page.wait_for_function(
        "!document.querySelector('#score-status')?.innerText?.includes('with 5 pair(s)')", timeout=TIMEOUT
    )
    page.get_by_role("tab", name="Filter").click()
    assert _unreadable(page, "#histogram") == []
    _shot(page, "light-filter")
    page.get_by_role("tab", name="Adapt").click()
    page.click("#adapt-button")
    page.wait_for_function("document.body.innerText.includes('Done: ')", timeout=TIMEOUT)
    assert _unreadable(page, "#adapt-chart") == []
    _shot(page, "light-adapt")
    phone = open_page(viewport=PHONE, query="?__theme=dark")
    _add_examples(phone)
    assert _unreadable(phone, "#breakdown") == []
    _shot(phone, "phone-dark-score")


def _draw_map(page, name: str) -> None:
    """Open the quality map of the chosen photo and wait until its heat map is drawn over it."""
    page.locator("#map-button").scroll_into_view_if_needed()
    page.click("#map-button")
    page.wait_for_function(
        f"""() => document.querySelector('#map-status')?.innerText?.includes('Quality map of {name}')
            && document.querySelector('#quality-map .heatmaplayer image, #quality-map .hm image')
            && [...document.querySelectorAll('#quality-map .gtitle')].some(t => t.textContent.includes({name!r}))""",
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize(
    "viewport, query, shot",
    [(DESKTOP, "", "light-map"), (DESKTOP, "?__theme=dark", "dark-map"), (PHONE, "", "phone-map")],
)
def test_the_quality_map_is_drawn_over_the_photo_and_follows_the_chosen_photo(open_page, viewport, query, shot):
    page = open_page(viewport=viewport, query=query)
    _add_examples(page)
    first = page.locator("#photo-pick input").input_value()
    _draw_map(page, first)
    box = page.locator("#quality-map .js-plotly-plot").bounding_box()
    assert box["height"] > 250 and box["width"] <= viewport["width"]
    photo = page.locator("#quality-map .layer-below image, #quality-map .imagelayer image").count()
    assert photo >= 1  # the photo under the heat map
    assert _unreadable(page, "#quality-map") == []
    spans = page.locator("#quality-map .nsewdrag").bounding_box()["width"]
    assert spans >= box["width"] - 60  # the photo spans the chart, but for the y axis's numbers
    assert page.evaluate(EMPTY_BAND_JS, "#quality-map") <= 45  # and the chart is as tall as its content
    page.locator("#quality-map").screenshot(path=str(ARTIFACTS / f"{shot}.png"))
    other = "rocket.jpg" if first != "rocket.jpg" else "astronaut.jpg"
    _choose(page, "#photo-pick", other)  # the open map follows the chosen photo, with no click
    page.wait_for_function(
        f"[...document.querySelectorAll('#quality-map .gtitle')].some(t => t.textContent.includes({other!r}))",
        timeout=TIMEOUT,
    )
    _shot(page, f"{shot}-page")


def _no_error_badges(page) -> list[str]:
    """The ids of the components that show Gradio's red "Error" badge."""
    return page.evaluate(
        """() => [...document.querySelectorAll('.error')].filter(e => e.offsetParent && e.innerText.trim() === 'Error')
            .map(e => e.closest('[id]')?.id || '?')"""
    )


def test_all_weights_zero_clears_every_result_with_a_reason(open_page, tmp_path):
    page = open_page()
    _add_examples(page)
    zero = tmp_path / "zero.json"
    zero.write_text('[{"positive": "a good photo", "negative": "a bad photo", "weight": 0}]')
    with page.expect_file_chooser() as chooser:
        page.click("text=Load prompt set")
    chooser.value.set_files(str(zero))
    _wait_status(page, "every enabled row has weight 0")
    page.wait_for_function(
        "document.querySelector('#prompt-table')?.innerText?.includes('weights add up to 0')", timeout=TIMEOUT
    )
    assert page.locator(f'#ranking [data-testid^="cell-"][data-col="{NAME_COL}"]').count() == 0
    assert page.locator("#breakdown").is_hidden()
    assert _no_error_badges(page) == []
    page.get_by_role("tab", name="Filter").click()
    page.wait_for_function(
        "document.querySelector('#filter-summary')?.innerText?.includes('nothing could be scored')", timeout=TIMEOUT
    )
    assert page.locator("#kept .thumbnail-item").count() == 0 and page.locator("#filter-list").is_hidden()
    _shot(page, "light-zero-weights-filter")


def test_the_photo_set_is_what_the_upload_box_shows(open_page):
    page = open_page()
    photos = [ROOT / "examples" / name for name in ("astronaut.jpg", "chelsea_jpeg_L5.jpg", "coffee.jpg")]
    page.set_input_files("#photo-upload input[type=file]", [str(p) for p in photos[:2]])
    _wait_status(page, "Scored 2 photo(s)")
    page.locator("#photo-upload button[aria-label='Remove this file']").first.click()  # its x: unscored
    _wait_status(page, "Scored 1 photo(s)")
    names = page.locator(f'#ranking [data-testid^="cell-"][data-col="{NAME_COL}"]').all_inner_texts()
    assert names == ["chelsea_jpeg_L5.jpg"]
    assert page.locator("#gallery .thumbnail-item").count() == 1
    page.click("button:text-is('Clear photos')")  # the box is emptied too
    page.wait_for_function(
        "document.querySelector('#photo-info')?.innerText?.includes('No photos yet')", timeout=TIMEOUT
    )
    page.wait_for_selector("#photo-upload button[aria-label='Remove this file']", state="detached", timeout=TIMEOUT)
    _wait_status(page, "No photos yet")  # the results cleared too, before the next upload
    page.set_input_files("#photo-upload input[type=file]", [str(photos[2])])  # the cleared photos stay out
    _wait_status(page, "Scored 1 photo(s)")
    page.wait_for_function(
        """() => [...document.querySelectorAll('#ranking [data-testid^="cell-"][data-col="NAME_COL"]')]
            .map(c => c.innerText).join() === 'coffee.jpg'""".replace("NAME_COL", str(NAME_COL)),
        timeout=TIMEOUT,
    )
    _shot(page, "light-upload-box")


def _type_threshold(page, value: str) -> None:
    box = page.locator("#threshold input[type=number]")
    box.fill(value)
    box.press("Enter")
    box.blur()


def test_the_threshold_box_shows_the_value_used(open_page):
    page = open_page()
    _add_examples(page)
    _type_threshold(page, "1.7")  # out of range: the box shows the value used, and no error badge
    page.wait_for_function("document.querySelector('#threshold input[type=number]')?.value === '1'", timeout=TIMEOUT)
    page.get_by_role("tab", name="Filter").click()
    page.wait_for_function(
        "document.querySelector('#filter-summary')?.innerText?.includes('>= 1.000')", timeout=TIMEOUT
    )
    assert _no_error_badges(page) == []
    _type_threshold(page, "0.4015")  # three decimals, as used
    page.wait_for_function("document.querySelector('#filter-summary')?.innerText?.includes('>= 0.40')", timeout=TIMEOUT)
    shown = page.locator("#threshold input[type=number]").input_value()
    summary = page.inner_text("#filter-summary")
    assert len(shown.split(".")[1]) <= 3 and f">= {float(shown):.3f}" in summary, (shown, summary)
    assert _no_error_badges(page) == []


def test_nothing_kept_offers_no_zip_and_the_kept_gallery_says_why(open_page):
    page = open_page()
    _add_examples(page)
    page.get_by_role("tab", name="Filter").click()
    _type_threshold(page, "0")
    page.wait_for_selector("#make-zip", state="visible", timeout=TIMEOUT)
    _type_threshold(page, "1")
    page.wait_for_function(
        "document.querySelector('#filter-summary')?.innerText?.startsWith('0 kept')", timeout=TIMEOUT
    )
    page.wait_for_selector("#make-zip", state="hidden", timeout=TIMEOUT)
    assert "no photo at or above the threshold" in page.inner_text("#kept")
    _shot(page, "light-nothing-kept")


def test_a_refused_checkpoint_upload_is_shown_whole(open_page, tmp_path):
    page = open_page()
    tensors, _json_path = good_checkpoint(tmp_path)
    with page.expect_file_chooser() as chooser:
        page.click("text=Upload GRMP-IQA checkpoint")
    chooser.value.set_files([str(tensors)])
    page.wait_for_function(
        "document.body.innerText.includes('as its two files: <name>.json and <name>.safetensors')", timeout=TIMEOUT
    )


def test_the_prompt_lab_follows_the_table_after_use_the_best_pairs(open_page):
    page = open_page()
    _tab(page, "Prompt lab")
    page.click("#lab-run")
    page.wait_for_function(
        "document.querySelector('#lab-summary')?.innerText?.includes('combined score of the enabled pairs')",
        timeout=TIMEOUT,
    )
    before = page.inner_text("#lab-summary")
    page.click("#lab-use")  # the table now has the best pairs on, the others off: the lab says so
    page.wait_for_function(
        f"document.querySelector('#lab-summary')?.innerText !== {before!r}"
        " && [...document.querySelectorAll('#lab-table [data-testid^=cell-][data-col=\"4\"]')]"
        ".some(c => c.innerText.trim() === 'false')",
        timeout=TIMEOUT,
    )
    assert "average" in page.inner_text("#lab-summary")


# A Gradio table's cells as rows of texts (cells are `data-testid="cell-ROW-COL"`).
TABLE_ROWS_JS = """(table) => {
    const rows = [];
    for (const cell of document.querySelectorAll(`${table} [data-testid^=cell-]`)) {
        const [, row, col] = cell.getAttribute('data-testid').match(/^cell-(\\d+)-(\\d+)$/) || [];
        if (row === undefined) continue;
        (rows[Number(row)] ||= [])[Number(col)] = cell.innerText.trim();
    }
    return rows.filter(Boolean);
}"""


def test_the_lab_calibrates_the_filter_and_its_threshold_sets_the_bar(open_page):
    page = open_page()
    _add_examples(page)
    _tab(page, "Prompt lab")
    page.click("#cal-target label:has-text('best F1')")
    page.click("#cal-run")
    page.wait_for_function(
        "document.querySelector('#cal-summary')?.innerText?.includes('(64 photos: 40 reject, 24 keep)')",
        timeout=TIMEOUT,
    )
    page.wait_for_selector("#cal-roc .main-svg .xtick", timeout=TIMEOUT)
    page.wait_for_selector("#cal-pr .main-svg .xtick", timeout=TIMEOUT)
    summary = page.inner_text("#cal-summary")
    threshold = page.locator("#cal-threshold input").input_value()
    assert f"Threshold {float(threshold):g}" in summary and "rejects" in summary and "good ones" in summary
    mistakes = page.locator("#cal-false-keeps img, #cal-false-rejects img").count()
    assert mistakes > 0 or "loses 0 of 24 good ones" in summary  # a mistake of some kind is shown
    _shot(page, "light-lab-calibration")
    page.click("#cal-use")
    page.wait_for_function(
        f"Number(document.querySelector('#threshold input[type=number]')?.value) === {float(threshold)}",
        timeout=TIMEOUT,
    )
    page.get_by_role("tab", name="Filter").click()
    page.wait_for_function(
        f"document.querySelector('#filter-summary')?.innerText?.includes('>= {float(threshold):.3f}')",
        timeout=TIMEOUT,
    )
    box = page.locator("#share-link textarea, #share-link input").first
    page.wait_for_function(
        "() => document.querySelector('#share-link textarea, #share-link input')?.value?.includes('?share=')",
        timeout=TIMEOUT,
    )
    for _ in range(100):  # the link follows the threshold set from the lab
        if decode_share(box.input_value().split("?share=")[1]).get("threshold") == float(threshold):
            break
        page.wait_for_timeout(300)
    assert decode_share(box.input_value().split("?share=")[1]).get("threshold") == float(threshold)
    assert _no_error_badges(page) == []


def test_the_lab_searches_pairs_and_puts_them_in_the_prompt_table(open_page):
    page = open_page()
    _tab(page, "Prompt lab")
    page.fill("#search-words textarea", "sunny / rainy")
    page.click("#search-run")
    page.wait_for_function(
        "document.querySelector('#search-summary')?.innerText?.includes('Cross-validated AUC')", timeout=TIMEOUT
    )
    summary = page.inner_text("#search-summary")
    assert "from 192 candidates" in summary and "pyiqa preset:" in summary and "±" in summary
    picked = [line.split(": ", 1)[1] for line in summary.splitlines() if re.match(r"pair \d+: ", line)]
    selected = [line.split(" / ")[0] for line in picked]
    assert 1 <= len(selected) <= 5
    assert page.locator("#search-table [data-testid^=cell-]").count() > 0
    page.click("#search-use")
    _tab(page, "Score")
    page.wait_for_function(
        f"(wanted) => JSON.stringify(({TABLE_ROWS_JS})('#prompt-table').map(r => r[1])) === JSON.stringify(wanted)",
        arg=selected,
        timeout=TIMEOUT,
    )
    assert _no_error_badges(page) == []


def test_an_adaptation_can_be_stopped_and_about_names_the_adapted_checkpoint(open_page):
    page = open_page()
    _tab(page, "Adapt")
    page.locator("#steps input[type=range]").fill("2000")
    page.click("#adapt-button")
    page.wait_for_function("document.body.innerText.includes('Step ')", timeout=TIMEOUT)
    page.click("#adapt-stop")
    page.wait_for_function("document.body.innerText.includes('no checkpoint was saved')", timeout=TIMEOUT)
    assert "Stopped at step" in page.inner_text("body")
    page.locator("#steps input[type=range]").fill("10")
    page.click("#adapt-button")
    page.wait_for_function("document.body.innerText.includes('Done: ')", timeout=TIMEOUT)
    _tab(page, "About")
    page.wait_for_function(
        "document.querySelector('#loaded')?.innerText?.includes(\"This session's own GRMP-IQA checkpoints\")",
        timeout=TIMEOUT,
    )
    loaded = page.inner_text("#loaded")
    assert "seed-adapted-1" in loaded and "No GRMP-IQA model loaded" not in loaded
