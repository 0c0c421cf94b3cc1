"""Hosting limits on the real X-ray app process: a hostile /explain is refused before any work, one visitor flooding
the queue is refused with a message while another visitor's /predict is served, cancelled heavy work frees the CPU,
and SIGTERM in the middle of an explanation exits cleanly, leaving no file or folder in Gradio's temp folder and no
upload's name in the log.

The app runs with 3 requests per visitor, no address limit (every client here is 127.0.0.1), one heavy request at
a time and no data folder; its Gradio temp folder is its own, so everything it writes there is seen."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.data import CLASS_NAMES
from tests.apps.test_faults import app_env, launch_xray, predicts, sample_png
from tests.conftest import LiveServer
from tests.helpers import cpu_during, cpu_settled

PER_VISITOR = 3
HEAVY_LIME = json.dumps({"n_samples": 6000, "quality": False})  # minutes of work, within the budget


@dataclass
class App:
    server: LiveServer
    gradio_tmp: Path
    marker: str  # in every uploaded file's name, to search the log for


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[App]:
    tmp = tmp_path_factory.mktemp("hosting")
    gradio_tmp = tmp / "gradio-tmp"
    env = app_env(tmp, GRADIO_TEMP_DIR=str(gradio_tmp), CNNLENS_DATA=str(tmp / "no-data"))
    server = launch_xray(tmp, env, "--no-similar", "--per-visitor", str(PER_VISITOR), "--per-host", "0",
                         "--heavy-concurrency", "1", "--upload-grace", "600", "--stop-wait", "15")
    yield App(server, gradio_tmp, f"hosting-probe-{secrets.token_hex(4)}")
    server.stop()


def _upload(http: httpx.Client, image: Path) -> dict:
    (path,) = http.post("/upload", files={"files": (image.name, image.read_bytes(), "image/png")}).json()
    return {"path": path, "orig_name": image.name, "meta": {"_type": "gradio.FileData"}}


def _explain_index(url: str) -> int:
    config = httpx.get(f"{url}/config", timeout=30).json()
    (index,) = [d["id"] for d in config["dependencies"] if d.get("api_name") == "explain"]
    return index


def test_a_hostile_explanation_is_refused_before_any_work(app, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(app.server.url, verbose=False, download_files=False)
    image = handle_file(str(sample_png(tmp_path, f"{app.marker}-a.png")))
    with pytest.raises(AppError, match=r"LIME with these settings needs about 10,002 passes .* n_samples up to"):
        client.submit(image, "lime", '{"n_samples": 10000, "quality": false}', api_name="/explain").result(timeout=60)
    with pytest.raises(AppError, match=r"Occlusion .* stride of at least \d+ fits"):
        client.submit(image, "occlusion", '{"patch": 2, "stride": 1}', api_name="/explain").result(timeout=60)


def test_a_flooding_visitor_is_refused_another_is_served_and_cancelling_frees_the_cpu(app, tmp_path):
    url = app.server.url
    fn_index = _explain_index(url)
    image = sample_png(tmp_path, f"{app.marker}-b.png")
    session = secrets.token_hex(6)
    with httpx.Client(base_url=f"{url}/gradio_api", timeout=60) as http:
        data = [_upload(http, image), "lime", HEAVY_LIME, "cxr-resnet18"]
        answers = [http.post("/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                  "event_data": None, "trigger_id": None}) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * PER_VISITOR + [400] * 2, [a.text for a in answers]
        assert f"You already have {PER_VISITOR} requests waiting or running" in answers[-1].json()["detail"]
        assert set(predicts(app.server, image)) == set(CLASS_NAMES)  # another visitor is served meanwhile
        time.sleep(2.0)
        busy = cpu_during(app.server.proc.pid, 3.0)
        for answer in answers[:PER_VISITOR]:
            http.post("/cancel", json={"session_hash": session, "fn_index": fn_index,
                                       "event_id": answer.json()["event_id"]})
        time.sleep(3.0)  # the explainer checks at every batch; the queued ones never start
        idle = cpu_settled(app.server.proc.pid, below=0.2 * busy)
        assert busy > 0.5, f"the flood used only {busy:.2f} CPU-s in 3 s: LIME was not running"
        assert idle < 0.2 * busy, (f"after the cancel the server still used {idle:.2f} CPU-s per 3 s for 20 s "
                                   f"({busy:.2f} before)")
        again = http.post("/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                               "event_data": None, "trigger_id": None})
        assert again.status_code == 200, again.text  # the quota counts the stopped work no more
        http.post("/cancel", json={"session_hash": session, "fn_index": fn_index,
                                   "event_id": again.json()["event_id"]})


def test_sigterm_during_an_explanation_exits_cleanly_and_leaves_nothing(app, tmp_path):
    """Runs last (it stops the module's app): a map served, an upload in its grace period and LIME running."""
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status

    client = Client(app.server.url, verbose=False, download_files=False)
    image = handle_file(str(sample_png(tmp_path, f"{app.marker}-c.png")))
    overlay, _ = client.predict(image, "grad_cam", '{"quality": false}', api_name="/explain")
    assert Path(overlay["path"]).exists()
    job = client.submit(image, "lime", HEAVY_LIME, api_name="/explain")
    deadline = time.monotonic() + 120
    running = (Status.PROCESSING, Status.PROGRESS)
    while job.status().code not in running and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)
    assert job.status().code in running
    assert any(app.gradio_tmp.rglob(f"{app.marker}*"))  # uploads still in their grace period
    logged = len(app.server.log())
    app.server.proc.terminate()
    app.server.proc.wait(timeout=60)
    shutdown, whole = app.server.log()[logged:], app.server.log()
    assert app.server.proc.returncode == 0, shutdown[-3000:]
    assert "Traceback" not in shutdown and "terminate called" not in shutdown, shutdown[-3000:]
    assert "requests were still running" not in shutdown, shutdown[-3000:]  # LIME stopped at its next batch
    left = sorted(str(p.relative_to(app.gradio_tmp)) for p in app.gradio_tmp.rglob("*"))
    assert not left, f"left in Gradio's temp folder: {left[:20]}"
    assert app.marker not in whole  # no upload's name in the log
