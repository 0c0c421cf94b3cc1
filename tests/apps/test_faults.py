"""Faults: the X-ray app and the classroom pages with missing or broken weights, no data folder, an unwritable
cache, and a client that walks away in the middle of a LIME run.

The X-ray app runs as a real process (``apps/xray_app.py``) with its output captured to a file, so a start-up
failure is judged by what an operator would read: one clear line, never a Python traceback. Classroom pages run
under Streamlit's AppTest in a child process that gets the same environment variables, because the weights folder
(``CNNLENS_MODELS``) is read when ``core.zoo`` is imported. ``TORCH_HOME`` points at an empty folder and the network
at a dead proxy, so the ImageNet models are unavailable whatever this machine has cached or can reach.
(A corrupt embedding-cache file is rebuilt, not trusted: tests/embed/test_cache.py and test_features.py.)
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps.catalogue import LESSONS
from core.data import CLASS_NAMES, data_dir
from tests.conftest import LiveServer, free_port, start_server
from tests.helpers import ROOT, cpu_during, cpu_seconds

APPS = ROOT / "apps"
WEIGHTS_NAME = "cxr-resnet18.safetensors"
MODEL_PAGES = [lesson.file for lesson in LESSONS if lesson.group == "Inside a trained network"]
DATA_PAGES = [lesson.file for lesson in LESSONS  # the pages that look for X-rays
              if any(call in (APPS / lesson.file).read_text() for call in ("data_dir(", "pick_image("))]
DEAD_PROXY = "http://127.0.0.1:9"  # nothing listens on the discard port: every download fails at once
START_TIMEOUT = 300.0


# ------------------------------------------------------------------------------------------ a live app process


def app_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for an app process: this one's, plus no analytics, an empty torch hub cache and ``extra``."""
    torch_home = tmp / "torch-home"
    torch_home.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "TORCH_HOME": str(torch_home), "GRADIO_TEMP_DIR": str(tmp / "gradio-tmp"), **extra}


def launch_xray(tmp: Path, env: dict[str, str], *args: str) -> LiveServer:
    """Start ``apps/xray_app.py`` on a free port and wait until it listens (fail with its log if it exits)."""
    port = free_port()
    return start_server([sys.executable, "apps/xray_app.py", "--port", str(port), *args], port,
                        tmp / f"xray-{port}.log", env, timeout=START_TIMEOUT)


def small_data_folder(root: Path, per_class: int = 4) -> Path:
    """A class-folder tree of symlinks to a few real X-rays (never copies of the data set)."""
    source = data_dir()
    assert source is not None, "needs the chest X-ray folder (set CNNLENS_DATA) or deselect with -m 'not data'"
    for label in CLASS_NAMES:
        (root / label).mkdir(parents=True)
        for path in sorted((source / label).iterdir())[:per_class]:
            (root / label / path.name).symlink_to(path)
    return root


def sample_png(tmp: Path, name: str = "chest.png") -> Path:
    """A 256 x 256 grey PNG with some structure (any readable image is a valid request)."""
    yy, xx = np.mgrid[0:256, 0:256]
    pixels = (127 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + 0.2 * (xx - yy)).clip(0, 255).astype(np.uint8)
    path = tmp / name
    Image.fromarray(pixels).save(path)
    return path



def predicts(app: LiveServer, image: Path) -> dict[str, float]:
    """The app's /predict answer for one file, as {class: probability}."""
    from gradio_client import Client, handle_file

    result = Client(app.url, verbose=False).predict(handle_file(str(image)), api_name="/predict")
    return {c["label"]: c["confidence"] for c in result["confidences"]}


# ------------------------------------------------------------------------------------------ broken weights


def _mismatched_checkpoint(folder: Path) -> None:
    """A well-formed safetensors file whose config promises width 32 but whose tensors are for width 8."""
    from core.nets import WideResNet18
    from core.zoo import save_checkpoint

    config = {"architecture": "resnet18", "width": 32, "channels": 1, "input_size": 160, "mean": [0.5],
              "std": [0.25], "class_names": list(CLASS_NAMES)}
    save_checkpoint(WideResNet18(width=8, in_channels=1, num_classes=2), folder / WEIGHTS_NAME, config)


BROKEN_WEIGHTS = {
    "missing": (lambda folder: None, "is missing"),
    "garbage": (lambda folder: (folder / WEIGHTS_NAME).write_bytes(secrets.token_bytes(4096)), "corrupt"),
    "tensors that do not fit": (_mismatched_checkpoint, "does not match"),
}


