"""The page for everyone: an axe-core audit at phone and desktop widths, and the journey by keyboard alone.

axe-core comes from the npm registry (``make`` installs it into ``.axe/``; ``RECSYS_AXE_JS`` points
elsewhere) and is injected into the page by the test. The keyboard journey is the usability protocol's
tasks (``docs/usability.md``): each task is timed and the times are kept as a CI artifact (recorded, not
asserted: speed is for benchmarks).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PROJECT_ROOT, Server
from tests.serving.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow
AXE_JS = Path(os.environ.get("RECSYS_AXE_JS") or PROJECT_ROOT / ".axe/node_modules/axe-core/axe.min.js")
WIDTHS = {"phone": {"width": 375, "height": 740}, "desktop": {"width": 1280, "height": 900}}
BLOCKING = {"serious", "critical"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: run `bash scripts/chromium.sh`"
    assert AXE_JS.is_file(), f"{AXE_JS} is missing: run `make .axe/node_modules/axe-core/axe.min.js`"
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def _audit(page: Any, state: str) -> list[str]:
    """axe-core's serious and critical violations on the page as it is, one line each."""
    page.add_script_tag(path=str(AXE_JS))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{state}: {v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in BLOCKING
    ]


def _focus(page: Any, name: str, limit: int = 40) -> None:
    """Tab until the control whose accessible name is ``name`` has the focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement;"
            " return e ? (e.getAttribute('aria-label') || e.textContent || '').trim() : ''; }"
        )
        if focused == name:
            return
    raise AssertionError(f"{name!r} was not reached with Tab")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_page_passes_an_accessibility_audit_at_each_width(
    browser: Any, server: Server, width: str
) -> None:
    context = browser.new_context(viewport=WIDTHS[width])
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server.url + "/")
    problems = _audit(page, "empty page")
    search = page.get_by_label("Search artists")
    search.fill("radio")
    page.get_by_role("option").first.wait_for()
    search.press("ArrowDown")
    problems += _audit(page, "suggestions open")
    search.press("Enter")
    page.get_by_role("button", name="Get recommendations").click()
    page.get_by_role("list", name="Recommended artists").get_by_role("listitem").nth(9).wait_for()
    page.get_by_role("button", name="Show what is stored about me").click()
    page.get_by_text("Nothing is stored about you yet.").wait_for()
    problems += _audit(page, "recommendations shown")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"page-{width}.png"), full_page=True)
    # Nothing wider than the screen: a phone reader never scrolls sideways.
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    context.close()
    assert not problems, "\n".join(problems)
    assert overflow <= 0, f"the page is {overflow} px wider than a {width} screen"


def test_the_whole_journey_works_with_the_keyboard_alone(browser: Any, server: Server) -> None:
    """The protocol's tasks, by keyboard: search, pick three, get a list, like one; each timed."""
    page = browser.new_context(viewport=WIDTHS["desktop"]).new_page()
    page.set_default_timeout(30_000)
    page.goto(server.url + "/")
    times: dict[str, float] = {}
    favourites = page.get_by_role("list", name="Your favourite artists")

    started = time.perf_counter()
    _focus(page, "")  # the search box has no aria-label: its name comes from its <label>
    assert page.evaluate("document.activeElement.id") == "artist-search"
    page.keyboard.type("radio")
    page.get_by_role("option").first.wait_for()
    times["search"] = time.perf_counter() - started

    started = time.perf_counter()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    for query in ("Rammst", "rock band"):
        page.keyboard.type(query)  # the search box keeps the focus after a pick
        page.get_by_role("option").first.wait_for()
        page.keyboard.press("Enter")  # the best match of the typed text
    favourites.get_by_role("listitem").nth(2).wait_for()
    times["pick_three"] = time.perf_counter() - started

    started = time.perf_counter()
    _focus(page, "Get recommendations")
    page.keyboard.press("Enter")
    rows = page.get_by_role("list", name="Recommended artists").get_by_role("listitem")
    rows.nth(9).wait_for()
    times["get_a_list"] = time.perf_counter() - started

    started = time.perf_counter()
    first = rows.nth(0).locator("strong").inner_text()
    _focus(page, f"Like {first}")
    page.keyboard.press("Enter")
    favourites.get_by_text(first).wait_for()
    times["like_one"] = time.perf_counter() - started

    assert favourites.get_by_role("listitem").count() == 4
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    record = {"tasks_s": {task: round(seconds, 3) for task, seconds in times.items()}, "input": "keyboard"}
    (ARTIFACTS / "usability_tasks.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    page.context.close()


def test_the_audit_reports_what_it_is_meant_to_catch(browser: Any) -> None:
    """A control: the same audit on a page with a nameless button and an unlabelled field fails."""
    page = browser.new_page()
    page.set_content(
        "<html lang='en'><title>t</title><main><button></button><input type='text'></main></html>"
    )
    problems = _audit(page, "broken page")
    page.close()
    assert any("button-name" in line for line in problems) and any("label" in line for line in problems)
