"""The X-ray app's first screens at 1440 x 900 and 1024 x 768 in Debian Chromium (issue 15): nothing the page names
is clipped or broken inside a word (prediction card, trust tables, gallery captions), only the settings that apply
are shown, Explain and Stop stay beside the board, pressing Explain while a map is computed is answered, Stop says
it stopped, a corrupt checkpoint is explained beside its panel, the out-of-distribution banner stands out, and the
browser asks no host but the app's own.

Screenshots go to test-artifacts/xray_layout_*.png.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from apps.xray import views
from tests.helpers import BROKEN_WORDS, OVERFLOWING, corrupt_checkpoint, upload_and_wait

pytestmark = [pytest.mark.browser, pytest.mark.data]
WAIT_MS = 180_000  # two shared cores run the server, the browser and pytest
SIZES = [(1440, 900), (1024, 768)]

# Captions of a gallery not wholly inside their thumbnail.
CAPTIONS_OUTSIDE = """(gallery) => [...document.querySelectorAll(gallery + ' .thumbnail-item')].filter(item => {
  const caption = item.querySelector('.caption-label');
  if (!caption) return false;
  const a = item.getBoundingClientRect(), b = caption.getBoundingClientRect();
  return b.left < a.left - 0.5 || b.right > a.right + 0.5 || b.top < a.top - 0.5 || b.bottom > a.bottom + 0.5;
}).map(item => item.innerText)"""
ITEMS_OUTSIDE = """(gallery) => { const box = document.querySelector(gallery).getBoundingClientRect();
  return [...document.querySelectorAll(gallery + ' .gallery-item')].filter(item => {
    const r = item.getBoundingClientRect();
    return r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.bottom > box.bottom + 0.5; }).length; }"""


def _top(page, selector: str) -> float:
    """The element's top in page coordinates (not moved by scrolling)."""
    return page.locator(selector).first.evaluate("e => e.getBoundingClientRect().top + window.scrollY")


def _bottom(page, selector: str) -> float:
    return page.locator(selector).first.evaluate("e => e.getBoundingClientRect().bottom + window.scrollY")


def _pick(page, label: str) -> None:
    page.locator("#method input").click()
    page.get_by_role("option", name=label, exact=True).click()
    page.wait_for_function(f"document.querySelector('#method-info').innerText.includes({label!r})")


def _visible(page, name: str) -> int:
    """How many sliders with this label are shown (LIME's and Kernel SHAP's share labels)."""
    return page.get_by_role("slider", name=f"range slider for {name}").filter(visible=True).count()


def _open_logged(browser, url: str, width: int, height: int) -> tuple:
    """A page on the app at this viewport, its examples drawn, and the list every request it sends is added to."""
    page = browser.new_page(viewport={"width": width, "height": height})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(url)
        page.wait_for_selector("#examples img", timeout=WAIT_MS)
    except Exception:
        page.close()
        raise
    return page, requests


def _foreign(requests: list[str], url: str) -> list[str]:
    own = urlsplit(url).netloc
    return [r for r in requests if urlsplit(r).scheme in ("http", "https", "ws", "wss") and urlsplit(r).netloc != own]


