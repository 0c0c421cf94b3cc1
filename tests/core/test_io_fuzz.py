"""Fuzzing core.io.load_image: random and mutated PNG/JPEG/TIFF/BMP/DICOM bytes.

Every input must either load to a finite array in [0, 1] or raise ImageError; nothing else may escape,
and memory stays bounded (hangs are caught by pytest-timeout).
"""

from __future__ import annotations

import resource

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.io import ImageError, load_image
from tests.core.corpus import GRAY, dicom_bytes, pil_bytes

SEEDS = [
    pil_bytes(Image.fromarray(GRAY), "PNG"),
    pil_bytes(Image.fromarray(GRAY.astype(np.uint16) * 257), "PNG"),
    pil_bytes(Image.fromarray(GRAY).convert("RGBA"), "PNG"),
    pil_bytes(Image.fromarray(GRAY), "JPEG"),
    pil_bytes(Image.fromarray(GRAY), "TIFF"),
    pil_bytes(Image.fromarray(GRAY), "BMP"),
    dicom_bytes(GRAY.astype(np.uint16) * 16),
    dicom_bytes((GRAY.astype(np.uint16) * 16), "MONOCHROME1", WindowCenter=2048, WindowWidth=4096),
]
EXAMPLES = 10_000


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed file with random byte flips, a truncation, an insertion or a header overwrite."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite_header"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        else:
            window = min(pos, 200)
            data[window:window + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


def _check(data: bytes) -> None:
    try:
        img = load_image(data)
    except ImageError as err:
        assert str(err)
        return
    assert img.array.dtype == np.float32
    assert np.isfinite(img.array).all()
    assert img.array.min() >= 0.0 and img.array.max() <= 1.0


def test_fuzz_load_image_only_raises_image_error():
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(mutated(), st.binary(max_size=2048)))
    def run(data: bytes) -> None:
        _check(data)

    run()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 1024, f"peak memory grew by {grown_mib:.0f} MiB while fuzzing"
