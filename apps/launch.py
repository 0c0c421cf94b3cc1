"""Start the whole suite: Streamlit classroom on :8501 and the Gradio X-ray app on :7860; Ctrl-C stops both.

    python -m apps.launch    (from the repository root, as ``make run`` does)
    cnnlens                  (once installed with ``pip install .``; ``cnnlens-classroom`` starts the classroom alone)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

APPS = Path(__file__).resolve().parent
CLASSROOM = APPS / "streamlit_app.py"  # Streamlit settings: .streamlit/config.toml in the folder it starts from


def child_env(**extra: str) -> dict[str, str]:
    """This environment with analytics off and the folder holding ``apps`` and ``core`` first on PYTHONPATH, so
    the children import them from the same checkout or installed copy as this launcher, whatever their folder."""
    path = os.pathsep.join(p for p in (str(APPS.parent), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
            "PYTHONPATH": path, **extra}


def classroom(argv: list[str] | None = None) -> None:
    """Serve the Streamlit classroom alone, in this process: ``cnnlens-classroom [streamlit run options]``.

    The pages import ``apps`` and ``core`` from wherever this module was imported from, so nothing is added to
    the path; Streamlit's own command line runs the script (as ``streamlit run apps/streamlit_app.py`` would).
    """
    from streamlit.web import cli

    os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    options = sys.argv[1:] if argv is None else argv
    if not any(o.startswith("--server.address") for o in options):  # outside the repo no config says loopback
        options = ["--server.address", "127.0.0.1", *options]
    cli.main(["run", str(CLASSROOM), *options], prog_name="streamlit")


STOP_WAIT = 30.0  # seconds each app gets to cancel its requests and delete visitors' files before it is killed


def _stop(signum: int, frame: object) -> None:
    """SIGTERM or SIGHUP (a closed terminal) stops both apps as Ctrl-C does (the children must not outlive the
    launcher: they hold visitors' uploads until they have cleaned up)."""
    raise KeyboardInterrupt


def stop_children(children: list[subprocess.Popen], wait: float = STOP_WAIT) -> None:
    """Ask every child to stop (SIGTERM: each app cancels its work and deletes what visitors left), wait up to
    ``wait`` seconds for all of them together, then kill the ones still running."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + wait
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> None:
    """Launch both apps as child processes and stop them together."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    parser.add_argument("--streamlit-port", type=int, default=8501)
    parser.add_argument("--gradio-port", type=int, default=7860)
    args = parser.parse_args()
    env = child_env(CNNLENS_XRAY_URL=f"http://{args.host}:{args.gradio_port}")
    commands = [
        [sys.executable, "-m", "streamlit", "run", str(CLASSROOM),
         "--server.address", args.host, "--server.port", str(args.streamlit_port)],
        [sys.executable, "-m", "apps.xray_app", "--host", args.host, "--port", str(args.gradio_port)],
    ]
    children = [subprocess.Popen(cmd, env=env, cwd=APPS.parent) for cmd in commands]  # where .streamlit/ lies
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _stop)
    print(f"\n  CNN Lens classroom:  http://{args.host}:{args.streamlit_port}\n"
          f"  Explain my X-ray:    http://{args.host}:{args.gradio_port}\n"
          "  For education and research only, not for diagnosis. Ctrl-C stops both.\n", flush=True)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(number, signal.SIG_IGN)  # a second Ctrl-C must not leave the children running
        stop_children(children)
    sys.exit(max((child.returncode or 0) for child in children))


if __name__ == "__main__":
    main()
