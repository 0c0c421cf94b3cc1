"""Hosting limits on a real Gradio server in this process (no model): a cancelled request's worker slot is free only
once its thread has stopped, a request waiting for a slot gives up when cancelled, and one visitor (or one address)
cannot fill the queue. The handler is a loop that looks at nothing for a few seconds, like an explainer between
two progress reports, and records when it starts and ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import gradio as gr
import httpx
import pytest

from apps.xray.limits import Job, VisitorQuota, WorkSlots
from tests.conftest import free_port

RUN_SECONDS = 3.0


@dataclass
class Served:
    """A running Blocks, its URL and what its handler recorded: (input, "start" or "end", monotonic time)."""

    demo: gr.Blocks
    url: str
    log: list[tuple[str, str, float]] = field(default_factory=list)

    def times(self, name: str, what: str) -> list[float]:
        return [t for n, w, t in self.log if (n, w) == (name, what)]

    def wait_started(self, name: str) -> None:
        deadline = time.monotonic() + 30
        while not self.times(name, "start") and time.monotonic() < deadline:
            time.sleep(0.05)

    def join(self, session: str, text: str) -> httpx.Response:
        """Join the queue as a browser does (no listener afterwards: the request just waits or runs)."""
        config = httpx.get(f"{self.url}/config", timeout=30).json()
        (fn_index,) = [d["id"] for d in config["dependencies"] if d.get("api_name") == "slow"]
        return httpx.post(f"{self.url}/gradio_api/queue/join", timeout=30,
                          json={"data": [text], "fn_index": fn_index, "session_hash": session, "event_data": None,
                                "trigger_id": None})


def serve(slots: bool, quota: tuple[int, int] | None = None) -> Served:
    """A Blocks with one heavy endpoint ``/slow`` (one at a time), with or without the app's slots and quota."""
    log: list[tuple[str, str, float]] = []

    def slow(text: str) -> str:
        log.append((text, "start", time.monotonic()))
        end = time.monotonic() + RUN_SECONDS
        while time.monotonic() < end:  # no cancellation check in here
            time.sleep(0.02)
        log.append((text, "end", time.monotonic()))
        return text

    with gr.Blocks(analytics_enabled=False) as demo:
        box, out = gr.Textbox(), gr.Textbox()
        box.submit(slow, box, out, api_name="slow", concurrency_id="heavy", concurrency_limit=1)
    demo.queue(max_size=64)
    work = WorkSlots({"heavy": 1}) if slots else None
    if work is not None:
        assert work.install(demo) == 1
    if quota is not None:
        VisitorQuota(*quota, work).install(demo)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return Served(demo, f"http://127.0.0.1:{port}", log)


@pytest.fixture
def served_with_slots() -> Iterator[Served]:
    served = serve(slots=True)
    yield served
    served.demo.close()


def _cancel_first_while_second_waits(served: Served) -> None:
    from gradio_client import Client

    client = Client(served.url, verbose=False)
    first = client.submit("one", api_name="/slow")
    served.wait_started("one")
    second = client.submit("two", api_name="/slow")
    time.sleep(0.5)  # queued behind the first
    first.cancel()
    second.result(timeout=30)


def test_gradio_alone_starts_the_next_request_beside_a_cancelled_one_still_running():
    """The premise: without the slots, Gradio frees a cancelled event's place at once (two threads run)."""
    served = serve(slots=False)
    try:
        _cancel_first_while_second_waits(served)
        assert served.times("two", "start")[0] < served.times("one", "end")[0]
    finally:
        served.demo.close()


def test_a_cancelled_requests_slot_is_free_only_once_its_thread_has_stopped(served_with_slots):
    served = served_with_slots
    _cancel_first_while_second_waits(served)
    (one_end,), (two_start,) = served.times("one", "end"), served.times("two", "start")
    assert two_start >= one_end, f"the second request started {one_end - two_start:.2f} s before the first stopped"


def test_a_request_waiting_for_a_slot_gives_up_when_cancelled(served_with_slots):
    from gradio_client import Client

    served = served_with_slots
    client = Client(served.url, verbose=False)
    first = client.submit("one", api_name="/slow")
    served.wait_started("one")
    third = client.submit("three", api_name="/slow")
    time.sleep(0.5)
    first.cancel()  # now "three" runs in Gradio's eyes, waiting for the slot "one" still holds
    time.sleep(0.3)
    fourth = client.submit("four", api_name="/slow")
    time.sleep(0.3)
    third.cancel()  # cancelled while waiting for the slot
    fourth.result(timeout=30)
    assert not served.times("three", "start")
    assert served.times("four", "start")[0] >= served.times("one", "end")[0]


def test_one_visitor_cannot_fill_the_queue_and_another_still_gets_in():
    served = serve(slots=True, quota=(3, 0))
    try:
        answers = [served.join("visitor-a", f"a{i}") for i in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 400, 400]
        assert "You already have 3 requests waiting or running (at most 3 per visitor" in answers[3].json()["detail"]
        assert served.join("visitor-b", "b0").status_code == 200
    finally:
        served.demo.close()


def test_one_address_cannot_fill_the_queue_with_new_sessions():
    served = serve(slots=True, quota=(0, 4))
    try:
        answers = [served.join(f"forged-{i}", f"f{i}") for i in range(6)]
        assert [a.status_code for a in answers] == [200] * 4 + [400] * 2
        assert "Your network address already has 4 requests" in answers[4].json()["detail"]
    finally:
        served.demo.close()


def test_work_still_stopping_after_a_cancel_counts_against_its_visitor():
    """A thread whose event Gradio has forgotten (cancelled) still counts until it stops; one whose event Gradio
    still runs is counted once, from Gradio's own tables."""
    slots = WorkSlots({"heavy": 2})
    queue = SimpleNamespace(event_queue_per_concurrency_id={"heavy": SimpleNamespace(queue=[])},
                            active_jobs=[None], event_ids_to_events={})
    running = SimpleNamespace(session_hash="s1", request=SimpleNamespace(client=SimpleNamespace(host="10.0.0.1")))
    queue.active_jobs = [[running], None]
    queue.event_ids_to_events["live"] = running
    quota = VisitorQuota(2, 0, slots)
    assert quota.counts(queue, "s1", "10.0.0.1") == (1, 1)
    slots._jobs[threading.get_ident()] = Job("heavy", "s1", "10.0.0.1", "live", time.monotonic())  # same event
    assert quota.counts(queue, "s1", "10.0.0.1") == (1, 1)
    slots._jobs[-1] = Job("heavy", "s1", "10.0.0.1", "cancelled", time.monotonic())  # Gradio forgot this one
    assert quota.counts(queue, "s1", "10.0.0.1") == (2, 2)
    assert "You already have 2 requests" in quota.refusal(queue, "s1", "10.0.0.1")
    assert quota.refusal(queue, "s2", "10.0.0.2") is None
