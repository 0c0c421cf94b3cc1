"""Where a map puts its evidence: shares of positive relevance in a central thorax box, the border band and the
corners, and a small fixed-size copy of the map for clustering and browsing.

The thorax box is a fixed central rectangle, not a lung segmentation: it assumes a roughly centred, upright
PA/AP film. Rotated, off-centre or tightly cropped films, paediatric films with much air around the child and
lateral views put lung outside it or non-lung inside it, so ``outside_thorax`` is a screening score for
"evidence far from where the lungs usually are" (markers, text, collimation edges), never a measurement of lung
anatomy. Classic lung segmentation (thresholding plus morphology) fails on exactly the films that matter here
(low contrast, devices, consolidation), which is why a box with stated limits is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MAP_SIDE = 16  # stored maps are MAP_SIDE x MAP_SIDE: 256 numbers an image and method, enough to see a corner marker
THORAX_BOX = (0.15, 0.85, 0.10, 0.90)  # (left, right, top, bottom) as fractions of the image side
BORDER = 0.10  # the border band: this fraction of the side along every edge
CORNER = 0.20  # each corner square's side, as a fraction of the image side


@dataclass(frozen=True)
class MapSummary:
    """Shares (0-1) of one map's positive relevance by region; NaN for a map with no positive relevance."""

    thorax: float
    outside_thorax: float
    border: float
    corner: float
    edges: float  # border band and corner squares together: where burnt-in markers and text sit


SUMMARY_FIELDS = ("thorax", "outside_thorax", "border", "corner", "edges")


def positive_share(heatmap: np.ndarray) -> np.ndarray:
    """A map's positive part as shares summing to 1 (all zeros when nothing is positive): for unsigned maps the
    relevance itself, for signed ones the evidence for the explained class."""
    h = np.clip(np.nan_to_num(heatmap.astype(np.float64)), 0, None)
    total = h.sum()
    return h / total if total > 0 else h


def region_masks(height: int, width: int) -> dict[str, np.ndarray]:
    """Boolean masks of the thorax box, the border band and the four corner squares for an image size."""
    ys = (np.arange(height) + 0.5) / height
    xs = (np.arange(width) + 0.5) / width
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    left, right, top, bottom = THORAX_BOX
    thorax = (xx >= left) & (xx < right) & (yy >= top) & (yy < bottom)
    border = (xx < BORDER) | (xx >= 1 - BORDER) | (yy < BORDER) | (yy >= 1 - BORDER)
    near_x = (xx < CORNER) | (xx >= 1 - CORNER)
    near_y = (yy < CORNER) | (yy >= 1 - CORNER)
    return {"thorax": thorax, "border": border, "corner": near_x & near_y}


def summarise(heatmap: np.ndarray) -> MapSummary:
    """Shares of a map's positive relevance inside the thorax box, outside it, in the border band and corners."""
    share = positive_share(heatmap)
    if share.sum() == 0:
        return MapSummary(*([float("nan")] * len(SUMMARY_FIELDS)))
    masks = region_masks(*share.shape)
    thorax = float(share[masks["thorax"]].sum())
    edges = masks["border"] | masks["corner"]
    return MapSummary(thorax, 1.0 - thorax, float(share[masks["border"]].sum()), float(share[masks["corner"]].sum()),
                      float(share[edges].sum()))


def downsample(heatmaps: np.ndarray, side: int = MAP_SIDE) -> np.ndarray:
    """N x H x W maps -> N x side x side by area averaging (torch's adaptive average pooling), float32."""
    x = torch.from_numpy(np.ascontiguousarray(heatmaps, dtype=np.float32))[:, None]
    return F.adaptive_avg_pool2d(x, side)[:, 0].numpy()
