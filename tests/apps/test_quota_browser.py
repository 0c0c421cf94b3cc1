"""The per-visitor quota as a visitor meets it in Chromium: a request beyond the quota is answered with the
quota's own sentence in the page's error toast (not a silent drop or a generic error), and the page keeps
working afterwards. The app runs with one request per visitor so that a second heavy click is over the quota."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.apps.test_faults import app_env, launch_xray, sample_png
from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("quota")
    env = app_env(tmp, CNNLENS_DATA=str(tmp / "no-data"))
    server = launch_xray(tmp, env, "--no-similar", "--per-visitor", "1", "--per-host", "0")
    yield server
    server.stop()


def test_a_request_over_the_quota_is_answered_with_the_quota_message(app, browser, tmp_path, artifacts):
    image = sample_png(tmp_path, "film.png")
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(app.url)
        page.wait_for_selector("#upload input[type=file]", state="attached", timeout=180_000)  # a cold first load
        page.locator("#upload input[type=file]").set_input_files(str(image))
        page.locator("#map-0 img").wait_for(timeout=120_000)
        page.wait_for_function("(document.querySelector('#trust-0') || {innerText: ''}).innerText"
                               ".includes('deletion AUC')", timeout=180_000)  # the upload's own work is done
        page.wait_for_timeout(1000)
        page.locator("#method input").click()
        page.get_by_role("option", name="LIME").click()
        page.locator("#explain").click()  # a heavy request: this visitor's one place in the queue
        page.locator("#build-report").click()  # a second one while it runs: over the quota
        toast = page.get_by_text("You already have 1 request waiting or running (at most 1 per visitor")
        toast.first.wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts / "quota-toast.png"))
        page.locator("#stop").click()  # the page still answers: Stop says what it stopped
        page.get_by_text("Stopped:").first.wait_for(timeout=60_000)
    finally:
        page.close()
