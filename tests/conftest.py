"""Shared fixtures: the bundled model, headless Chromium via Playwright, a live Streamlit server, artefact folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """Block until something listens on ``port`` or fail when the process exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode})")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listened on port {port} within {timeout:.0f} s")


@dataclass
class LiveServer:
    """A server process whose stdout and stderr go to ``log_path``.

    A file, not a pipe: a pipe nobody drains fills up and blocks the server, and ``select`` on a buffered pipe
    misses lines already read into Python's buffer.
    """

    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the process has printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 300.0) -> None:
        """Block until the log contains ``text`` (fail with the log otherwise)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server never logged {text!r}:\n{self.log()[-4000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        """Terminate (SIGTERM, as a service manager does), then kill if it lingers."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_server(cmd: list[str], port: int, log_path: Path, env: dict[str, str] | None = None,
                 timeout: float = 300.0) -> LiveServer:
    """Start a server process from the repo root, its output going to ``log_path``; wait until it listens."""
    with log_path.open("w") as handle:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})})
    server = LiveServer(proc, port, log_path)
    try:
        wait_for_port(port, proc, timeout)
    except (RuntimeError, TimeoutError) as err:
        server.stop()
        raise AssertionError(f"{err}:\n{server.log()[-4000:]}") from err
    return server


def wait_for_plots(page, count: int, timeout_ms: float = 180_000) -> None:
    """Block until ``count`` plotly charts have drawn: Streamlit loads plotly lazily, after the script finished."""
    drawn = "[...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg')).length"
    page.wait_for_function(f"() => {drawn} >= {count}", timeout=timeout_ms)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for a module: with other processes on the 2 CI cores, two spinning threads ran
    ~50x slower. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bundled():
    """The bundled chest X-ray model (trained weights committed in models/)."""
    from core.zoo import load_model

    return load_model("cxr-resnet18")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Folder for screenshots and other test artefacts (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def browser():
    """A headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def streamlit_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live Streamlit classroom on a free local port."""
    port = free_port()
    server = start_server([sys.executable, "-m", "streamlit", "run", "apps/streamlit_app.py",
                           "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true"],
                          port, tmp_path_factory.mktemp("streamlit") / "server.log")
    yield server.url
    server.stop()
