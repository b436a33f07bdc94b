"""The web page in headless Chromium against a real `recsys serve` (gunicorn) on a real store.

Needs Debian's `chromium` and the `playwright` package (`make install` sets both up); the
browser is the system one (`executable_path`), since Playwright's own download cannot work
here. A screenshot of the page is saved in the test's tmp dir and in `test-artifacts/`.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.conftest import REPO
from tests.serving.conftest import Server

ARTIFACTS = REPO / "test-artifacts"


def chromium_path():
    for candidate in (os.environ.get("RECSYS_CHROMIUM"), "chromium", "chromium-browser"):
        path = candidate and shutil.which(candidate)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium, or make install)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page_server(serving_store, tiny_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("page-browser")
    events = root / "events.parquet"
    tiny_store.events.to_parquet(events)
    srv = Server(serving_store, root / "server.log", env={"RECSYS_EVENTS": str(events)}, workers=1)
    try:
        yield _wait_ready(srv)
    finally:
        srv.stop()


def _wait_ready(srv, timeout=180.0):
    """`srv.wait_ready()`, tolerating the read timeouts of a loaded machine."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            return srv.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
        except requests.Timeout:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_pick_a_shopper_see_recommendations_and_classify_a_review(
    browser, page_server, tiny_store, tmp_path
):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    console_errors = []
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.goto(page_server.url + "/")

    # Shoppers load; pick the second one in the list.
    page.wait_for_function("document.querySelectorAll('#user-select option').length > 2")
    user = page.eval_on_selector_all("#user-select option", "o => o[2].value")
    page.select_option("#user-select", user)
    page.wait_for_function(
        "u => document.getElementById('rec-user').textContent === u"
        " && document.getElementById('rec-meta').textContent.includes('buy probabilities')"
        " && document.querySelectorAll('#recommendations td.probability .bar').length === 10",
        arg=user,
    )
    assert page.text_content("#models").startswith("Serving")
    history = page.locator("#history li")
    assert history.count() >= 1
    titles = set(tiny_store.catalog["title"])
    assert history.first.inner_text().split(" ", 1)[1].split(" · ")[0] in titles
    rows = page.locator("#recommendations tr.rec")
    assert rows.count() == 10
    assert all(cell.endswith("%") for cell in page.locator("td.probability").all_inner_texts())
    assert page.locator("#error").is_hidden()

    # Classify a review.
    page.fill("#review-text", "Lovely mug, keeps my tea warm.")
    page.click("#review-form button")
    label = page.wait_for_selector("#classification .label")
    assert label.inner_text() in {"kitchen", "shoes", "other"}
    assert page.locator("#classification tr").count() == 3

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "page.png")
    assert shot.stat().st_size > 10_000

    # An API error is shown, not swallowed.
    page.fill("#user-id", "no-such-shopper")
    page.click("#user-form button")
    page.wait_for_selector("#error:not([hidden])")
    assert "404" in page.inner_text("#error") and "no-such-shopper" in page.inner_text("#error")
    assert console_errors == []
    page.close()
