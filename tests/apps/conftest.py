"""Gradio fixtures: a live "Explain my X-ray" server on a small data folder, and a gradio_client for it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.data import CLASS_NAMES, data_dir
from tests.conftest import free_port, start_server

PER_CLASS = 8  # the server's data folder: enough for examples and a similar-cases index, quick to embed


@dataclass(frozen=True)
class XrayServer:
    """A running app: its URL, process, data folder (symlinks to real X-rays) and Gradio temp folder."""

    url: str
    pid: int
    data: Path
    gradio_tmp: Path

    def images(self, label: str) -> list[Path]:
        """The server's data-folder images of one class."""
        return sorted((self.data / label).iterdir())


@pytest.fixture(scope="session")
def xray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XrayServer]:
    """The X-ray app on a free port, with its own data folder, embedding cache and Gradio temp folder."""
    source = data_dir()
    assert source is not None, "set CNNLENS_DATA or deselect with -m 'not data'"
    root = tmp_path_factory.mktemp("xray-data")
    for label in CLASS_NAMES:
        (root / label).mkdir()
        files = sorted((source / label).iterdir())
        for path in files[:: max(1, len(files) // PER_CLASS)][:PER_CLASS]:
            (root / label / path.name).symlink_to(path)  # never copy the data set
    gradio_tmp = tmp_path_factory.mktemp("gradio-tmp")
    port = free_port()
    env = {"CNNLENS_DATA": str(root), "CNNLENS_CACHE": str(tmp_path_factory.mktemp("cnnlens-cache")),
           "GRADIO_TEMP_DIR": str(gradio_tmp), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = start_server([sys.executable, "apps/xray_app.py", "--port", str(port), "--upload-grace", "5"], port,
                          tmp_path_factory.mktemp("xray-log") / "server.log", env)
    try:
        server.wait_for_log("similar cases:")  # the index is built in the background after start-up
        yield XrayServer(server.url, server.proc.pid, root, gradio_tmp)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def xray_client(xray_server: XrayServer):
    """A gradio_client connected to the live server."""
    from gradio_client import Client

    return Client(xray_server.url, verbose=False)
