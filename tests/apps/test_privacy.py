"""Privacy and exposure: uploads leave nothing behind, DICOM identifiers never leak, Gradio serves only its own temp
files, and both apps listen on this machine only.

One X-ray app process serves the whole module, with its own Gradio temp folder, embedding cache, home and TMPDIR, so
any file it writes is seen; its output goes to a log file that is searched for identifiers. The uploads are a PNG and
DICOM files whose tags carry a name, IDs, dates and an institution (tests/core/corpus.py), named with a random
marker so every copy can be found.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import re
import secrets
import subprocess
import sys
import time
import tomllib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from tests.apps.test_faults import ROOT, app_env, launch_xray, sample_png, small_data_folder
from tests.conftest import LiveServer, free_port, wait_for_port
from tests.core.corpus import dicom_bytes

# Tags beyond corpus.dicom_bytes' own (PatientName Doe^Jane, PatientID SECRET-12345, birth 19800101, study 20240102).
EXTRA_TAGS = {"AccessionNumber": "ACC77SECRET", "InstitutionName": "St Quillfeather Clinic",
              "ReferringPhysicianName": "Grimsditch^Horace", "PatientAddress": "12 Privet Drive"}
IDENTIFIERS = ("Doe^Jane", "Doe, Jane", "Jane Doe", "SECRET-12345", "19800101", "1980-01-01", "20240102",
               "2024-01-02", "ACC77SECRET", "Quillfeather", "Grimsditch", "Privet")
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
DERIVED_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".pdf", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".npz", ".npy"}
OTHER_TESTS_OUTPUT = ROOT / "test-artifacts"  # screenshots written by other tests running meanwhile, not by the app
GRACE = 5  # seconds an upload is kept after its last use (the app's --upload-grace)


def leaks(text: str | bytes) -> list[str]:
    """The identifiers found in a text or a file's bytes."""
    data = text.encode() if isinstance(text, str) else text
    return [i for i in IDENTIFIERS if i.encode().lower() in data.lower()]


