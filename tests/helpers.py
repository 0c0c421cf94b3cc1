"""Helpers shared by the tests: classroom pages under AppTest, the plotly charts they draw and the arrays inside
them, hooks left on a model, a process's CPU time, and a bundled-model case found among the new-patient films."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from numpy.typing import DTypeLike
    from playwright.sync_api import Page
    from streamlit.testing.v1 import AppTest
    from torch import nn

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "apps" / "classroom"


# ------------------------------------------------------------------------------------------ pages and charts


def run(at: AppTest) -> AppTest:
    """Run (or rerun, after a widget change) a page and fail on any exception it raised."""
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def first_run(name: str, timeout: float = 600) -> AppTest:
    """A fresh AppTest of ``apps/classroom/<name>.py`` after its first run."""
    from streamlit.testing.v1 import AppTest

    return run(AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=timeout))


def chart(at: AppTest, key: str) -> dict:
    """The plotly spec of the one chart with this key."""
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(found) == 1, f"no chart {key!r}"
    return json.loads(found[0].proto.spec)


def plotly_array(value: object, dtype: DTypeLike | None = None) -> np.ndarray:
    """A numeric array of a plotly spec: a typed base64 buffer (plotly 6+, with a shape for 2-D ones) in its own
    dtype, or a plain list as float64; cast to ``dtype`` when given."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        out = out.reshape([int(n) for n in str(shape).split(",")]) if shape else out
    else:
        out = np.asarray(value, dtype=np.float64)
    return out if dtype is None else out.astype(dtype)


def heatmap(at: AppTest, key: str, trace: int = 0) -> np.ndarray:
    """The matrix one heatmap trace of a chart draws (its ``z``), as float64."""
    return plotly_array(chart(at, key)["data"][trace]["z"], np.float64)


# ------------------------------------------------------------------------------------------ models and processes


def hooks_left(model: nn.Module) -> list[str]:
    """Hooks still registered on any module of ``model`` and global module hooks; empty when none is left."""
    import torch

    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    found = [f"{name or 'model'}.{kind}" for name, m in model.named_modules() for kind in kinds if getattr(m, kind)]
    glob = torch.nn.modules.module
    return found + [k for k in ("_global_forward_hooks", "_global_backward_hooks") if getattr(glob, k)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat fields 14 and 15."""
    utime, stime = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def cpu_during(pid: int, seconds: float) -> float:
    """CPU seconds a process used while this one slept ``seconds``."""
    start = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - start


def cpu_settled(pid: int, below: float, window: float = 3.0, within: float = 20.0) -> float:
    """CPU seconds a process used in its first ``window`` under ``below`` within ``within`` seconds (or in the last
    window tried): after a cancel, a batch already running on a slow machine may still outlast one fixed window."""
    deadline = time.monotonic() + within
    used = cpu_during(pid, window)
    while used >= below and time.monotonic() < deadline:
        used = cpu_during(pid, window)
    return used


# Browser layout checks shared by the classroom and X-ray layout tests (run with page.evaluate).
# Words of the elements matched by a selector that are split over two lines ("delet" / "ion").
BROKEN_WORDS = """(selector) => {
  const out = [];
  for (const element of document.querySelectorAll(selector)) {
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const match of node.data.matchAll(/[^\\s\\-\u2013\u2014]+/g)) {  // a break after a hyphen or dash is fine
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
        if (tops.size > 1) out.push(match[0]);
      }
    }
  }
  return out;
}"""
# Elements whose content is wider than their box (clipped, scrolled or ellipsised).
OVERFLOWING = """(selector) => [...document.querySelectorAll(selector)]
  .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)"""


def upload_and_wait(page: Page, selector: str, path: Path, timeout_ms: float) -> None:
    """Give a Gradio file input ``path`` and wait for the upload's response: a click that needs the file before then
    finds none (a 45 MB checkpoint takes seconds on busy cores)."""
    with page.expect_response(lambda r: "/gradio_api/upload" in r.url and r.request.method == "POST",
                              timeout=timeout_ms):
        page.locator(selector).set_input_files(str(path))


def corrupt_checkpoint(path: Path) -> None:
    """A torch.save zip whose pickle has one byte changed: torch's unpickler then fails with IndexError."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    data = bytearray(buffer.getvalue())
    pickled = zipfile.ZipFile(io.BytesIO(bytes(data))).read("archive/data.pkl")
    data[bytes(data).find(pickled) + 5] = ord("s")
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------ bundled-model cases


@functools.cache
def film_where_card_and_argmax_differ(margin: float = 0.005) -> Path:
    """The first new-patient film on which the bundled model's prediction card (calibrated probability against the
    operating threshold) and its raw softmax arg-max name different classes, each at least ``margin`` from its own
    line (another CPU's rounding cannot move it across). Found, not named, so it holds for any bundled weights."""
    from core.data import external_dir
    from core.io import load_image
    from core.trust import interpret, logits_and_features
    from core.zoo import load_model, preprocess

    folder = external_dir()
    assert folder is not None, "the new-patient folder is missing (set CNNLENS_DATA)"
    model = load_model("cxr-resnet18")
    for path in sorted(folder.glob("*/*")):
        logits, features = logits_and_features(model, preprocess(load_image(path), model.spec.preprocessing))
        card = interpret(model, logits, features)[0]  # the card's class, from the same forward as the arg-max
        raw = float(torch.softmax(logits, 1)[0, 1])
        assert card.threshold is not None, "the bundled model has no operating threshold"
        if (min(abs(card.probability - card.threshold), abs(raw - 0.5)) >= margin
                and (card.probability >= card.threshold) != (raw >= 0.5)):
            return path
    raise AssertionError("on no new-patient film do the prediction card and the softmax arg-max disagree")
