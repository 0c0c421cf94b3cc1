"""Make Gradio cancellation stop the work, not just the response.

Gradio's Stop button (``cancels=``) and a client that disconnects end the event on the server's queue,
but a synchronous function already running in a worker thread keeps going. Explainers call a progress
callback often; the callback built here raises :class:`Cancelled` as soon as the event is no longer live,
so LIME, SHAP or occlusion stop within one batch and free the CPU for the next visitor.

The check fails closed: inside a queued event, an event id the queue no longer knows means the request was
cancelled (Gradio drops a cancelled event's id, sometimes before the worker thread reaches its first
callback), never "still running". At shutdown every request counts as cancelled (``begin_shutdown``), so worker
threads stop at their next check instead of being torn down inside torch when the interpreter exits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import gradio as gr
from gradio.context import LocalContext

log = logging.getLogger(__name__)
_warned: list[bool] = []  # the queue's bookkeeping was not found: said once per process, not per request
_stopping = threading.Event()  # the server is shutting down: every request is cancelled


class Cancelled(Exception):
    """The request was cancelled, its client went away or the server is stopping."""


def begin_shutdown() -> None:
    """Cancel every request, running or to come, in this process (the server is stopping)."""
    _stopping.set()


def _event_alive() -> Callable[[], bool]:
    """A check bound to the current Gradio event: False once it was cancelled, its client left or its id is gone.

    Reads the queue's bookkeeping (``event_ids_to_events`` and ``Event.alive``), which Gradio has no public API
    for. Outside a queued event (scripts, tests, the bench) it answers True until shutdown; inside one whose
    queue keeps no such table (a Gradio that changed it) it logs that once and answers the same, since it cannot
    tell.
    """
    event_id = LocalContext.event_id.get(None)
    if event_id is None:
        return lambda: not _stopping.is_set()
    queue = getattr(LocalContext.blocks.get(None), "_queue", None)
    events = getattr(queue, "event_ids_to_events", None)
    if not isinstance(events, dict):
        if not _warned:
            _warned.append(True)
            log.error("Gradio's queue keeps no event table here: cancelled requests run to the end")
        return lambda: not _stopping.is_set()

    def alive() -> bool:
        event = events.get(event_id)  # gone: cancelled (or already finished, when nobody is listening anyway)
        return event is not None and bool(getattr(event, "alive", True)) and not _stopping.is_set()

    return alive


def raise_if_cancelled() -> None:
    """Raise Cancelled when the current Gradio event is no longer live: a cheap check before expensive work."""
    if not _event_alive()():
        raise Cancelled


def progress_callback(progress: gr.Progress | None, desc: str, start: float = 0.0, span: float = 1.0
                      ) -> Callable[[float], None]:
    """Callback for ``core.explain.explain(progress=...)``: moves the bar over [start, start + span] and
    raises Cancelled when the event is gone, already here when it is gone before the work starts."""
    alive = _event_alive()
    if not alive():
        raise Cancelled

    def report(fraction: float) -> None:
        if not alive():
            raise Cancelled
        if progress is not None:
            progress(start + span * fraction, desc=desc)

    return report
