"""The listener's journey in headless Chromium (Debian's, see scripts/chromium.sh), driven by Playwright."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Project, Server, start_server, stop_server
from tests.serving.conftest import save_champion

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Screenshots go to RECSYS_TEST_ARTIFACTS (CI can upload that folder), else a folder under the temp dir.
ARTIFACTS = Path(
    os.environ.get("RECSYS_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "recsys-test-artifacts"
)


@pytest.fixture(scope="module")
def page(server: Server) -> Iterator[object]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: run `bash scripts/chromium.sh`")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        opened = browser.new_page()
        opened.set_default_timeout(30_000)  # the 2-core machine is shared: be patient
        yield opened
        browser.close()


def _pick(page: object, query: str, expected: str, arrow_downs: int = 0, many: str = "artists") -> None:
    """Type ``query``; with ``arrow_downs`` move to that option (the first Arrow Down activates the first),
    else check no option is active and Enter takes the best match; ``expected`` is then a favourite."""
    search = page.get_by_label(f"Search {many}")  # type: ignore[attr-defined]
    search.fill(query)
    page.get_by_role("option").first.wait_for()  # type: ignore[attr-defined]
    selected = page.locator("#search-results [aria-selected=true]")  # type: ignore[attr-defined]
    if arrow_downs:
        for _ in range(arrow_downs):
            search.press("ArrowDown")
        assert selected.inner_text() == expected
    else:
        assert selected.count() == 0  # the combobox pattern: nothing active until Arrow Down
        assert page.get_by_role("option").first.inner_text() == expected  # type: ignore[attr-defined]
    search.press("Enter")
    page.get_by_role("list", name=f"Your favourite {many}").get_by_text(expected).wait_for()  # type: ignore[attr-defined]


def test_the_search_box_behaves_like_a_combobox(page: object, server: Server) -> None:
    page.goto(server.url + "/")  # type: ignore[attr-defined]
    search = page.get_by_label("Search artists")  # type: ignore[attr-defined]
    search.fill("radio")
    options = page.get_by_role("option")  # type: ignore[attr-defined]
    options.first.wait_for()
    assert (
        search.get_attribute("aria-expanded") == "true"
        and search.get_attribute("aria-activedescendant") is None
    )
    search.press("ArrowDown")  # the first suggestion, not the second
    assert search.get_attribute("aria-activedescendant") == options.first.get_attribute("id")
    assert options.first.get_attribute("aria-selected") == "true"
    search.press("ArrowUp")
    search.press("ArrowUp")  # wraps to the last
    assert options.last.get_attribute("aria-selected") == "true"
    search.press("Escape")  # closes the suggestions and keeps the text (a second Escape clears it)
    assert page.locator("#search-results").is_hidden() and search.input_value() == "radio"  # type: ignore[attr-defined]
    assert search.get_attribute("aria-expanded") == "false"
    # Enter straight after typing, before the suggestions arrive: the best match of the typed text.
    search.fill("radiohed")
    search.press("Enter")
    favourites = page.get_by_role("list", name="Your favourite artists")  # type: ignore[attr-defined]
    favourites.get_by_text("Radiohead").wait_for()
    assert search.input_value() == ""


def test_pick_artists_get_recommendations_like_and_skip(page: object, server: Server) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(server.url + "/")  # type: ignore[attr-defined]
    button = page.get_by_role("button", name="Get recommendations")  # type: ignore[attr-defined]
    assert button.is_disabled()
    _pick(page, "radio", "Radiohead")
    _pick(page, "Rammst", "Rammstein")
    _pick(page, "rock band", "Rock Band L", arrow_downs=2)
    page.screenshot(path=str(ARTIFACTS / "1-favourites.png"))  # type: ignore[attr-defined]

    button.focus()
    started = time.perf_counter()
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    rows = page.get_by_role("list", name="Recommended artists").get_by_role("listitem")  # type: ignore[attr-defined]
    rows.nth(9).wait_for()
    # Recorded, not asserted (speed is for benchmarks): the usability note quotes this file.
    seconds = time.perf_counter() - started
    (ARTIFACTS / "journey.json").write_text(json.dumps({"recommendations_shown_s": round(seconds, 3)}))
    assert rows.count() == 10
    first_ten = [rows.nth(i).get_attribute("data-item-id") for i in range(10)]
    assert all(
        any(why in rows.nth(i).inner_text() for why in ("because you like", "shares tags", "popular"))
        for i in range(10)
    )
    page.screenshot(path=str(ARTIFACTS / "2-recommendations.png"))  # type: ignore[attr-defined]

    liked = [rows.nth(0).locator("strong").inner_text(), rows.nth(1).locator("strong").inner_text()]
    gone = (
        "name => ![...document.querySelectorAll('#recommendations strong')].some(e => e.textContent == name)"
    )
    assert "music_recommender" not in page.inner_text("body")  # type: ignore[attr-defined]  # no model tags for listeners
    for name in liked:
        page.get_by_role("button", name=f"Like {name}").click()  # type: ignore[attr-defined]
        page.get_by_role("list", name="Your favourite artists").get_by_text(name).wait_for()  # type: ignore[attr-defined]
        page.get_by_text(f"Liked {name}: added to your favourites").wait_for()  # type: ignore[attr-defined]
        # The favourites list updates before the recommendations are fetched again; a favourite is never
        # recommended, so its leaving the list says the refresh is done (else the next row read below
        # can be from the old list and gone by the time it is clicked).
        page.wait_for_function(gone, arg=name)  # type: ignore[attr-defined]
    skipped = rows.nth(0).locator("strong").inner_text()
    page.get_by_role("button", name=f"Skip {skipped}").click()  # type: ignore[attr-defined]
    page.wait_for_function(gone, arg=skipped)  # type: ignore[attr-defined]
    # The server counted the stored reactions (the likes and the skip) and says the list reacts to them.
    reacted = len(liked) + 1
    page.get_by_text(f"This list reacts to your last {reacted} reactions.").wait_for()  # type: ignore[attr-defined]
    shown = [rows.nth(i).locator("strong").inner_text() for i in range(rows.count())]
    assert not set(shown) & {*liked, skipped}
    assert [rows.nth(i).get_attribute("data-item-id") for i in range(rows.count())] != first_ten
    page.screenshot(path=str(ARTIFACTS / "3-after-feedback.png"))  # type: ignore[attr-defined]


def test_a_listener_dislikes_sees_what_is_stored_and_erases_it(page: object, server: Server) -> None:
    # A browser context of its own: a new anonymous listener, whatever the other tests stored.
    context = page.context.browser.new_context()  # type: ignore[attr-defined]
    own = context.new_page()
    own.set_default_timeout(30_000)
    own.on("dialog", lambda dialog: dialog.accept())  # "Erase every reaction ...?"
    own.goto(server.url + "/")
    _pick(own, "radio", "Radiohead")
    own.get_by_role("button", name="Get recommendations").click()
    rows = own.get_by_role("list", name="Recommended artists").get_by_role("listitem")
    rows.nth(9).wait_for()
    unwanted = rows.nth(0).locator("strong").inner_text()
    own.get_by_role("button", name=f"Not for me {unwanted}").click()
    own.get_by_text(f"{unwanted} will not be recommended to you again.").wait_for()
    assert unwanted not in [rows.nth(i).locator("strong").inner_text() for i in range(rows.count())]

    own.get_by_role("button", name="Rate 4 of 5: very good").click()  # optional, asked under the list
    own.get_by_text("Thank you: you rated these 4 of 5.").wait_for()

    own.get_by_role("button", name="Show what is stored about me").click()
    stored = own.get_by_role("list", name="Stored reactions").get_by_role("listitem")
    stored.nth(1).wait_for()
    assert stored.count() == 2 and stored.first.inner_text().startswith(f"Not for me: {unwanted}")
    assert stored.nth(1).inner_text().startswith("rated a list 4 of 5")
    listener = own.evaluate("localStorage.getItem('recsys-listener')")
    assert listener not in own.inner_text("body")  # the id is the listener's key: never put on screen
    assert server.client.get(f"/users/{listener}/feedback").json()["n_events"] == 1
    own.screenshot(path=str(ARTIFACTS / "4-your-data.png"))

    own.get_by_role("button", name="Erase my data").click()
    own.get_by_text("Erased 1 reactions; you now have a new anonymous id.").wait_for()
    assert server.client.get(f"/users/{listener}/feedback").json()["n_events"] == 0
    own.get_by_role("button", name="Show what is stored about me").click()
    own.get_by_text("Nothing is stored about you yet.").wait_for()
    assert own.evaluate("localStorage.getItem('recsys-listener')") != listener
    context.close()


@pytest.fixture(scope="module")
def songs_server(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service on a champion of the song data set (its own model name), chosen by RECSYS_DATASET."""
    home = tmp_path_factory.mktemp("songs-home")
    save_champion(project, home, dataset="spotify-songs")
    workdir = tmp_path_factory.mktemp("songs-service")
    running = start_server(home, workdir, {"RECSYS_DATASET": "spotify-songs"})
    yield running
    stop_server(running)


