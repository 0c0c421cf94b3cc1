"""How much the X-ray app does at once and for whom: concurrency groups, worker slots held until the work has
really stopped, a per-visitor quota on the queue, a work budget per request, and the allocator's per-thread pools.

Gradio bounds how many events of a group run at once, but it frees an event's place the moment the event is
cancelled, while a synchronous handler keeps running in its thread until it notices; and its queue has one size
for everybody. The pieces here close those gaps without touching the handlers: ``WorkSlots`` and ``VisitorQuota``
wrap the built Blocks' functions and its queue's ``push``.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apps.xray.analysis import CURVE_STEPS, REFERENCE_SEEDS, SANITY_COPIES
from apps.xray.cancel import raise_if_cancelled
from core.explain.base import METHODS, resolve_params
from core.explain.occlusion import starts

GROUPS = ("fast", "heavy")
# Cost model of one request, in passes of one image through the model: a pass with gradients counts as three
# (forward, backward through the same layers, and the hooks' extra copies: measured 3.5x a forward on the bundled
# model). The methods not listed take one such pass; Score-CAM takes up to ``max_channels`` forwards.
GRADIENT_PASS = 3
PER_SAMPLE = {"smoothgrad": ("n_samples", GRADIENT_PASS), "gradient_shap": ("n_samples", GRADIENT_PASS),
              "integrated_gradients": ("steps", GRADIENT_PASS), "meaningful_perturbation": ("steps", GRADIENT_PASS),
              "lime": ("n_samples", 1), "kernel_shap": ("n_samples", 1), "score_cam": ("max_channels", 1)}
# The trust checks re-run the method on each randomised copy (SANITY_COPIES) and trace deletion and insertion
# curves for the map and the random reference maps: this many passes besides.
TRUST_CURVE_PASSES = 2 * CURVE_STEPS * (1 + len(REFERENCE_SEEDS))


@dataclass(frozen=True)
class Limits:
    """What the server accepts: ``fast`` (predict, Grad-CAM on upload, redraws) and ``heavy`` (explanations, trust
    checks, stability, reports) requests computed at once, requests one visitor (browser session) and one client
    address may have waiting or running (0: no limit), and the work one request may ask for, in megapixel-passes
    (passes through the model x input pixels, see ``passes``)."""

    fast_limit: int
    heavy_limit: int
    per_visitor: int = 6
    per_host: int = 32
    budget_mpx: float = 250.0

    def fast(self) -> dict[str, Any]:
        """Event keyword arguments for the fast group."""
        return {"concurrency_id": "fast", "concurrency_limit": self.fast_limit}

    def heavy(self) -> dict[str, Any]:
        """Event keyword arguments for the heavy group."""
        return {"concurrency_id": "heavy", "concurrency_limit": self.heavy_limit}

    def check_work(self, method: str, overrides: dict[str, Any], size: tuple[int, int], quality: bool = True,
                   copies: int = 1) -> int:
        """Refuse, before any work, an explanation that would cost more than the budget: ValueError that says
        what it would cost and which setting fits. Returns its cost in passes. ``overrides`` are checked by the
        method's own parameter rules first, so an out-of-range value gets that message instead. ``copies``: test-time
        augmentation runs the method on that many copies of the image."""
        params = resolve_params(METHODS[method], overrides)
        cost = passes(method, params, size, quality, copies)
        if self._fits(cost, size):
            return cost
        checks = f" with the trust checks (the method again on {SANITY_COPIES} randomised copies)" if quality else ""
        tta = f" on {copies} augmented copies" if copies > 1 else ""
        text = (f"{METHODS[method].label} with these settings{tta} needs about {cost:,} passes through the model at "
                f"{size[0]}x{size[1]} px{checks}: {cost * size[0] * size[1] / 1e6:,.0f} megapixel-passes, more "
                f"than the {self.budget_mpx:,.0f} this server allows per request.")
        hint = self._what_fits(method, params, size, quality, copies)
        if hint is None and quality and self._fits(passes(method, params, size, False, copies), size):
            hint = 'It fits without the trust checks (through the API: "quality": false).'
        raise ValueError(f"{text} {hint or 'Choose cheaper settings.'}")

    def _fits(self, cost: int, size: tuple[int, int]) -> bool:
        return cost * size[0] * size[1] <= self.budget_mpx * 1e6

    def _what_fits(self, method: str, params: dict[str, Any], size: tuple[int, int], quality: bool,
                   copies: int = 1) -> str | None:
        """The nearest value of the method's cost-driving setting that fits the budget, said in words."""
        knob = cost_knob(method)
        best = None if knob is None else self.fitting_value(method, params, size, quality, copies)
        if best is None:
            return None
        return f"{knob} {'of at least' if knob == 'stride' else 'up to'} {best:,} fits."

    def fitting_value(self, method: str, params: dict[str, Any], size: tuple[int, int], quality: bool = True,
                      copies: int = 1) -> int | None:
        """The most generous value of the method's cost-driving setting (``cost_knob``: the smallest stride, the
        most samples) that fits the budget with the other settings in ``params``; None when none does or the
        method has no such setting."""
        knob = cost_knob(method)
        if knob is None:
            return None
        spec = next(p for p in METHODS[method].params if p.name == knob)
        values = range(int(spec.low), int(spec.high) + 1)
        fits = [v for v in values if self._fits(passes(method, {**params, knob: v}, size, quality, copies), size)]
        if not fits:
            return None
        return min(fits) if knob == "stride" else max(fits)

    def slider_bounds(self, size: tuple[int, int]) -> dict[tuple[str, str], tuple[float, float]]:
        """(method, setting) -> (low, high) for the app's sliders: each cost-driving setting narrowed to what fits
        the budget at the default settings with the trust checks, so a visitor cannot pick a refused value.
        Settings the budget does not narrow are left out."""
        bounds = {}
        for method, info in METHODS.items():
            knob = cost_knob(method)
            if knob is None:
                continue
            spec = next(p for p in info.params if p.name == knob)
            best = self.fitting_value(method, info.defaults(), size)
            if best is not None and best != (spec.low if knob == "stride" else spec.high):
                bounds[(method, knob)] = (best, spec.high) if knob == "stride" else (spec.low, best)
        return bounds


