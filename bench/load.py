"""Load test of the X-ray app: N concurrent gradio_client clients, each sending M mixed requests.

Starts the app on 127.0.0.1 (a free port), then every client sends /predict, /explain with Grad-CAM and now and
then a LIME, on real X-rays from the data folder. Reports requests served, errors, p50/p95/p99 latency per endpoint,
throughput, the server's peak RSS and its RSS growth between the first and the last 100 requests. Bounded in
request count and in time; talks to loopback only.

    python -m bench.load [--clients 16] [--requests 30] [--lime-every 15] [--max-seconds 1800] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import table
from core.data import data_dir, index_folder

ROOT = Path(__file__).resolve().parent.parent


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MiB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def start_app(port: int, log: Path, *flags: str, **env_extra: str) -> subprocess.Popen:
    """Launch apps/xray_app.py on loopback with ``flags`` and extra environment variables, its output going to
    ``log``, and wait until its API answers."""
    from gradio_client import Client

    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT), **env_extra}
    with log.open("w") as handle:
        proc = subprocess.Popen([sys.executable, str(ROOT / "apps" / "xray_app.py"), "--host", "127.0.0.1", "--port",
                                 str(port), *flags], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited during start-up:\n{log.read_text()[-3000:]}")
        try:
            Client(f"http://127.0.0.1:{port}", verbose=False)
            return proc
        except Exception:  # not up yet
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError(f"the app did not answer within 180 s:\n{log.read_text()[-3000:]}")


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by the nearest-rank method, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def run(clients: int, requests: int, lime_every: int, max_seconds: float) -> dict:
    """Drive the app and collect latencies, errors and server memory."""
    from gradio_client import Client, handle_file

    folder = data_dir()
    if folder is None:
        raise SystemExit("bench.load needs the X-ray folder ($CNNLENS_DATA or ../shared/data/chest_xray).")
    every = list(index_folder(folder).paths)
    paths = every[:: max(1, len(every) // 64)]  # about 64 X-rays spread over the folder
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="cnnlens-load-")) / "app.log"
    proc = start_app(port, log)
    url = f"http://127.0.0.1:{port}"
    lock = threading.Lock()
    records: list[tuple[str, float, bool]] = []
    failures: dict[str, int] = {}  # error message -> count, so a failed run says why
    rss_by_request: list[float] = []
    stop_at = time.time() + max_seconds

    def send(client: Client, kind: str, path: Path) -> None:
        image = handle_file(str(path))
        if kind == "predict":
            client.predict(image, api_name="/predict")
        else:
            method = kind.split(":")[1]
            params = '{"n_samples": 300, "quality": false}' if method == "lime" else '{"quality": false}'
            client.predict(image, method, params, api_name="/explain")

    def client_loop(worker: int) -> None:
        client = Client(url, verbose=False)
        for i in range(requests):
            if time.time() > stop_at:
                return
            kind = "explain:lime" if lime_every and i % lime_every == lime_every - 1 else (
                "predict" if i % 2 == 0 else "explain:grad_cam")
            start = time.perf_counter()
            failure = ""
            try:
                send(client, kind, paths[(worker * requests + i) % len(paths)])
            except Exception as err:  # any failure counts as an error in the report
                failure = f"{kind}: {type(err).__name__}: {err}"[:200]
            elapsed = time.perf_counter() - start
            with lock:
                records.append((kind, elapsed, not failure))
                if failure:
                    failures[failure] = failures.get(failure, 0) + 1
                rss_by_request.append(rss_mib(proc.pid)[0])

    try:  # warm-up, not counted: the first request of each kind loads code and sizes the allocator's pools,
        # which is start-up cost; growth after it is what a leak looks like
        warm = Client(url, verbose=False)
        for kind in ("predict", "explain:grad_cam", "explain:lime"):
            send(warm, kind, paths[0])
        rss_after_warmup = rss_mib(proc.pid)[0]
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client_loop, range(clients)))
        wall = time.perf_counter() - started
        peak = rss_mib(proc.pid)[1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    rows = []
    for kind in sorted({k for k, _, _ in records}):
        lat = [t for k, t, ok in records if k == kind and ok]
        rows.append({"endpoint": kind, "served": len(lat), "errors": sum(1 for k, _, ok in records
                                                                        if k == kind and not ok),
                     "p50_s": percentile(lat, 50), "p95_s": percentile(lat, 95), "p99_s": percentile(lat, 99)})
    if not records:
        raise SystemExit("No request was sent within --max-seconds.")
    window = max(1, min(100, len(rss_by_request) // 2))
    first, last = statistics.mean(rss_by_request[:window]), statistics.mean(rss_by_request[-window:])
    return {"clients": clients, "requests_per_client": requests, "served": sum(ok for _, _, ok in records),
            "errors": sum(not ok for _, _, ok in records), "not_sent": clients * requests - len(records),
            "seconds": wall, "throughput_rps": len(records) / wall, "server_peak_rss_mib": peak,
            "rss_after_warmup_mib": rss_after_warmup,
            "rss_first_window_mib": first, "rss_last_window_mib": last,
            "rss_growth_pct": 100 * (last - first) / first,
            "rss_by_100_requests_mib": [round(statistics.mean(rss_by_request[i:i + 100]))
                                        for i in range(0, len(rss_by_request), 100)],
            "endpoints": rows, "failures": failures}


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--lime-every", type=int, default=15, help="every k-th request of a client is a LIME")
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.clients, args.requests, args.lime_every, args.max_seconds)
    if args.json:
        print(json.dumps(result))
        return
    print(table(result.pop("endpoints"), ["endpoint", "served", "errors", "p50_s", "p95_s", "p99_s"]))
    print("server RSS (MiB), mean of each 100 requests:", *result.pop("rss_by_100_requests_mib"))
    for message, count in result.pop("failures").items():
        print(f"{count} x {message}")
    print(table([result], list(result)))


if __name__ == "__main__":
    main()
