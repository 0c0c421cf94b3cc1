"""Cancellation fails closed: a Gradio event whose id the queue no longer knows counts as cancelled, and a cancelled
explanation stops within a second and then uses no CPU. Gradio's request context is faked with its own context
variables (``LocalContext``) and a stand-in queue, so no server runs."""

from __future__ import annotations

import contextvars
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from apps.xray.cancel import Cancelled, progress_callback, raise_if_cancelled
from core.explain import explain
from tests.explain.nets import TinyGapNet


def _in_event(events: dict, event_id: str = "e1") -> contextvars.Context:
    """A context as Gradio's worker thread sees it: the Blocks (with its queue's event table) and the event id."""
    from gradio.context import LocalContext

    ctx = contextvars.copy_context()
    blocks = SimpleNamespace(_queue=SimpleNamespace(event_ids_to_events=events))
    ctx.run(LocalContext.blocks.set, blocks)
    ctx.run(LocalContext.event_id.set, event_id)
    return ctx


def test_gradio_still_keeps_the_event_table_the_check_reads():
    from gradio.queueing import Queue

    queue = Queue(live_updates=False, concurrency_count=1, update_intervals=1, max_size=None, blocks=None)
    assert isinstance(queue.event_ids_to_events, dict)


def test_outside_an_event_the_work_is_never_cancelled():
    report = progress_callback(None, "plain call")
    report(0.5)
    raise_if_cancelled()


def test_an_event_already_gone_is_cancelled_before_any_work():
    ctx = _in_event({})  # Gradio dropped the id: the client cancelled before the worker built its callback
    with pytest.raises(Cancelled):
        ctx.run(progress_callback, None, "lime")
    with pytest.raises(Cancelled):
        ctx.run(raise_if_cancelled)


def test_a_disconnected_client_cancels():
    event = SimpleNamespace(alive=True)
    events = {"e1": event}
    ctx = _in_event(events)
    report = ctx.run(progress_callback, None, "lime")
    report(0.1)
    event.alive = False  # Gradio's clean_events on a disconnect
    with pytest.raises(Cancelled):
        report(0.2)


def test_a_cancelled_explanation_stops_within_a_second_and_then_uses_no_cpu():
    events = {"e1": SimpleNamespace(alive=True)}
    ctx = _in_event(events)
    net = TinyGapNet(channels=1).eval()
    x = torch.rand(1, 1, 96, 96)
    calls: list[float] = []
    outcome: list[BaseException | None] = []

    def work() -> None:
        report = progress_callback(None, "occlusion")

        def counted(fraction: float) -> None:
            calls.append(fraction)
            report(fraction)

        try:  # patch 2, stride 1: thousands of forwards, far longer than this test waits
            explain(net, x, "occlusion", 0, patch=2, stride=1, progress=counted, batch_size=16)
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    torch.set_num_threads(1)
    thread = threading.Thread(target=ctx.run, args=(work,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 3 and thread.is_alive(), "the explanation should still be running"
    events.pop("e1")  # what Gradio's /cancel does once the event's task is cancelled
    cancelled_at = time.monotonic()
    thread.join(timeout=5)
    stopped_after = time.monotonic() - cancelled_at
    assert not thread.is_alive() and stopped_after < 1.0, f"still running {stopped_after:.2f} s after the cancel"
    assert isinstance(outcome[0], Cancelled)
    cpu = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu < 0.2  # nothing left spinning
    assert calls[-1] < 0.9  # it stopped early, not at the end