def cost_knob(method: str) -> str | None:
    """The setting that drives a method's cost (samples, steps, channels; occlusion's stride), None for fixed cost."""
    return "stride" if method == "occlusion" else PER_SAMPLE.get(method, (None,))[0]


def passes(method: str, params: dict[str, Any], size: tuple[int, int], quality: bool = True, copies: int = 1) -> int:
    """Passes of one image through the model that an explanation costs (an upper bound: gradients count as three
    passes) on ``copies`` test-time-augmented copies, plus the trust checks' repeats when ``quality`` (they rerun
    the method once per randomised copy, without augmentation). ``params`` are the method's resolved parameters;
    ``size`` the model's input (height, width). Occlusion's windows are counted exactly as it places them."""
    if method == "occlusion":
        cost = 1 + len(starts(size[0], params["patch"], params["stride"])) * len(
            starts(size[1], params["patch"], params["stride"]))
    elif method in PER_SAMPLE:
        name, weight = PER_SAMPLE[method]
        cost = 2 + weight * int(params[name])  # and the clean image: the prediction and the score
    else:
        cost = GRADIENT_PASS
    return cost * (copies + SANITY_COPIES) + TRUST_CURVE_PASSES if quality else cost * copies


# ---------------------------------------------------------------- worker slots


@dataclass
class Job:
    """A handler running in a worker thread: its group, browser session, client address and Gradio event."""

    group: str
    session: str
    host: str
    event_id: str | None
    since: float


def _current_job(group: str) -> Job:
    """The Gradio event this thread serves (empty names outside a request)."""
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    return Job(group, getattr(request, "session_hash", None) or "", _host(request), LocalContext.event_id.get(None),
               time.monotonic())


class WorkSlots:
    """At most ``limit`` handlers of each group run at once, counted by the threads themselves: a slot is taken
    when the handler starts and given back when it returns, not when Gradio forgets a cancelled event (it frees
    its own place at once, and would start the next event beside a thread that has not yet noticed). A handler
    that finds no free slot waits, and gives up as soon as its own event is cancelled."""

    def __init__(self, limits: dict[str, int], poll: float = 0.1) -> None:
        self._free = {group: threading.BoundedSemaphore(n) for group, n in limits.items()}
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._poll = poll

    @classmethod
    def for_limits(cls, limits: Limits) -> WorkSlots:
        """Slots for the app's two groups."""
        return cls({"fast": limits.fast_limit, "heavy": limits.heavy_limit})

    def hold(self, fn: Callable[..., Any], group: str) -> Callable[..., Any]:
        """``fn`` run inside one of ``group``'s slots (same signature, so Gradio sees the same parameters)."""
        free = self._free[group]

        @functools.wraps(fn)
        def held(*args: Any, **kwargs: Any) -> Any:
            while not free.acquire(timeout=self._poll):
                raise_if_cancelled()  # cancelled while waiting: never starts
            job = _current_job(group)
            with self._lock:
                self._jobs[threading.get_ident()] = job
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    del self._jobs[threading.get_ident()]
                    self._idle.notify_all()
                free.release()

        return held

    def install(self, blocks: Any) -> int:
        """Wrap every synchronous function of the built Blocks that runs in one of the slots' groups; how many."""
        wrapped = 0
        for block_fn in blocks.fns.values():
            fn, group = block_fn.fn, block_fn.concurrency_id
            if fn is None or group not in self._free or getattr(fn, "__wrapped__", None) is not None:
                continue
            if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
                continue
            block_fn.fn = self.hold(fn, group)
            wrapped += 1
        return wrapped

    def running(self) -> list[Job]:
        """The handlers running now."""
        with self._lock:
            return list(self._jobs.values())

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler runs (at shutdown, after cancelling them); False if some still run at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._jobs:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


