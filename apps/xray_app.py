"""Explain my X-ray: a Gradio app to upload a chest X-ray, see the prediction, explain it and judge the maps.

    python -m apps.xray_app --port 7860 [--host 127.0.0.1] [--share]    (from the repository root)
    cnnlens-xray --port 7860 ...                                        (once installed with ``pip install .``)

For education and research only, not for diagnosis. Binds to this machine only unless ``--host`` is given;
no share link unless ``--share``; nothing is sent anywhere (Gradio analytics off). The page and the
``/predict`` and ``/explain`` API endpoints are built in ``apps/xray/``.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: nothing phones home

if TYPE_CHECKING:
    import gradio as gr

    from apps.xray.limits import WorkSlots
    from apps.xray.uploads import UploadJanitor

STARTED = time.perf_counter()
log = logging.getLogger("xray_app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    cpus = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link")
    parser.add_argument("--fast-concurrency", type=int, default=cpus,
                        help="predictions, Grad-CAM on upload and redraws computed at once (default: CPU cores)")
    parser.add_argument("--heavy-concurrency", type=int, default=max(1, cpus // 2),
                        help="explanations, trust checks and reports computed at once (default: half the cores)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="threads per request for torch (default 1: requests run side by side instead)")
    parser.add_argument("--max-queue", type=int, default=64, help="requests waiting before new ones are refused")
    parser.add_argument("--per-visitor", type=int, default=6,
                        help="requests one visitor (browser session) may have waiting or running; 0: no limit")
    parser.add_argument("--per-host", type=int, default=None,
                        help="requests one client address may have waiting or running (default: half of --max-queue; "
                             "0: no limit)")
    parser.add_argument("--work-budget", type=float, default=250.0,
                        help="largest explanation one request may ask for, in megapixel-passes (passes through the "
                             "model x its input pixels, trust checks included; default 250, about 2 minutes of one "
                             "core for the bundled model)")
    parser.add_argument("--stop-wait", type=float, default=10.0,
                        help="seconds a shutdown waits for running requests to stop before deleting files")
    parser.add_argument("--no-similar", action="store_true", help="skip the similar-cases index")
    parser.add_argument("--max-upload-mb", type=int, default=256, help="largest accepted upload (default 256 MB)")
    parser.add_argument("--upload-grace", type=float, default=60.0,
                        help="seconds after its last use before an uploaded file is deleted")
    args = parser.parse_args(argv)
    if args.per_host is None:
        args.per_host = max(1, args.max_queue // 2)  # one address can never fill the queue
    for name in ("per_visitor", "per_host", "max_queue"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    if args.work_budget <= 0:
        parser.error("--work-budget must be positive")
    return args


def _stop(signum: int, frame: object) -> None:
    """SIGTERM (systemd, ``docker stop``) stops the app as Ctrl-C does, so the clean-up registered with atexit runs;
    running requests are cancelled at once so they wind down while the server closes."""
    from apps.xray.cancel import begin_shutdown

    _ignore_signals()  # a second signal (Ctrl-C reaches the launcher and its children) must not cut the clean-up
    begin_shutdown()
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_IGN)


def shutdown(slots: WorkSlots, janitor: UploadJanitor, demo: gr.Blocks, wait: float) -> None:
    """On the way out: cancel every request and wait (``wait`` s at most) until their threads have stopped (a
    thread torn down inside torch aborts the process), then delete everything derived from visitors' images:
    uploads still in their grace period, reports, the maps and files Gradio served, and the emptied folders.
    Nothing about the files is logged (their names may name patients): only counts."""
    from gradio.route_utils import delete_files_created_by_app

    from apps.xray.cancel import begin_shutdown
    from apps.xray.report import delete_reports

    _ignore_signals()
    begin_shutdown()
    if not slots.wait_idle(wait):
        log.warning("%d requests were still running %.0f s after the shutdown began", len(slots.running()), wait)
    deleted = janitor.flush()
    delete_reports()
    # Gradio deletes the maps it served when its server shuts down, but not while a visitor's open tab holds a
    # connection (it gives up after 5 s and the process ends), so they are deleted here too.
    delete_files_created_by_app(demo, None)
    janitor.tidy()
    log.info("stopped; %d uploads in their grace period deleted", deleted)


def main(argv: list[str] | None = None) -> None:
    """Load the models and index once, build the page and serve it."""
    args = parse_args(argv)
    from apps.xray.limits import cap_malloc_arenas

    cap_malloc_arenas()  # first, before torch and the server start threads
    import torch

    # One thread per request: on a shared CPU a multi-threaded forward waits for descheduled OpenMP threads
    # (measured 4x slower under load), while single-threaded requests side by side keep every core busy.
    torch.set_num_threads(args.torch_threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes, one line each
    from apps.xray.examples import pick_examples
    from apps.xray.limits import Limits, VisitorQuota, WorkSlots
    from apps.xray.models import get_model, zoo_status
    from apps.xray.similar import SimilarCases
    from apps.xray.ui import CSS, XrayUI
    from apps.xray.uploads import UploadJanitor
    from core.zoo import BUNDLED

    zoo = zoo_status()
    for name, reason in zoo.unavailable.items():
        log.warning("model %s unavailable: %s", name, reason)
    if not zoo.available:
        sys.exit("No model can be loaded here: " + " ".join(f"{n}: {r}" for n, r in zoo.unavailable.items()))
    for name in zoo.available[:1]:
        get_model(name)  # load the default model now, not on the first visitor's request
    similar = None if args.no_similar or BUNDLED not in zoo.available else SimilarCases(BUNDLED)
    if similar is not None:
        similar.start()
    janitor = UploadJanitor(grace=args.upload_grace)
    janitor.start()
    limits = Limits(args.fast_concurrency, args.heavy_concurrency, args.per_visitor, args.per_host, args.work_budget)
    demo = XrayUI(zoo, janitor, similar, pick_examples(), limits).build()
    janitor.bind(demo)  # deletes only what visitors uploaded through it, never an example or a map it served
    demo.queue(default_concurrency_limit=1, max_size=args.max_queue)
    slots = WorkSlots.for_limits(limits)
    slots.install(demo)  # a cancelled request's slot is free only once its thread has stopped
    VisitorQuota(args.per_visitor, args.per_host, slots).install(demo)
    atexit.register(shutdown, slots, janitor, demo, args.stop_wait)
    signal.signal(signal.SIGTERM, _stop)
    log.info("ready to serve after %.1f s", time.perf_counter() - STARTED)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=False,
                max_file_size=f"{args.max_upload_mb}mb",
                css=CSS, footer_links=["api"], run_history=False,  # run history would keep X-rays in the browser
                enable_monitoring=False, mcp_server=False, pwa=False, ssr_mode=False)

    # launch returns once Ctrl-C or SIGTERM has closed the server: clean up now and end the process
    atexit.unregister(shutdown)  # registered only for an exit by an error
    shutdown(slots, janitor, demo, args.stop_wait)
    _exit_now()


def _exit_now() -> None:
    """End the process once the clean-up is done, without the interpreter's teardown: with torch loaded and
    Gradio's worker threads parked, that teardown aborted the process ("terminate called without an active
    exception", exit status -6) after cancelled explanations, and there is nothing left for it to do."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    if importlib.util.find_spec("apps") is None:  # `python apps/xray_app.py` from a checkout that is not installed
        sys.exit("Cannot import the apps package: run `python -m apps.xray_app` from the repository root, set "
                 "PYTHONPATH to it, or install CNN Lens (`pip install .`) and run `cnnlens-xray`.")
    main()