def files_under(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file below root (symlinks not followed) with its size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            path = Path(folder) / name
            try:
                info = path.lstat()
            except FileNotFoundError:  # deleted while walking
                continue
            found[path] = (info.st_size, info.st_mtime_ns)
    return found


def changed(before: dict[Path, tuple[int, int]], after: dict[Path, tuple[int, int]]) -> list[Path]:
    """Files that are new or different in ``after``."""
    return sorted(p for p, stamp in after.items() if before.get(p) != stamp)


# ------------------------------------------------------------------------------------------ the server and a batch


@dataclass
class Server:
    """The module's app and the folders it was given."""

    app: LiveServer
    gradio_tmp: Path
    private: dict[str, Path]  # folders that only this server uses: name -> path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("privacy")
    private = {name: tmp / name for name in ("home", "tmpdir", "cache")}
    for folder in private.values():
        folder.mkdir()
    gradio_tmp = tmp / "gradio-tmp"
    env = app_env(tmp, GRADIO_TEMP_DIR=str(gradio_tmp), HOME=str(private["home"]), TMPDIR=str(private["tmpdir"]),
                  CNNLENS_CACHE=str(private["cache"]), CNNLENS_DATA=str(tmp / "no-data"))
    app = launch_xray(tmp, env, "--upload-grace", str(GRACE), "--no-similar")
    yield Server(app, gradio_tmp, private)
    app.stop()


@dataclass
class Batch:
    """What a batch of uploads returned, and what the file system looked like around it."""

    marker: str
    uploads: dict[str, bytes]  # file name -> bytes sent
    answers: list[str] = field(default_factory=list)  # every response and error message, as text
    outputs: list[str] = field(default_factory=list)  # server-side paths of files the API returned
    before: dict[str, dict[Path, tuple[int, int]]] = field(default_factory=dict)
    after: dict[str, dict[Path, tuple[int, int]]] = field(default_factory=dict)


def _snapshot(server: Server) -> dict[str, dict[Path, tuple[int, int]]]:
    return {"repo": files_under(ROOT), **{name: files_under(path) for name, path in server.private.items()}}


@pytest.fixture(scope="module")
def batch(server, tmp_path_factory) -> Batch:
    """Warm the server up, then send PNG and DICOM uploads (good and broken) through /predict and /explain."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server.app.url, verbose=False, download_files=False)  # nothing downloaded into this machine's tmp
    folder = tmp_path_factory.mktemp("uploads")
    client.predict(handle_file(str(sample_png(folder, "warm-up.png"))), "grad_cam", "{}", api_name="/explain")
    marker = f"privacy-probe-{secrets.token_hex(4)}"
    png = sample_png(folder, f"{marker}.png")
    pixels = (np.asarray(Image.open(png), dtype=np.uint16) * 16)  # 12-bit, like a radiograph
    uploads = {png.name: png.read_bytes(),
               f"{marker}.dcm": dicom_bytes(pixels, **EXTRA_TAGS),
               f"{marker}-no-pixels.dcm": dicom_bytes(pixels, with_pixels=False, **EXTRA_TAGS),
               f"{marker}-truncated.dcm": dicom_bytes(pixels, **EXTRA_TAGS)[:-2000]}
    result = Batch(marker, uploads)
    result.before = _snapshot(server)
    for name, data in uploads.items():
        (folder / name).write_bytes(data)
        for args, api in (((), "/predict"), (("grad_cam", '{"quality": true}'), "/explain")):
            try:
                answer = client.predict(handle_file(str(folder / name)), *args, api_name=api)
            except AppError as err:
                result.answers.append(str(err))
                continue
            result.answers.append(repr(answer))
            if api == "/explain":
                result.outputs.append(answer[0]["path"])
    deadline = time.monotonic() + 60  # the grace, then a sweep every few seconds
    while any(marker in p.name for p in server.gradio_tmp.rglob("*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    result.after = _snapshot(server)
    return result


# ------------------------------------------------------------------------------------------ nothing left behind


def test_uploads_and_every_copy_of_them_are_deleted(server, batch):
    assert len(batch.outputs) == 2  # the PNG and the good DICOM were explained; the broken DICOMs refused
    left = [p for p in server.gradio_tmp.rglob("*") if batch.marker in p.name]
    assert not left, f"uploads still in Gradio's temp folder: {left}"
    sent = {hashlib.sha256(data).hexdigest() for data in batch.uploads.values()}
    for path in server.gradio_tmp.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() not in sent, f"a copy of an upload remains: {path}"
            assert not leaks(data), f"{path} holds DICOM identifiers {leaks(data)}"


def test_no_file_appears_outside_gradio_temp(server, batch):
    for name in server.private:  # its home, TMPDIR and cache: nothing else writes there
        new = changed(batch.before[name], batch.after[name])
        assert not new, (name, new)
    suspicious = [p for p in changed(batch.before["repo"], batch.after["repo"])
                  if not p.is_relative_to(OTHER_TESTS_OUTPUT)
                  and p.exists() and (p.suffix.lower() in DERIVED_SUFFIXES or batch.marker in p.name
                                      or leaks(p.read_bytes()))]
    assert not suspicious, f"files the uploads may have left in the repository: {suspicious}"


# ------------------------------------------------------------------------------------------ identifiers


def test_dicom_identifiers_never_reach_responses_or_the_log(server, batch):
    answers = "\n".join(batch.answers)
    assert "probabilities" in answers and "confidences" in answers  # the good files were answered
    assert "no pixel data" in answers.lower()  # the broken DICOMs were refused with a reason
    assert not leaks(answers), leaks(answers)
    log = server.app.log()
    assert "Running on local URL" in log
    assert not leaks(log), (leaks(log), log[-3000:])


def test_report_of_a_dicom_holds_no_identifiers(tmp_path, monkeypatch):
    """The report the page builds (PNG or PDF): every text drawn on it, and the file's bytes, inflated."""
    from matplotlib.text import Text

    from apps.xray import analysis, report, views
    from core.io import load_image

    pixels = (np.asarray(Image.open(sample_png(tmp_path)), dtype=np.uint16) * 16)
    image = load_image(dicom_bytes(pixels, **EXTRA_TAGS))
    session = analysis.open_session(image, "Doe_Jane_chest.dcm", "cxr-resnet18", uploaded=True)
    session.add(analysis.run_method(session, "grad_cam", {}))
    texts = "\n".join(t.get_text() for t in report.build_figure(session, views.Style()).findobj(Text))
    assert "modality: CR" in texts and "view: PA" in texts  # the safe DICOM metadata is on the report...
    assert not leaks(texts), leaks(texts)  # ...and nothing that identifies the patient
    assert "Doe_Jane" not in texts and "an uploaded image" in texts  # not even the file's name
    monkeypatch.setattr(report, "_FOLDER", tmp_path / "reports")
    for fmt in ("pdf", "png"):
        data = report.write_report(session, fmt, views.Style()).read_bytes()
        streams = [zlib.decompress(s) for s in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S)
                   if s[:1] == b"x"]  # zlib-compressed PDF streams
        assert not leaks(data) and not any(leaks(s) for s in streams), fmt


# ------------------------------------------------------------------------------------------ what Gradio serves