# ---------------------------------------------------------------- visitor quota


class VisitorQuota:
    """One visitor cannot fill the queue: a new request is refused while its browser session (Gradio's session
    hash) already has ``per_visitor`` requests waiting or running, or its client address ``per_host`` (0: no
    limit). Running includes handlers still winding down after a cancel (from ``slots``), so cancelling and
    resending does not pile work up. The session hash is chosen by the client, so only the address limit holds
    against a client that forges new sessions; behind a reverse proxy the address is the one in its
    X-Forwarded-For header when the proxy is trusted (uvicorn's ``FORWARDED_ALLOW_IPS``, 127.0.0.1 by default)."""

    def __init__(self, per_visitor: int, per_host: int, slots: WorkSlots | None = None) -> None:
        self.per_visitor, self.per_host, self.slots = per_visitor, per_host, slots

    def counts(self, queue: Any, session: str, host: str) -> tuple[int, int]:
        """(this session's, this address's) requests waiting, running, or still stopping after a cancel."""
        events = [e for q in queue.event_queue_per_concurrency_id.values() for e in q.queue]
        events += [e for jobs in queue.active_jobs if jobs for e in jobs]
        mine = sum(e.session_hash == session for e in events)
        ours = sum(_host(e.request) == host for e in events)
        for job in self.slots.running() if self.slots else []:
            if job.event_id not in queue.event_ids_to_events:  # Gradio forgot it; its thread has not stopped yet
                mine += job.session == session
                ours += job.host == host
        return mine, ours

    def refusal(self, queue: Any, session: str, host: str) -> str | None:
        """Why a new request from this session and address is refused, or None when it may join the queue."""
        mine, ours = self.counts(queue, session, host)
        if self.per_visitor and mine >= self.per_visitor:
            return (f"You already have {_requests(mine)} waiting or running (at most {self.per_visitor} per "
                    "visitor on this server). Wait for one to finish, or press Stop, then try again.")
        if self.per_host and host and ours >= self.per_host:
            return (f"Your network address already has {_requests(ours)} waiting or running (at most "
                    f"{self.per_host} on this server). Try again when some have finished.")
        return None

    def install(self, blocks: Any) -> None:
        """Check every new request against the quota before it joins the built Blocks' queue (its ``push``)."""
        queue = blocks._queue
        push = queue.push

        @functools.wraps(push)
        async def checked(body: Any, request: Any, username: str | None) -> tuple[bool, Any, str]:
            refused = self.refusal(queue, body.session_hash or "", _host(request))
            if refused is not None:
                return False, refused, "error"  # HTTP 400 with this text: the page shows it in its error toast
            return await push(body, request, username)

        queue.push = checked


def _requests(n: int) -> str:
    """'1 request', '3 requests'."""
    return f"{n} request" if n == 1 else f"{n} requests"


def _host(request: Any) -> str:
    """The client address of a Starlette request ("" when unknown)."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or ""


def cap_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (``mallopt(M_ARENA_MAX)``, as the ``MALLOC_ARENA_MAX`` variable does); True if
    applied. glibc gives each thread that contends for the heap an arena of its own and rarely hands their free
    memory back, so with Gradio's worker threads the resident size creeps up for hundreds of requests. Measured
    by ``bench/load.py`` (16 clients x 90 requests, first vs last 100): RSS growth 20 % uncapped, 7.7 % with 2
    arenas and level from the 300th request on, at the same latency. Call before the server starts its threads;
    a no-op off glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-8, arenas))  # -8 is M_ARENA_MAX in glibc's <malloc.h>
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        return False
