"""The app in a real browser: Debian's headless Chromium driven by Playwright.

Skipped when Chromium or Playwright is missing, unless IQA_REQUIRE_BROWSER=1 (then it fails).
The screenshot lands in artifacts/ (git-ignored) for a person to look at.
"""

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    if not CHROMIUM.is_file() and not shutil.which(str(CHROMIUM)):
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium, or set IQA_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    reason = _browser_missing()
    if reason:
        if os.environ.get("IQA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"IQA_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def test_upload_edit_prompt_score_and_see_ranking_and_chart(browser_page, server):
    page = browser_page
    page.goto(server, timeout=60_000)
    page.wait_for_selector("#photo-upload input[type=file]", state="attached", timeout=60_000)
    assert page.locator(".test-warning").first.is_visible()
    page.set_input_files(
        "#photo-upload input[type=file]",
        [str(ROOT / "examples" / "astronaut.jpg"), str(ROOT / "examples" / "chelsea_jpeg_L5.jpg")],
    )
    page.wait_for_function(
        "document.querySelector('#score-status').innerText.includes('Scored 2 photo(s)')", timeout=60_000
    )

    cell = page.locator('#prompt-table [data-testid="cell-0-1"]')
    cell.dblclick()
    page.keyboard.press("Control+a")
    page.keyboard.type("A stunning image")
    page.keyboard.press("Enter")
    page.click("#score-button")
    page.wait_for_function(
        "[...document.querySelectorAll('#breakdown text')].some(t => t.textContent.includes('A stunning image'))",
        timeout=60_000,
    )

    names = page.locator('#ranking [data-testid^="cell-"][data-col="2"]').all_inner_texts()
    assert sorted(names) == ["astronaut.jpg", "chelsea_jpeg_L5.jpg"]
    assert page.locator('#ranking [data-testid^="cell-"][data-col="1"] img').count() == 2
    assert page.locator("#breakdown .js-plotly-plot").count() == 1
    status = page.inner_text("#score-status")
    assert "on cpu" in status and "0 image(s) encoded" in status  # the edit re-used the cached features
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-score-tab.png"), full_page=True)
