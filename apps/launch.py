"""Start the whole suite: Streamlit classroom on :8501 and the Gradio X-ray app on :7860; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Launch both apps as child processes and stop them together."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: this machine only)")
    parser.add_argument("--streamlit-port", type=int, default=8501)
    parser.add_argument("--gradio-port", type=int, default=7860)
    args = parser.parse_args()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "PYTHONPATH": str(ROOT), "CNNLENS_XRAY_URL": f"http://{args.host}:{args.gradio_port}"}
    commands = [
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "apps" / "streamlit_app.py"),
         "--server.address", args.host, "--server.port", str(args.streamlit_port)],
        [sys.executable, str(ROOT / "apps" / "xray_app.py"), "--host", args.host, "--port", str(args.gradio_port)],
    ]
    children = [subprocess.Popen(cmd, cwd=ROOT, env=env) for cmd in commands]
    print(f"\n  CNN Lens classroom:  http://{args.host}:{args.streamlit_port}\n"
          f"  Explain my X-ray:    http://{args.host}:{args.gradio_port}\n"
          "  For education and research only, not for diagnosis. Ctrl-C stops both.\n", flush=True)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    sys.exit(max((child.returncode or 0) for child in children))


if __name__ == "__main__":
    main()
