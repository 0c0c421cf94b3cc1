"""Classroom pages as issue 15 asked: nothing named is cut off or broken inside a word, and controls that do not
apply are disabled. AppTest checks what the pages hand Streamlit; Chromium at 1440 x 900 and 1024 x 768 checks what
a visitor sees (the receptive-field notes, the activation-maximisation chart heading, the embedding explorer's
file names) and which hosts the browser asks.

Screenshots go to test-artifacts/classroom_layout_*.png.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from core.data import CLASS_NAMES, data_dir
from tests.conftest import free_port, start_server, wait_for_plots
from tests.helpers import BROKEN_WORDS, OVERFLOWING, chart, first_run, run

SIZES = [(1440, 900), (1024, 768)]
WAIT_MS = 300_000
# File names (the text before the first line break of a caption) laid out on more than one line.
SPLIT_NAMES = r"""() => [...document.querySelectorAll('[data-testid=stImageCaption] p')].filter(p => {
  const node = p.firstChild;
  if (!node || node.nodeType !== Node.TEXT_NODE) return false;
  const name = node.data.trimEnd();
  if (!/\.(jpe?g|png|tiff?|bmp|dcm)$/i.test(name)) return false;  // a caption that does not start with a file
  const range = document.createRange();
  range.setStart(node, 0);
  range.setEnd(node, name.length);
  return new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top))).size > 1;
}).map(p => p.firstChild.data)"""


# ------------------------------------------------------------------------------------------ AppTest


def test_activation_max_disables_the_class_selector_for_a_channel():
    at = first_run("activation_max")
    assert not at.selectbox(key="am_class_cxr-resnet18").disabled
    at.radio(key="am_kind").set_value("channel")  # outside the form: applies at once
    at.slider(key="am_steps").set_value(8)
    run(at)
    assert at.selectbox(key="am_class_cxr-resnet18").disabled
    assert not at.selectbox(key="am_layer_cxr-resnet18").disabled and not at.number_input(key="am_channel").disabled
    at.radio(key="am_kind").set_value("class")
    run(at)
    assert not at.selectbox(key="am_class_cxr-resnet18").disabled
    # the chart's title is text above it that wraps, not a plotly title cut at the chart's edge
    assert any("during the ascent" in m.value for m in at.markdown)
    assert not chart(at, "am_history")["layout"].get("title", {}).get("text")


def test_receptive_field_notes_fit_and_the_chart_colours_differ():
    at = first_run("receptive_field", timeout=300)
    notes = [n for n in at.dataframe[0].value["note"] if n]
    assert notes and all(len(n) <= 32 and "paths disagree" in n for n in notes)  # a few words per cell
    merges = at.table[0].value  # the whole sentences, in a table that wraps
    assert all("the unit sees their union" in n for n in merges["note"])
    colours = [t["marker"]["color"] for t in chart(at, "rf_layers_chart")["data"] if t.get("mode") != "lines"]
    rgb = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in colours], dtype=float)
    gaps = [np.abs(a - b).sum() for i, a in enumerate(rgb) for b in rgb[i + 1:]]
    assert len(colours) >= 3 and min(gaps) > 150  # no two reds or two blues
    red = np.array([0xD6, 0x27, 0x28], dtype=float)  # the selected layer's marker
    assert all(np.abs(c - red).sum() > 150 for c in rgb)


# ------------------------------------------------------------------------------------------ Chromium


@pytest.fixture(scope="module")
def classroom_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The classroom on a free port over a small data folder (symlinks; 10 X-rays a class) and a temp cache."""
    source = data_dir()
    if source is None:
        pytest.skip("needs the chest X-ray folder")
    root = tmp_path_factory.mktemp("classroom-data")
    for label in CLASS_NAMES:
        (root / label).mkdir()
        files = sorted((source / label).iterdir())
        for path in files[:: len(files) // 10][:10]:
            (root / label / path.name).symlink_to(path)
    env = {"CNNLENS_DATA": str(root), "CNNLENS_CACHE": str(tmp_path_factory.mktemp("classroom-cache"))}
    port = free_port()
    server = start_server([sys.executable, "-m", "streamlit", "run", "apps/streamlit_app.py", "--server.port",
                           str(port), "--server.address", "127.0.0.1", "--server.headless", "true"], port,
                          tmp_path_factory.mktemp("classroom") / "server.log", env)
    yield server.url
    server.stop()


def _open(browser, url: str, title: str, width: int, height: int):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.goto(url)  # through the navigation: direct page URLs bypass st.navigation
    page.get_by_role("link", name=title).first.click(timeout=120_000)
    # the page's own heading first: the home page has the same footer, so the footer alone can match before it goes
    page.wait_for_function("t => (document.querySelector('h1') || {}).innerText === t", arg=title, timeout=WAIT_MS)
    page.wait_for_selector("text=Mendeley Data", timeout=WAIT_MS)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=WAIT_MS)
    page.wait_for_timeout(1500)
    return page