def _get(port: int, path: str) -> tuple[int, bytes]:
    """A GET with the path sent exactly as written (no client-side normalisation of ``..`` or escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_file_routes_serve_gradio_outputs_and_nothing_else(server, batch, tmp_path):
    port = server.app.port
    output = Path(batch.outputs[0])
    status, body = _get(port, f"/gradio_api/file={output}")  # the route works for what the app returned
    assert status == 200 and body == output.read_bytes()

    secret = server.gradio_tmp.parent / "secret.txt"  # next to the temp folder: reachable only by escaping it
    secret.write_text(f"sentinel-{secrets.token_hex(8)}")
    weights = ROOT / "models" / "cxr-resnet18.safetensors"
    protected = {Path("/etc/passwd"): b"root:", ROOT / "README.md": (ROOT / "README.md").read_bytes()[:40],
                 weights: weights.read_bytes()[8:60], secret: secret.read_bytes(),
                 ROOT / "apps" / "xray_app.py": b"def parse_args"}
    tmp = str(server.gradio_tmp)
    paths = []
    for target in protected:
        relative = os.path.relpath(target, ROOT)
        for spelled in (str(target), quote(str(target), safe=""), quote(quote(str(target), safe=""), safe=""),
                        relative, f"{tmp}/../{os.path.relpath(target, server.gradio_tmp.parent)}",
                        f"{tmp}/%2e%2e/{os.path.relpath(target, server.gradio_tmp.parent)}",
                        f"{tmp}/..%2f{quote(os.path.relpath(target, server.gradio_tmp.parent), safe='')}",
                        "/" + str(target), f"file://{target}"):
            paths += [f"/gradio_api/file={spelled}", f"/file={spelled}", f"/gradio_api/file/{spelled}"]
    paths += [f"/{route}/{'..%2f' * 8}etc%2fpasswd" for route in ("static", "assets", "svelte", "gradio_api/static")]
    paths += [f"/{route}/{'../' * 8}etc/passwd" for route in ("static", "assets", "svelte")]
    paths += ["/gradio_api/proxy=file:///etc/passwd", f"/gradio_api/proxy=http://127.0.0.1:{port}/config",
              f"/gradio_api/custom_component/x/client/{'..%2f' * 8}etc%2fpasswd/index.js"]
    served = []
    for path in paths:
        status, body = _get(port, path)
        found = [str(t) for t, content in protected.items() if content in body]
        if status < 400 or found:
            served.append((path, status, found))
    assert not served, f"{len(served)} of {len(paths)} requests were not refused: {served[:10]}"


def test_api_reads_only_files_the_client_uploaded(server, tmp_path):
    """A client can name a server path instead of uploading; a readable X-ray outside Gradio's temp folder (or a path
    that escapes it) must be refused, never predicted."""
    import httpx

    def predict_path(client: httpx.Client, path: str) -> str:
        started = client.post("/call/predict", json={"data": [{"path": path, "meta": {"_type": "gradio.FileData"}},
                                                               "cxr-resnet18"]})
        if started.status_code != 200:
            return f"refused: {started.status_code}"
        return client.get(f"/call/predict/{started.json()['event_id']}").text

    outside = sample_png(server.gradio_tmp.parent, "not-uploaded.png")
    weights = ROOT / "models" / "cxr-resnet18.safetensors"
    with httpx.Client(base_url=f"{server.app.url}/gradio_api", timeout=120) as client:
        (uploaded,) = client.post("/upload", files={"files": (outside.name, outside.read_bytes(), "image/png")}).json()
        answer = predict_path(client, uploaded)
        assert "event: complete" in answer and "confidences" in answer, answer[:500]  # the same call, uploaded
        for path in (str(outside), f"{server.gradio_tmp}/../{outside.name}", str(weights), "/etc/passwd"):
            answer = predict_path(client, path)
            assert "event: complete" not in answer and "confidences" not in answer, (path, answer[:500])
    assert outside.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # and the app did not delete a file it never received


# ------------------------------------------------------------------------------------------ where the apps listen


def listening_addresses(pid: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Addresses of the TCP sockets process ``pid`` listens on, from /proc (its socket inodes and the TCP tables)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addresses = []
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(local.split(":")[0])
                # the kernel prints each 32-bit word of the address in host (little-endian) byte order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                address = ipaddress.ip_address(words)
                addresses.append(getattr(address, "ipv4_mapped", None) or address)
    return addresses


def test_gradio_app_listens_on_loopback_only(server):
    addresses = listening_addresses(server.app.proc.pid)
    assert addresses and all(a.is_loopback for a in addresses), addresses


def test_streamlit_listens_on_loopback_by_default_and_caps_uploads(tmp_path, monkeypatch):
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert config["address"] == "127.0.0.1"
    assert 1 <= config["maxUploadSize"] <= 200, "uploads must be capped (Streamlit's own default is 200 MB)"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "apps/streamlit_app.py", "--server.port",
                             str(port), "--server.headless", "true"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                            "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"})
    try:
        wait_for_port(port, proc)
        addresses = listening_addresses(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert addresses and all(a.is_loopback for a in addresses), addresses

    from streamlit import config as st_config
    from streamlit.testing.v1 import AppTest

    from apps.catalogue import LESSONS

    monkeypatch.chdir(ROOT)  # AppTest reads .streamlit/config.toml from the working folder only
    st_config.get_config_options(force_reparse=True)
    (lesson,) = [lesson for lesson in LESSONS if lesson.file.endswith("convolution.py")]
    at = AppTest.from_file(str(ROOT / "apps" / lesson.file), default_timeout=300).run()
    at.radio(key="conv_source").set_value("upload").run()
    (uploader,) = at.get("file_uploader")
    assert uploader.proto.max_upload_size_mb == config["maxUploadSize"]  # the cap reaches the page's uploader


# ------------------------------------------------------------------------------------------ shutdown (runs last)


def test_stopping_the_app_deletes_uploads_in_their_grace_period_and_the_maps_it_returned(server, batch, tmp_path):
    """What a service manager does (SIGTERM) while a visitor's upload is still in its grace period and the maps
    the app returned are still in Gradio's cache: all of it is deleted on the way out."""
    from gradio_client import Client, handle_file

    client = Client(server.app.url, verbose=False, download_files=False)  # stays connected, as an open tab does
    last = sample_png(tmp_path, f"{batch.marker}-last.png")
    client.predict(handle_file(str(last)), api_name="/predict")
    pending = [p for p in server.gradio_tmp.rglob(last.name)]
    served = [Path(p) for p in batch.outputs]
    assert pending and all(p.exists() for p in served)  # still there: the test below means something
    logged = len(server.app.log())
    server.app.stop()
    shutdown = server.app.log()[logged:]
    assert server.app.proc.returncode == 0 and "Traceback" not in shutdown, shutdown[-2000:]
    left = [p for p in [*pending, *served] if p.exists()]
    assert not left, f"{len(left)} files derived from uploads outlived the server: {left}"


