"""The X-ray app in Debian Chromium: upload, prediction, heatmap, another method, similar cases, a broken file.

Screenshots go to test-artifacts/xray_*.png.
"""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.data]
WAIT_MS = 120_000  # generous: CI shares two cores between the server, the browser and pytest


def _upload(page, path) -> None:
    page.locator("#upload input[type=file]").set_input_files(str(path))


def _no_failed_events(page) -> None:
    """Gradio marks an output whose event raised with an "Error" badge; none may appear."""
    assert page.get_by_text("Error", exact=True).count() == 0


def test_upload_explain_compare_and_broken_file(browser, xray_server, artifacts, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(xray_server.url)
        page.wait_for_selector("#upload input[type=file]", state="attached", timeout=WAIT_MS)
        assert "not for diagnosis" in page.locator("#disclaimer").inner_text().lower()
        assert "Kermany" in page.locator("#footer-note").inner_text()

        xray = xray_server.images("PNEUMONIA")[3]
        _upload(page, xray)
        page.wait_for_selector("#trust-0 table", timeout=WAIT_MS)  # Grad-CAM drawn and its trust checks done
        prediction = page.locator("#prediction").inner_text()
        assert "NORMAL" in prediction and "PNEUMONIA" in prediction
        assert re.search(r"\d+%", prediction), prediction
        heatmap = page.locator("#map-0 img")
        assert heatmap.evaluate("img => img.complete && img.naturalWidth > 100")
        assert "Grad-CAM" in page.locator("#trust-0").inner_text()
        assert "deletion AUC" in page.locator("#trust-0").inner_text()
        assert xray.name in page.locator("#status").inner_text()
        # the uploaded file is in the server's small data folder, so its nearest neighbour is itself
        page.wait_for_selector("#similar img", timeout=WAIT_MS)
        assert "PNEUMONIA · distance 0.000" in page.locator("#similar").inner_text()
        page.screenshot(path=str(artifacts / "xray_upload.png"), full_page=True)
        _no_failed_events(page)

        page.locator("#method input").click()
        page.get_by_role("option", name="Occlusion").click()
        page.wait_for_function("document.querySelector('#method-info').innerText.includes('Occlusion')")
        page.locator("#explain").click()
        page.wait_for_selector("#trust-1 table", timeout=WAIT_MS)
        assert "Occlusion" in page.locator("#trust-1").inner_text()
        assert page.locator("#map-1 img").evaluate("img => img.complete && img.naturalWidth > 100")
        assert "Agreement between the maps" in page.locator("#agreement").inner_text()
        page.screenshot(path=str(artifacts / "xray_compare.png"), full_page=True)
        _no_failed_events(page)

        broken = tmp_path / "notes.png"
        broken.write_bytes(b"patient notes, not an image\n" * 20)
        _upload(page, broken)
        page.wait_for_function("document.querySelector('#status').innerText.includes('Could not use')",
                               timeout=WAIT_MS)
        page.wait_for_timeout(3000)  # let the follow-up events (trust checks, similar cases) finish too
        status = page.locator("#status").inner_text()
        assert "notes.png" in status and "text file, not an image" in status
        assert page.locator("#slot-0").is_hidden()  # the previous results are cleared, not left misleading
        page.screenshot(path=str(artifacts / "xray_error.png"), full_page=True)
        _no_failed_events(page)

        _upload(page, xray_server.images("NORMAL")[4])  # and the page keeps working
        page.wait_for_selector("#map-0 img", timeout=WAIT_MS)
        assert xray_server.images("NORMAL")[4].name in page.locator("#status").inner_text()
        assert not errors, errors
    finally:
        page.close()
