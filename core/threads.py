"""Torch's intra-op thread count for small work on shared cores."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for a moment (process-wide, restored after). Small batches gain nothing
    from a second thread, and with other work on the cores two spinning threads cost far more: measured here,
    the digits CNN trained in 2.7 s on one thread against 77 s on two under load, and the transfer lesson's
    48 px training took 7 CPU-seconds against 125."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