@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_nothing_named_is_clipped_and_only_what_applies_is_shown(browser, xray_server, artifacts, width, height):
    page, requests = _open_logged(browser, xray_server.url, width, height)
    try:
        examples = page.locator("#examples .gallery-item")
        # four of each class and the DICOM pair, all inside the gallery (none pushed out to the right)
        assert examples.count() == 10
        assert page.evaluate(ITEMS_OUTSIDE, "#examples") == 0
        assert page.evaluate(OVERFLOWING, "#examples .caption-label") == []
        assert page.evaluate(CAPTIONS_OUTSIDE, "#examples") == []
        assert page.locator("#unavailable-models").count() <= 1  # offered once, closed, when some are missing

        page.locator("#upload input[type=file]").set_input_files(str(xray_server.images("PNEUMONIA")[3]))
        page.wait_for_selector("#trust-0 table", timeout=WAIT_MS)
        _pick(page, "Saliency (vanilla gradient)")
        page.locator("#explain").click()
        page.wait_for_selector("#trust-1 table", timeout=WAIT_MS)
        page.wait_for_selector("#similar img", timeout=WAIT_MS)
        page.wait_for_timeout(1000)

        # the prediction card: its heading above the class, the class whole on its line
        assert _bottom(page, "#prediction .pred-head") <= _top(page, "#prediction .pred-class") + 0.5
        assert page.evaluate(OVERFLOWING, "#prediction .pred-class, #prediction .pred-rule") == []
        assert page.evaluate(BROKEN_WORDS, "#prediction") == []
        # the board: two maps a row, trust tables whose cells wrap between words only
        assert _top(page, "#slot-0") == pytest.approx(_top(page, "#slot-1"), abs=1)
        assert page.evaluate(BROKEN_WORDS, "#board th, #board td") == []
        assert page.evaluate(OVERFLOWING, "#board th, #board td") == []
        # similar cases: label and distance in full, inside the thumbnail
        captions = page.locator("#similar .caption-label").all_inner_texts()
        assert captions and all(re.fullmatch(r"(NORMAL|PNEUMONIA) · \d\.\d{3}", c.strip()) for c in captions)
        assert page.evaluate(OVERFLOWING, "#similar .caption-label") == []
        assert page.evaluate(CAPTIONS_OUTSIDE, "#similar") == []
        page.screenshot(path=str(artifacts / f"xray_layout_{width}.png"), full_page=True)

        # only the chosen segmenter's settings; Explain and Stop stay right above the board however many there are
        explain_at = _top(page, "#explain")
        assert _bottom(page, "#stop") < _top(page, "#slot-0") and _top(page, "#slot-0") - explain_at < 250
        _pick(page, "LIME")
        page.locator("#method-settings").get_by_text("Method settings").click()
        page.get_by_role("slider", name="range slider for Samples").filter(visible=True).wait_for()
        assert _visible(page, "Number of superpixels (SLIC)") == 1 and _visible(page, "Compactness (SLIC)") == 1
        for other in ("Kernel size (quickshift)", "Max distance (quickshift)", "Scale (Felzenszwalb)",
                      "Minimum size (Felzenszwalb)"):
            assert _visible(page, other) == 0, other
        assert _top(page, "#explain") == pytest.approx(explain_at, abs=1)
        page.screenshot(path=str(artifacts / f"xray_layout_{width}_lime.png"))
        page.get_by_role("combobox", name="Superpixels", exact=True).filter(visible=True).click()
        page.get_by_role("option", name="quickshift", exact=True).click()
        page.wait_for_function("() => [...document.querySelectorAll('input[aria-label=\"range slider for Kernel size "
                               "(quickshift)\"]')].some(e => e.offsetParent !== null)", timeout=30_000)
        assert _visible(page, "Number of superpixels (SLIC)") == 0 and _visible(page, "Max distance (quickshift)") == 1

        assert _foreign(requests, xray_server.url) == []
        assert page.get_by_text("Error", exact=True).count() == 0
    finally:
        page.close()


@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_method_guide_augmentation_and_the_dicom_example(browser, xray_server, artifacts, width, height):
    """The method guide's table is whole (no word broken, no cell clipped), the copies slider shows only while
    test-time augmentation is on, and the DICOM example opens as a DICOM whose map explains the card's class."""
    page, requests = _open_logged(browser, xray_server.url, width, height)
    try:
        page.locator("#method-guide").get_by_text("Method guide").click()
        page.wait_for_selector("#method-guide-table table", timeout=30_000)
        assert page.locator("#method-guide-table tbody tr").count() == len(views.guide.QUESTIONS)
        assert page.evaluate(BROKEN_WORDS, "#method-guide th, #method-guide td") == []
        assert page.evaluate(OVERFLOWING, "#method-guide th, #method-guide td, #method-guide .prose") == []
        page.screenshot(path=str(artifacts / f"xray_layout_{width}_guide.png"), full_page=True)

        assert not page.locator("#augment-copies").is_visible()
        page.locator("#augment input").check()
        page.locator("#augment-copies").wait_for(state="visible", timeout=30_000)
        assert page.evaluate(OVERFLOWING, "#augment-copies label, #augment label") == []
        page.locator("#augment input").uncheck()
        page.locator("#augment-copies").wait_for(state="hidden", timeout=30_000)

        captions = page.locator("#examples .caption-label").all_inner_texts()
        assert [c.strip() for c in captions[-2:]] == ["DICOM", "DICOM, inverted"]
        assert page.evaluate(ITEMS_OUTSIDE, "#examples") == 0 and page.evaluate(CAPTIONS_OUTSIDE, "#examples") == []
        page.locator("#examples .thumbnail-item").nth(len(captions) - 2).click()
        page.wait_for_selector("#trust-0 table", timeout=WAIT_MS)
        assert "MONOCHROME2" in page.locator("#status").inner_text()
        assert "format: DICOM" in page.locator("#metadata").inner_text()
        card = page.locator("#prediction .pred-class").inner_text().strip()
        assert f"class {card} (softmax" in page.locator("#trust-0").inner_text()
        page.screenshot(path=str(artifacts / f"xray_layout_{width}_dicom.png"), full_page=True)
        assert _foreign(requests, xray_server.url) == []
        assert page.get_by_text("Error", exact=True).count() == 0
    finally:
        page.close()