@pytest.mark.parametrize("damage", list(BROKEN_WEIGHTS))
def test_app_without_usable_weights_exits_with_one_clear_line(tmp_path, damage):
    make, phrase = BROKEN_WEIGHTS[damage]
    models = tmp_path / "models"
    models.mkdir()
    make(models)
    env = app_env(tmp_path, CNNLENS_MODELS=str(models))
    try:
        done = subprocess.run([sys.executable, "apps/xray_app.py", "--port", str(free_port()), "--no-similar"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired as err:  # it started serving without a model (run() has killed it)
        raise AssertionError(f"the app did not exit:\n{err.stdout}\n{err.stderr}") from err
    output = done.stdout + done.stderr
    last = output.strip().splitlines()[-1]
    assert done.returncode != 0, output
    assert "Traceback" not in output, output[-3000:]
    assert last.startswith("No model can be loaded here:"), output[-3000:]
    assert f"cxr-resnet18: Weights file {WEIGHTS_NAME}" in last and phrase in last, last
    assert "resnet18-imagenet: needs torchvision's ImageNet weights" in last, last  # says why the others fail too
    assert len(last) < 1500, f"the reason is a dump, not a sentence ({len(last)} characters)"


# ------------------------------------------------------------------------------------------ apps that must serve


@pytest.fixture(scope="module")
def no_data_app(tmp_path_factory) -> Iterator[LiveServer]:
    """The app with $CNNLENS_DATA pointing at a folder that does not exist."""
    tmp = tmp_path_factory.mktemp("no-data")
    app = launch_xray(tmp, app_env(tmp, CNNLENS_DATA=str(tmp / "no-such-folder"), CNNLENS_CACHE=str(tmp / "cache")),
                      "--upload-grace", "1")
    yield app
    app.stop()


def test_missing_data_folder_serves_without_examples_or_similar_cases_and_says_why(no_data_app, tmp_path):
    no_data_app.wait_for_log("similar cases unavailable")
    import httpx

    probs = predicts(no_data_app, sample_png(tmp_path))
    assert set(probs) == set(CLASS_NAMES) and abs(sum(probs.values()) - 1) < 1e-4
    log = no_data_app.log()
    assert "similar cases unavailable: No image folder found: set $CNNLENS_DATA" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    config = httpx.get(f"{no_data_app.url}/config", timeout=30).json()
    (examples,) = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "examples"]
    assert examples["props"]["visible"] is False  # no empty example gallery on the page


@pytest.mark.data
def test_unwritable_cache_folder_still_serves_and_indexes_similar_cases_in_memory(tmp_path):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("not a folder")
    data = small_data_folder(tmp_path / "data")
    app = launch_xray(tmp_path, app_env(tmp_path, CNNLENS_DATA=str(data), CNNLENS_CACHE=str(blocker)))
    try:
        app.wait_for_log("similar cases:")
        probs = predicts(app, sample_png(tmp_path))
        log = app.log()
    finally:
        app.stop()
    assert set(probs) == set(CLASS_NAMES)
    assert f"similar cases: {2 * 4} images indexed (built)" in log, log[-3000:]
    assert f"the cache folder {blocker} is not writable" in log, log[-3000:]  # the operator is told, in the log
    assert "Traceback" not in log, log[-3000:]
    assert blocker.read_text() == "not a folder"


# ------------------------------------------------------------------------------------------ a client walks away


def test_client_that_disconnects_mid_lime_frees_the_cpu(no_data_app, tmp_path):
    """Speak the browser's queue protocol (join, then an event stream), drop the connection while LIME runs,
    and watch the server's CPU time: Gradio marks the event dead and the explainer stops at its next batch."""
    import httpx

    url = no_data_app.url
    config = httpx.get(f"{url}/config", timeout=30).json()
    (fn_index,) = [d["id"] for d in config["dependencies"] if d.get("api_name") == "explain"]
    image = sample_png(tmp_path)
    base = cpu_during(no_data_app.proc.pid, 4.0)  # an idle server still ticks (upload sweeps, event loop)
    with httpx.Client(base_url=f"{url}/gradio_api", timeout=60) as client:
        (path,) = client.post("/upload", files={"files": (image.name, image.read_bytes(), "image/png")}).json()
        session = secrets.token_hex(6)
        lime = json.dumps({"n_samples": 6000, "quality": False})  # within the work budget
        file_data = {"path": path, "orig_name": image.name, "meta": {"_type": "gradio.FileData"}}
        joined = client.post("/queue/join", json={"data": [file_data, "lime", lime, "cxr-resnet18"],
                                                  "fn_index": fn_index, "session_hash": session,
                                                  "event_data": None, "trigger_id": None})
        assert joined.status_code == 200, joined.text
        with client.stream("GET", "/queue/data", params={"session_hash": session}) as stream:
            lines = stream.iter_lines()
            for line in lines:
                assert "process_completed" not in line, f"LIME finished or failed before the test could leave: {line}"
                if '"progress"' in line and "lime" in line:
                    break  # the explainer is running and reporting batches
            # keep reading, as a browser does (a client that stops reading its stream stalls the progress updates
            # and with them the work), and measure the server's CPU meanwhile
            started, cpu_before = time.monotonic(), cpu_seconds(no_data_app.proc.pid)
            for line in lines:
                assert "process_completed" not in line, f"LIME finished or failed before the test could leave: {line}"
                if time.monotonic() - started >= 4.0:
                    break
            busy = (cpu_seconds(no_data_app.proc.pid) - cpu_before) * 4.0 / (time.monotonic() - started)
        # leaving both blocks closed the connection without reading the rest: the browser tab was closed
    work = busy - base
    assert work > 0.3, f"LIME added only {work:.2f} CPU-s in 4 s to the idle {base:.2f}: it was not running"
    # LIME looks at its client between batches; on a loaded machine one batch can take several seconds
    deadline, left = time.monotonic() + 30, work
    while left >= 0.25 * work and time.monotonic() < deadline:
        left = cpu_during(no_data_app.proc.pid, 4.0) - base
    assert left < 0.25 * work, (f"30 s after the client left the server still did {left:.2f} CPU-s of work in 4 s "
                                f"(LIME: {work:.2f}, idle: {base:.2f})")
    assert set(predicts(no_data_app, image)) == set(CLASS_NAMES)  # and it still serves
    assert "Traceback" not in no_data_app.log()


# ------------------------------------------------------------------------------------------ classroom pages


def render_pages(files: list[str]) -> dict[str, dict[str, list[str]]]:
    """Run each page (path relative to apps/) once under AppTest; what it showed, by kind. Runs in a child process."""
    from streamlit.testing.v1 import AppTest

    shown = {}
    for file in files:
        at = AppTest.from_file(str(APPS / file), default_timeout=600).run()
        shown[file] = {"exceptions": [e.message for e in at.exception], "errors": [e.value for e in at.error],
                       "warnings": [w.value for w in at.warning], "titles": [t.value for t in at.title]}
    return shown


def pages_under(tmp: Path, files: list[str], **env: str) -> dict[str, dict[str, list[str]]]:
    """render_pages in a child process with these environment variables, offline."""
    proxies = {k: DEAD_PROXY for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    code = ("import json, sys; from tests.apps.test_faults import render_pages; "
            "print('PAGES=' + json.dumps(render_pages(sys.argv[1:])))")
    done = subprocess.run([sys.executable, "-c", code, *files], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200, env={**app_env(tmp), **proxies, "OMP_NUM_THREADS": "1",
                                             "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **env})
    lines = [line for line in done.stdout.splitlines() if line.startswith("PAGES=")]
    assert done.returncode == 0 and lines, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("PAGES="))


# What a model page says when the bundled weights are unusable: the bundled model is still offered first
# (core.zoo.model_names), with the reason it cannot be used here.
PAGE_REASONS = {"missing": f"Weights file {WEIGHTS_NAME} is missing",
                "tensors that do not fit": f"{WEIGHTS_NAME} does not match its architecture"}


@pytest.mark.data
@pytest.mark.parametrize("damage", list(PAGE_REASONS))
def test_model_pages_show_an_error_not_an_exception_without_usable_weights(tmp_path, damage):
    models = tmp_path / "models"
    models.mkdir()
    BROKEN_WEIGHTS[damage][0](models)
    data = small_data_folder(tmp_path / "data")  # with X-rays at hand the pages default to the bundled model
    shown = pages_under(tmp_path, MODEL_PAGES, CNNLENS_MODELS=str(models), CNNLENS_DATA=str(data))
    assert set(shown) == set(MODEL_PAGES)
    for file, seen in shown.items():
        assert not seen["exceptions"], (file, seen["exceptions"])
        assert seen["titles"], f"{file} rendered nothing"
        messages = seen["errors"] + seen["warnings"]
        assert any(PAGE_REASONS[damage] in m for m in messages), (file, [m[:300] for m in messages])


@pytest.mark.parametrize("folder", ["missing", pytest.param("one class empty", marks=pytest.mark.data)])
def test_pages_that_offer_x_rays_render_without_a_usable_data_folder(tmp_path, folder):
    assert len(DATA_PAGES) >= 3, DATA_PAGES
    data = tmp_path / "data"
    if folder == "one class empty":  # NORMAL X-rays only: the pages must not offer an empty class
        small_data_folder(data, per_class=2)
        for path in (data / "PNEUMONIA").iterdir():
            path.unlink()
    shown = pages_under(tmp_path, DATA_PAGES, CNNLENS_DATA=str(data))
    assert set(shown) == set(DATA_PAGES)
    for file, seen in shown.items():
        assert not seen["exceptions"], (file, seen["exceptions"])
        assert not seen["errors"], (file, seen["errors"])
        assert seen["titles"], f"{file} rendered nothing"