# ------------------------------------------------------------------------------------------ examples are not uploads


def _predict_path(client: object, path: str) -> str:
    """The event stream of /predict called with a server path in place of an upload."""
    started = client.post("/call/predict", json={"data": [{"path": path, "meta": {"_type": "gradio.FileData"}},
                                                           "cxr-resnet18"]})
    if started.status_code != 200:
        return f"refused: {started.status_code}"
    return client.get(f"/call/predict/{started.json()['event_id']}").text


@pytest.mark.data
def test_predict_on_an_example_thumbnails_path_leaves_the_example(tmp_path):
    """/config publishes the example thumbnails' paths, inside Gradio's upload folder. A client that sends one to
    /predict gets its prediction, and the upload cleaner must leave it (it deleted it, and the example answered 403
    for everyone until a restart), while it still deletes a real upload."""
    import httpx

    data = small_data_folder(tmp_path / "data", per_class=2)
    env = app_env(tmp_path, CNNLENS_DATA=str(data), CNNLENS_CACHE=str(tmp_path / "cache"))
    app = launch_xray(tmp_path, env, "--upload-grace", "1", "--no-similar")
    try:
        config = httpx.get(f"{app.url}/config", timeout=60).json()
        gallery = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "examples")
        thumbnails = [item["image"]["path"] for item in gallery["props"]["value"]]
        assert thumbnails and all(Path(p).is_file() for p in thumbnails)
        upload = sample_png(tmp_path, "mine.png")
        with httpx.Client(base_url=f"{app.url}/gradio_api", timeout=120) as client:
            for path in thumbnails[:2]:
                answer = _predict_path(client, path)
                assert "event: complete" in answer and "confidences" in answer, answer[:500]
            sent = {"files": (upload.name, upload.read_bytes(), "image/png")}
            (uploaded,) = client.post("/upload", files=sent).json()
            assert "confidences" in _predict_path(client, uploaded)
            deadline = time.monotonic() + 30  # the 1 s grace, then a sweep every second
            while Path(uploaded).exists() and time.monotonic() < deadline:
                time.sleep(0.25)
            assert not Path(uploaded).exists()  # the cleaner ran: the real upload is gone...
            for path in thumbnails[:2]:  # ...and the examples are still there and still served
                assert Path(path).is_file(), path
                assert client.get(f"/file={path}").status_code == 200
    finally:
        app.stop()
