"""How smooth a convolution's filters are: the correlation of neighbouring weights (Moran's I).

Filters learned from many natural images turn into smooth edge and blob detectors; random initial filters are
noise. Moran's I with rook (4-neighbour) adjacency measures which a filter is: about 0 for independent noise,
towards 1 when neighbouring weights move together, negative for a checkerboard. Written by hand: it is two
shifted products (PySAL's esda has it, but as a dependency for one line it would be out of all proportion).
"""

from __future__ import annotations

import numpy as np


def morans_i(weights: np.ndarray) -> np.ndarray:
    """Moran's I of each filter of a K x C x h x w weight array (neighbours: left/right and up/down within one
    input channel; each filter centred on its own mean). Filters with no variation get NaN."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[-1] < 2 or w.shape[-2] < 2:
        raise ValueError(f"Expected K x C x h x w filters at least 2 x 2 wide, got shape {w.shape}.")
    z = w - w.mean(axis=(1, 2, 3), keepdims=True)
    across = (z[..., 1:, :] * z[..., :-1, :]).sum(axis=(1, 2, 3)) + (z[..., 1:] * z[..., :-1]).sum(axis=(1, 2, 3))
    pairs = z[0, ..., 1:, :].size + z[0, ..., 1:].size
    spread = (z ** 2).mean(axis=(1, 2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread > 0, (across / pairs) / spread, np.nan)
