"""Hosting bench of the X-ray app: what one visitor gets while others flood the server, with and without the queue
quota, how fast cancelled work lets go of the CPU, and what large uploads cost in memory.

Starts the app on 127.0.0.1 (a free port, no similar-cases index) twice: with the default limits, then with the
quota off (``--per-visitor 0 --per-host 0``). In each, a probe visitor sends /predict and a Grad-CAM /explain
alone, then again while ``--flooders`` visitors each try to keep ``--depth`` SmoothGrad explanations in the queue
(gradio_client sessions, as careless scripts would). Latencies are reported as ratios to the same run's "alone"
figures. With the quota off, one client also submits 10 LIME jobs, cancels them and the bench times how long the
server's CPU takes to fall under 20 %. With the quota on, 10 uploads of a 64-Mpx colour PNG (refused by the decode
cap) and 10 of a 12-Mpx one (accepted, kept at <= 2,048 px) measure resident memory against idle. Loopback only.

    python -m bench.hosting [--flooders 3] [--depth 40] [--probes 10] [--explains 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import table
from bench.load import free_port, percentile, rss_mib, start_app

ROOT = Path(__file__).resolve().parent.parent
FLOOD = ("smoothgrad", json.dumps({"n_samples": 10, "quality": False}))  # about a second of one core each
PROBE = ("grad_cam", json.dumps({"quality": False}))
LIME = ("lime", json.dumps({"n_samples": 6000, "quality": False}))  # minutes of work, within the budget
LOCK = threading.Lock()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probe(url: str, image: str, count: int, explains: int, timeout: float) -> dict[str, list[float] | int]:
    """One visitor's /predict and /explain latencies (seconds), and how many failed or timed out."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    out: dict[str, list[float] | int] = {"predict": [], "explain": [], "failed": 0}
    every = max(1, (count + explains) // max(1, explains))
    plan = ["explain" if i % every == every - 1 and i // every < explains else "predict"
            for i in range(count + explains)]  # the explanations spread among the predictions
    for kind in plan:
        args = (handle_file(image),) if kind == "predict" else (handle_file(image), *PROBE)
        started = time.perf_counter()
        try:
            client.submit(*args, api_name=f"/{kind}").result(timeout=timeout)
            out[kind].append(time.perf_counter() - started)
        except Exception:  # refused (queue full, quota) or timed out: counted, not timed
            out["failed"] += 1
    return out


def flood(url: str, image: str, depth: int, stop: threading.Event, tally: dict[str, int]) -> None:
    """One visitor that keeps ``depth`` explanations submitted until ``stop``; counts accepted and refused."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    jobs: list = []
    while not stop.is_set():
        refused = False
        for job in [j for j in jobs if j.done()]:
            jobs.remove(job)
            refused |= job.exception() is not None
            with LOCK:
                tally["refused" if job.exception() is not None else "served"] += 1
        if len(jobs) < depth and not refused:
            jobs.append(client.submit(handle_file(image), *FLOOD, api_name="/explain"))
            with LOCK:
                tally["sent"] += 1
        time.sleep(0.5 if refused else 0.05)  # refused: a polite client backs off a little
    for job in jobs:
        job.cancel()


def summary(name: str, lat: dict, alone: dict | None) -> dict:
    """One table row: p50/p95 per endpoint and their ratio to the same server's figures alone."""
    row: dict = {"scenario": name, "failed": lat["failed"]}
    for kind in ("predict", "explain"):
        for q in (50, 95):
            value = percentile(lat[kind], q)
            row[f"{kind}_p{q}_s"] = value
            base = percentile(alone[kind], q) if alone else None
            row[f"{kind}_p{q}_x"] = value / base if value is not None and base else None
    return row


def cancel_drop(url: str, pid: int, image: str, jobs: int) -> dict:
    """Submit ``jobs`` LIME explanations from one client, cancel them once work runs, and time the CPU's fall."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    submitted = [client.submit(handle_file(image), *LIME, api_name="/explain") for _ in range(jobs)]
    time.sleep(8.0)  # uploads done, the first ones running
    before = cpu_seconds(pid)
    time.sleep(2.0)
    busy = (cpu_seconds(pid) - before) / 2.0
    for job in submitted:
        job.cancel()
    cancelled = time.perf_counter()
    seconds = None
    while time.perf_counter() - cancelled < 30:
        mark = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - mark < 0.2:  # under 20 % of one core for a whole second
            seconds = time.perf_counter() - cancelled
            break
    return {"jobs": jobs, "cpu_busy_cores": busy, "seconds_to_under_20pct": seconds}


def memory(url: str, pid: int, folder: Path) -> dict:
    """RSS (MiB) idle, after 10 refused 64-Mpx colour uploads and after 10 accepted 12-Mpx ones."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    shapes = {"64mpx": (8000, 8000), "12mpx": (4000, 3000)}
    files = {}
    for name, (w, h) in shapes.items():
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[..., 0] = np.linspace(0, 255, w).astype(np.uint8)[None, :]
        rgb[..., 1] = np.linspace(0, 255, h).astype(np.uint8)[:, None]
        rgb[..., 2] = rgb[..., 0] // 2 + rgb[..., 1] // 2
        files[name] = folder / f"{name}.png"
        Image.fromarray(rgb).save(files[name], compress_level=1)
        del rgb
    row = {"idle_rss_mib": rss_mib(pid)[0]}
    for name, path in files.items():
        refused = 0
        for _ in range(10):
            try:
                client.predict(handle_file(str(path)), api_name="/predict")
            except Exception:  # the decode cap's refusal
                refused += 1
        row[f"after_10x{name}_rss_mib"] = rss_mib(pid)[0]
        row[f"{name}_refused"] = refused
    row["peak_rss_mib"] = rss_mib(pid)[1]
    return row


def scenario(label: str, flags: list[str], args: argparse.Namespace, image: str, work: Path) -> dict:
    """Probe alone, probe under flood, and this server's extra measurement; returns rows and figures."""
    port = free_port()
    proc = start_app(port, work / f"{label}.log", "--no-similar", *flags, GRADIO_TEMP_DIR=str(work / "gradio-tmp"))
    url = f"http://127.0.0.1:{port}"
    result: dict = {"label": label}
    try:
        probe(url, image, 2, 1, 120)  # warm-up: code paths and allocator pools, not counted
        idle = rss_mib(proc.pid)[0]
        alone = probe(url, image, args.probes, args.explains, 120)
        stop, tally = threading.Event(), {"sent": 0, "served": 0, "refused": 0}
        threads = [threading.Thread(target=flood, args=(url, image, args.depth, stop, tally), daemon=True)
                   for _ in range(args.flooders)]
        for thread in threads:
            thread.start()
        time.sleep(10.0)  # the flood fills the queue first
        flooded = probe(url, image, args.probes, args.explains, args.probe_timeout)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        result["rows"] = [summary(f"{label}: alone", alone, None),
                          summary(f"{label}: {args.flooders} flooding", flooded, alone)]
        result["flood"] = {**tally, "rss_idle_mib": idle, "rss_peak_mib": rss_mib(proc.pid)[1]}
        time.sleep(5.0)
        if label == "quota off":
            result["cancel"] = cancel_drop(url, proc.pid, image, 10)
        else:
            result["memory"] = memory(url, proc.pid, work)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    result["exit_code"] = proc.returncode
    return result


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flooders", type=int, default=3)
    parser.add_argument("--depth", type=int, default=40, help="explanations each flooder tries to keep queued")
    parser.add_argument("--probes", type=int, default=10, help="/predict calls of the probe visitor per phase")
    parser.add_argument("--explains", type=int, default=3, help="/explain calls of the probe visitor per phase")
    parser.add_argument("--probe-timeout", type=float, default=240.0, help="seconds before a probe call counts as "
                                                                           "failed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from core.data import data_dir, index_folder

    folder = data_dir()
    if folder is None:
        raise SystemExit("bench.hosting needs the X-ray folder ($CNNLENS_DATA or ../shared/data/chest_xray).")
    image = str(index_folder(folder).paths[0])
    work = Path(tempfile.mkdtemp(prefix="cnnlens-hosting-"))
    results = [scenario("quota on", [], args, image, work),
               scenario("quota off", ["--per-visitor", "0", "--per-host", "0"], args, image, work)]
    if args.json:
        print(json.dumps(results))
        return
    rows = [row for r in results for row in r.pop("rows")]
    print(table(rows, list(rows[0])))
    print(table([{"server": r["label"], **r["flood"], "exit_code": r["exit_code"]} for r in results],
                ["server", "sent", "served", "refused", "rss_idle_mib", "rss_peak_mib", "exit_code"]))
    print(table([results[1]["cancel"]], list(results[1]["cancel"])))
    print(table([results[0]["memory"]], list(results[0]["memory"])))


if __name__ == "__main__":
    main()
