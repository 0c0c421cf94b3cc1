"""Make Gradio cancellation stop the work, not just the response.

Gradio's Stop button (``cancels=``) and a client that disconnects end the event on the server's queue,
but a synchronous function already running in a worker thread keeps going. Explainers call a progress
callback often; the callback built here raises :class:`Cancelled` as soon as the event is no longer live,
so LIME, SHAP or occlusion stop within one batch and free the CPU for the next visitor.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr
from gradio.context import LocalContext


class Cancelled(Exception):
    """The request was cancelled or its client went away."""


def _event_alive() -> Callable[[], bool]:
    """A check bound to the current Gradio event: False once it was cancelled or its client left.

    Reads the queue's bookkeeping (``event_ids_to_events`` and ``Event.alive``), which Gradio has no
    public API for; outside a queued event it always answers True.
    """
    blocks = LocalContext.blocks.get(None)
    event_id = LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    events = getattr(queue, "event_ids_to_events", None)
    if event_id is None or events is None or event_id not in events:
        return lambda: True

    def alive() -> bool:
        event = events.get(event_id)
        return event is not None and getattr(event, "alive", True)

    return alive


def progress_callback(progress: gr.Progress | None, desc: str, start: float = 0.0, span: float = 1.0
                      ) -> Callable[[float], None]:
    """Callback for ``core.explain.explain(progress=...)``: moves the bar over [start, start + span] and
    raises Cancelled when the event is gone."""
    alive = _event_alive()

    def report(fraction: float) -> None:
        if not alive():
            raise Cancelled
        if progress is not None:
            progress(start + span * fraction, desc=desc)

    return report