def test_the_page_speaks_of_songs_for_a_song_catalogue(page: object, songs_server: Server) -> None:
    assert songs_server.client.get("/model").json()["item_kind"] == "track"
    page.goto(songs_server.url + "/")  # type: ignore[attr-defined]
    page.get_by_role("heading", name="Find new songs").wait_for()  # type: ignore[attr-defined]
    _pick(page, "radio", "Radiohead", many="songs")
    _pick(page, "Rammst", "Rammstein", many="songs")
    page.get_by_role("button", name="Get recommendations").click()  # type: ignore[attr-defined]
    rows = page.get_by_role("list", name="Recommended songs").get_by_role("listitem")  # type: ignore[attr-defined]
    rows.nth(9).wait_for()
    assert rows.count() == 10
    page.screenshot(path=str(ARTIFACTS / "songs-recommendations.png"))  # type: ignore[attr-defined]


def test_on_a_phone_the_song_page_fits_and_every_asset_is_found(page: object, songs_server: Server) -> None:
    context = page.context.browser.new_context(viewport={"width": 375, "height": 812})  # type: ignore[attr-defined]
    phone = context.new_page()
    phone.set_default_timeout(30_000)
    failed: list[str] = []
    phone.on("response", lambda answer: failed.append(answer.url) if answer.status >= 400 else None)
    phone.goto(songs_server.url + "/")
    phone.get_by_role("heading", name="Find new songs").wait_for()
    _pick(phone, "radio", "Radiohead", many="songs")
    phone.get_by_role("button", name="Get recommendations").click()
    rows = phone.get_by_role("list", name="Recommended songs").get_by_role("listitem")
    rows.nth(9).wait_for()
    phone.get_by_text("10 recommendations for you.").wait_for()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    assert failed == []  # the icon included: /favicon.ico and the linked SVG are served
    assert songs_server.anonymous.get("/favicon.ico").headers["content-type"] == "image/svg+xml"
    phone.screenshot(path=str(ARTIFACTS / "songs-phone.png"), full_page=True)
    context.close()