def _shot(page, path: Path, width: int) -> None:
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": width, "height": min(height + 50, 12_000)})  # Streamlit scrolls inside
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path), full_page=True)


@pytest.mark.browser
@pytest.mark.data
@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_pages_show_their_texts_whole(browser, classroom_url, artifacts, width, height):
    page = _open(browser, classroom_url, "Receptive field", width, height)
    try:
        page.get_by_text("Skip connections:").click()
        page.wait_for_selector("[data-testid='stTable'] td", timeout=60_000)
        cells = "[data-testid='stTable'] td, [data-testid='stTable'] th"
        assert page.evaluate(OVERFLOWING, cells) == [] and page.evaluate(BROKEN_WORDS, cells) == []
        assert page.evaluate(OVERFLOWING, "[data-testid='stMetricLabel'] *") == []  # "Jump (effective …" at 1024
        assert page.locator("[data-testid='stException']").count() == 0
        _shot(page, artifacts / f"classroom_layout_receptive_field_{width}.png", width)
    finally:
        page.close()

    page = _open(browser, classroom_url, "Activation maximisation", width, height)
    try:
        wait_for_plots(page, 2)
        heading = page.get_by_text("during the ascent").first
        assert heading.is_visible()
        assert page.evaluate(BROKEN_WORDS, "[data-testid='stMarkdownContainer'] p strong") == []
        assert heading.evaluate("e => e.getBoundingClientRect().right") <= width
        page.get_by_text("a channel", exact=True).click()
        page.wait_for_function("() => document.querySelector(\"[data-testid=stForm] [data-testid=stSelectbox] "
                               "input\")?.disabled", timeout=60_000)  # the class selector, first in the form
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=WAIT_MS)
        _shot(page, artifacts / f"classroom_layout_activation_max_{width}.png", width)
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.data
def test_embedding_explorer_keeps_each_file_name_on_one_line(browser, classroom_url, artifacts):
    page = _open(browser, classroom_url, "Embedding explorer", 1440, 900)
    try:
        page.wait_for_selector("[data-testid='stImageCaption']", timeout=WAIT_MS)
        page.wait_for_timeout(1500)
        names = page.evaluate("""() => [...document.querySelectorAll('[data-testid=stImageCaption] p')]
                                 .map(p => p.firstChild && p.firstChild.data)""")
        assert sum(bool(n and n.strip().endswith((".jpeg", ".jpg", ".png"))) for n in names) >= 8
        assert page.evaluate(SPLIT_NAMES) == []
        labels = page.evaluate("() => [...document.querySelectorAll('[data-testid=stMetricLabel]')].map(e => "
                               "e.innerText)")
        assert any("held out" in t or "Model accuracy" in t for t in labels) and any("on the embedding" in t
                                                                                   for t in labels)
        assert page.evaluate(OVERFLOWING, "[data-testid='stMetricLabel'] *") == []  # each label whole
        _shot(page, artifacts / "classroom_layout_embeddings.png", 1440)
    finally:
        page.close()


@pytest.mark.browser
def test_the_classroom_asks_no_other_host(browser, classroom_url):
    page = _open(browser, classroom_url, "Receptive field", 1440, 900)
    try:
        own = urlsplit(classroom_url).netloc
        foreign = [r for r in page.requests if urlsplit(r).scheme in ("http", "https") and urlsplit(r).netloc != own]
        assert foreign == []
    finally:
        page.close()
