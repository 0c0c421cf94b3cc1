"""X-ray app latency: seconds until the app serves, /predict + Grad-CAM p50 over the wire, server peak memory.

Each figure comes with a floor measured in the same run, so the ratios travel between machines:
- ready-to-serve vs importing gradio + torch + core in a fresh interpreter (the part no app code can avoid);
- /predict followed by /explain (Grad-CAM, no trust checks) through gradio_client vs the same computation
  in-process (preprocess, forward, Grad-CAM, overlay), i.e. the cost of the web round trips and the queue;
  also /explain alone, whose summary already carries the probabilities (one round trip instead of two).

    python -m bench.app_latency [--repeats 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import table
from bench.load import ROOT, free_port, rss_mib
from core.data import data_dir, index_folder

IMPORTS = "import gradio, torch, core.explain, core.embed"


def import_floor() -> float:
    """Seconds for a fresh interpreter to import what the app needs."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    subprocess.run([sys.executable, "-c", IMPORTS], cwd=ROOT, check=True, env=env)
    return time.perf_counter() - start


def launch(port: int, log: Path) -> tuple[subprocess.Popen, float, float]:
    """Start the app; return it, the seconds until its API answers and until its similar-cases index is ready
    (requests are timed only after that, so the index build does not compete with them)."""
    from gradio_client import Client

    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "apps" / "xray_app.py"), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    ready = None
    deadline = started + 1800
    while time.perf_counter() < deadline and proc.poll() is None:
        if ready is None:
            try:
                Client(f"http://127.0.0.1:{port}", verbose=False)
                ready = time.perf_counter() - started
            except Exception:  # not listening yet
                pass
        if ready is not None and "similar cases" in log.read_text():
            return proc, ready, time.perf_counter() - started
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the app did not become ready:\n{log.read_text()[-3000:]}")


def in_process_seconds(paths: list, repeats: int) -> float:
    """Median seconds of predict + Grad-CAM + overlay computed in this process (the floor of a request pair),
    with one torch thread like the server's requests."""
    import torch

    from apps.xray import analysis, views
    from core.io import load_image

    torch.set_num_threads(1)

    def once(path: object) -> None:
        session = analysis.open_session(load_image(path), "bench", "cxr-resnet18")
        panel = analysis.run_method(session, "grad_cam", {})
        views.overlay(session, panel.explanation, views.Style())

    once(paths[0])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        once(paths[i % len(paths)])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(repeats: int) -> dict:
    """Start the app, time it, and measure requests and memory."""
    from gradio_client import Client, handle_file

    folder = data_dir()
    if folder is None:
        raise SystemExit("bench.app_latency needs the X-ray folder ($CNNLENS_DATA or ../shared/data/chest_xray).")
    paths = list(index_folder(folder).paths)[:: max(1, 5216 // 32)]
    floor_import = import_floor()
    with tempfile.TemporaryDirectory() as tmp:
        proc, ready, index_ready = launch(free_port(), Path(tmp) / "app.log")
        port = proc.args[-1]
    try:
        client = Client(f"http://127.0.0.1:{port}", verbose=False)
        pair, single = [], []
        for i in range(repeats + 1):
            image = handle_file(str(paths[i % len(paths)]))
            start = time.perf_counter()
            client.predict(image, api_name="/predict")
            client.predict(image, "grad_cam", '{"quality": false}', api_name="/explain")
            middle = time.perf_counter()
            client.predict(image, "grad_cam", '{"quality": false}', api_name="/explain")  # carries the probabilities
            if i:  # the first round warms up caches
                pair.append(middle - start)
                single.append(time.perf_counter() - middle)
        peak = rss_mib(proc.pid)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    floor_pair = in_process_seconds(paths, repeats)
    p50 = statistics.median(pair)
    return {"ready_s": ready, "import_floor_s": floor_import, "ready_ratio": ready / floor_import,
            "similar_index_ready_s": index_ready,
            "predict_gradcam_p50_s": p50, "explain_only_p50_s": statistics.median(single),
            "in_process_p50_s": floor_pair, "request_ratio": p50 / floor_pair,
            "server_peak_rss_mib": peak}


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.repeats)
    print(json.dumps(result) if args.json else table([result], list(result)))


if __name__ == "__main__":
    main()
