"""The X-ray app in Debian Chromium: upload, prediction, heatmap, another method, similar cases, a broken file.

Screenshots go to test-artifacts/xray_*.png.
"""

from __future__ import annotations

import base64
import io
import re

import pytest
import torch
from PIL import Image
from torchvision import models as tvm

from tests.helpers import upload_and_wait

pytestmark = [pytest.mark.browser, pytest.mark.data]
WAIT_MS = 120_000  # generous: CI shares two cores between the server, the browser and pytest


def _upload(page, path) -> None:
    page.locator("#upload input[type=file]").set_input_files(str(path))


def _paste(page, path) -> None:
    """Put an image on the browser's clipboard and press the paste button, as a visitor would."""
    png = io.BytesIO()
    Image.open(path).convert("RGB").save(png, "PNG")
    page.evaluate("""async (b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        await navigator.clipboard.write([new ClipboardItem({"image/png": new Blob([bytes], {type: "image/png"})})]);
    }""", base64.b64encode(png.getvalue()).decode())
    page.locator("#paste").get_by_text("Paste from Clipboard").click()


def _no_failed_events(page) -> None:
    """Gradio marks an output whose event raised with an "Error" badge; none may appear."""
    assert page.get_by_text("Error", exact=True).count() == 0


def test_upload_explain_compare_and_broken_file(browser, xray_server, artifacts, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
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
        assert "PNEUMONIA · 0.000" in page.locator("#similar").inner_text()
        page.screenshot(path=str(artifacts / "xray_upload.png"), full_page=True)
        _no_failed_events(page)

        _paste(page, xray_server.images("NORMAL")[3])
        page.wait_for_function("document.querySelector('#status').innerText.includes('clipboard.png')",
                               timeout=WAIT_MS)
        page.wait_for_selector("#trust-0 table", timeout=WAIT_MS)

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
        context.close()


def test_own_checkpoint_and_report(browser, xray_server, artifacts, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "my-resnet.pt"
    torch.save(tvm.resnet18(weights=None, num_classes=3).state_dict(), weights)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(xray_server.url)
        page.wait_for_selector("#upload input[type=file]", state="attached", timeout=WAIT_MS)
        page.locator("#examples img").first.click()  # an example from the data folder
        page.wait_for_selector("#trust-0 table", timeout=WAIT_MS)
        assert "NORMAL ·" in page.locator("#status").inner_text()

        page.get_by_text("Use your own checkpoint").click()
        upload_and_wait(page, "#ckpt-file input[type=file]", weights, WAIT_MS)
        page.get_by_label("Class names, comma-separated").fill("NORMAL, VIRAL, BACTERIAL")
        page.get_by_label("Input size (pixels)").fill("64")
        page.wait_for_timeout(500)  # the component takes the returned path
        page.locator("#ckpt-load").click()
        page.wait_for_function("document.querySelector('#ckpt-note').innerText.includes('layer4.1.relu')",
                               timeout=WAIT_MS)
        page.wait_for_selector("#trust-0 table", timeout=WAIT_MS)  # the image re-analysed with the new model
        assert "BACTERIAL" in page.locator("#prediction").inner_text()
        assert "user:resnet18-" in page.locator("#status").inner_text()

        page.locator("#build-report").click()
        link = page.locator("#report a[href*='xray-report-']")
        link.wait_for(timeout=WAIT_MS)
        assert link.get_attribute("href").endswith(".pdf")
        page.screenshot(path=str(artifacts / "xray_checkpoint_report.png"), full_page=True)
        _no_failed_events(page)
    finally:
        page.close()