def test_busy_explain_stop_and_a_corrupt_checkpoint_are_answered(browser, xray_server, artifacts, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(xray_server.url)
        page.wait_for_selector("#upload input[type=file]", state="attached", timeout=WAIT_MS)
        page.locator("#upload input[type=file]").set_input_files(str(xray_server.images("NORMAL")[2]))
        page.wait_for_selector("#trust-0 table", timeout=WAIT_MS)

        _pick(page, "LIME")
        page.locator("#method-settings").get_by_text("Method settings").click()
        samples = page.get_by_role("spinbutton", name="number input for Samples").filter(visible=True)
        samples.fill("1000")  # runs for seconds on any machine, within the work budget with the trust checks
        samples.press("Enter")
        page.locator("#explain").click()
        page.wait_for_timeout(1500)
        page.locator("#explain").click()  # Gradio drops this click: the page must say so
        page.wait_for_function("document.querySelector('#queue-note').innerText.includes('Busy')", timeout=WAIT_MS)
        assert "LIME is still being computed" in page.locator("#queue-note").inner_text()
        page.screenshot(path=str(artifacts / "xray_layout_busy.png"))

        page.locator("#stop").click()
        page.wait_for_function("document.querySelector('#work').innerText.includes('Stopped: LIME')",
                               timeout=WAIT_MS)
        page.wait_for_timeout(4000)  # anything the cancelled events might still trigger
        work = page.locator("#work").inner_text()
        assert "Stopped: LIME" in work and "Trust checks done" not in work
        assert page.locator("#queue-note").inner_text().strip() == ""
        assert page.get_by_text("Error", exact=True).count() == 0  # no failed-event badge after a Stop
        page.screenshot(path=str(artifacts / "xray_layout_stopped.png"))

        weights = tmp_path / "broken.pt"
        corrupt_checkpoint(weights)
        page.get_by_text("Use your own checkpoint").click()
        upload_and_wait(page, "#ckpt-file input[type=file]", weights, WAIT_MS)
        page.wait_for_timeout(500)  # the component takes the returned path
        page.locator("#ckpt-load").click()
        page.wait_for_function("document.querySelector('#ckpt-note').innerText.includes('corrupt')", timeout=WAIT_MS)
        note = page.locator("#ckpt-note").inner_text()
        assert "corrupt or truncated" in note and "IndexError" in note
        assert "Something went wrong" not in page.locator("#status").inner_text()
        page.locator("#ckpt-note").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "xray_layout_checkpoint.png"))
    finally:
        page.close()


def test_out_of_distribution_banner_stands_out(browser, xray_server, artifacts, tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((256, 256), 128, np.uint8)).save(grey)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(xray_server.url)
        page.wait_for_selector("#upload input[type=file]", state="attached", timeout=WAIT_MS)
        page.locator("#upload input[type=file]").set_input_files(str(grey))
        page.wait_for_function("document.querySelector('#status').innerText.includes('grey.png')", timeout=WAIT_MS)
        card = page.locator("#prediction")
        if card.locator(".pred-gate").count() == 0:
            pytest.skip("the bundled model carries no out-of-distribution gate")
        banner = card.locator(".pred-ood")
        assert banner.is_visible() and banner.get_attribute("role") == "alert"
        assert views.OOD_TITLE in banner.inner_text()
        colours = banner.evaluate("e => [getComputedStyle(e).backgroundColor, "
                                  "getComputedStyle(e.querySelector('.pred-ood-title')).color]")
        assert colours == ["rgb(185, 28, 28)", "rgb(255, 255, 255)"]  # white on red, not grey on pink
        assert banner.bounding_box()["height"] >= 60
        assert _bottom(page, "#prediction .pred-ood") <= _top(page, "#prediction .pred-class")
        assert card.locator(".pred-unreliable").is_visible()
        assert page.evaluate(BROKEN_WORDS, "#prediction") == []
        card.screenshot(path=str(artifacts / "xray_layout_ood.png"))
    finally:
        page.close()
