"""Stopping and configuring the hosted apps: the launcher gives each child its SIGTERM clean-up and kills only the
ones that ignore it; the X-ray app's hosting flags have sane defaults and refuse nonsense."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from apps.launch import stop_children
from apps.xray_app import parse_args

CLEANS_UP = """
import pathlib, signal, sys, time
def stop(*_):
    time.sleep(0.5)  # deleting visitors' files
    pathlib.Path(sys.argv[1]).write_text("cleaned")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(600)
"""
IGNORES = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(600)
"""


def _child(code: str, *args: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"  # its handler is installed
    return child


def test_children_get_their_clean_up_and_a_stuck_one_is_killed(tmp_path):
    marker = tmp_path / "cleaned"
    polite, stuck = _child(CLEANS_UP, str(marker)), _child(IGNORES)
    stop_children([polite, stuck], wait=5)
    assert polite.returncode == 0 and marker.read_text() == "cleaned"
    assert stuck.returncode == -signal.SIGKILL


def test_hosting_flags_default_to_a_quota_that_no_address_can_fill_the_queue_with():
    args = parse_args([])
    assert args.per_visitor > 0 and 0 < args.per_host < args.max_queue
    assert parse_args(["--max-queue", "10"]).per_host == 5
    assert parse_args(["--per-host", "0"]).per_host == 0  # off, e.g. behind a proxy that hides addresses


@pytest.mark.parametrize("flags", [["--per-visitor", "-1"], ["--per-host", "-2"], ["--work-budget", "0"]])
def test_nonsense_hosting_flags_are_refused(flags, capsys):
    with pytest.raises(SystemExit):
        parse_args(flags)
    assert "must be" in capsys.readouterr().err
