"""Feature maps, learned filters and per-layer statistics: what each layer of a CNN computes on one image.

Activations are read with ``core.hooks`` (hooks removed before returning, so the model is left exactly as it was;
the layers worth showing are ``core.hooks.spatial_layers``). Display scalings are returned with their offsets and
scales, so the numbers behind every picture can be recovered.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.util import montage
from torch import nn

from core.hooks import capture


@torch.no_grad()
def activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for the batch ``x`` (one forward pass, no gradients, hooks removed afterwards).

    Each is the layer's own output (its first call's): ``core.hooks.capture`` hands the model a copy, so an in-place
    ReLU after a layer cannot overwrite it (torchvision's ResNets apply ``ReLU(inplace=True)`` right after ``bn1``).
    """
    with ExitStack() as stack:
        records = {name: stack.enter_context(capture(model, name)) for name in layers}
        model(x)
    missing = [name for name, record in records.items() if not record.outputs]
    if missing:
        raise ValueError(f"Layer(s) {', '.join(missing)} did not run in the forward pass.")
    return {name: record.outputs[0].detach() for name, record in records.items()}


@dataclass(frozen=True)
class FeatureMaps:
    """One image's activations at one layer, with channels ranked by mean activation."""

    layer: str
    maps: np.ndarray  # C x h x w float32, in channel order
    means: np.ndarray  # C: spatial mean of each channel
    order: np.ndarray  # channel indices, highest mean first

    @property
    def sorted_maps(self) -> np.ndarray:
        """The maps in rank order (``maps[order]``)."""
        return self.maps[self.order]


def feature_maps(model: nn.Module, x: torch.Tensor, layer: str) -> FeatureMaps:
    """Activations of ``layer`` for the first image of ``x`` (1 x C x H x W), ranked by mean activation."""
    out = activations(model, x[:1], [layer])[layer]
    if out.ndim != 4:
        raise ValueError(f"Layer {layer!r} outputs shape {tuple(out.shape)}, not a stack of 2-D maps.")
    maps = out[0].float().cpu().numpy()
    means = maps.mean(axis=(1, 2))
    return FeatureMaps(layer, maps, means, np.argsort(-means, kind="stable"))


@dataclass(frozen=True)
class Mosaic:
    """Images tiled into one picture for display; NaN marks the gaps between tiles."""

    image: np.ndarray  # rows*(h+pad)+pad x cols*(w+pad)+pad (x 3 for colour), values in [0, 1] or NaN
    grid: tuple[int, int]  # rows, cols
    tile: tuple[int, int]  # h, w
    pad: int

    def centre(self, position: int) -> tuple[float, float]:
        """(row, col) pixel coordinates of the centre of tile ``position`` (row-major)."""
        r, c = divmod(position, self.grid[1])
        h, w = self.tile
        return self.pad + r * (h + self.pad) + (h - 1) / 2, self.pad + c * (w + self.pad) + (w - 1) / 2


def tile(images: np.ndarray, pad: int = 1) -> Mosaic:
    """Tile K x h x w (or K x h x w x 3) images in [0, 1] into a near-square grid (scikit-image montage)."""
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    colour = images.ndim == 4
    image = montage(images.astype(np.float64), fill=(np.nan,) * 3 if colour else np.nan, grid_shape=(rows, cols),
                    padding_width=pad, channel_axis=-1 if colour else None)
    return Mosaic(image, (rows, cols), (images.shape[1], images.shape[2]), pad)


def mosaic(maps: np.ndarray, per_channel: bool = True, pad: int = 1) -> Mosaic:
    """Tile K x h x w activation maps after scaling them to [0, 1], each on its own or all together.

    Per-map scaling shows each channel's pattern; shared scaling shows which channels are strongest.
    A constant map (e.g. a dead ReLU channel) becomes 0.
    """
    maps = maps.astype(np.float64)
    axes = (1, 2) if per_channel else (0, 1, 2)
    lo, hi = maps.min(axis=axes, keepdims=True), maps.max(axis=axes, keepdims=True)
    return tile((maps - lo) / np.where(hi > lo, hi - lo, 1.0), pad)


def upsample(map2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one h x w map to ``size`` (H, W), to lay it over the input image."""
    t = torch.from_numpy(np.ascontiguousarray(map2d, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


@dataclass(frozen=True)
class LayerStats:
    """Summary of one layer's output on one input."""

    layer: str
    shape: tuple[int, int, int]  # C, H, W
    mean: float
    std: float
    sparsity: float  # fraction of values that are zero after a ReLU (i.e. <= 0)
    dead_channels: float  # fraction of channels that are zero everywhere after a ReLU


def layer_statistics(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> list[LayerStats]:
    """Shape, mean, spread and post-ReLU sparsity of each layer's output for the first image of ``x``."""
    outs = activations(model, x[:1], layers)
    stats = []
    for name in layers:
        a = outs[name][0].float()
        off = a <= 0
        stats.append(LayerStats(name, tuple(a.shape), float(a.mean()), float(a.std()), float(off.float().mean()),
                                float(off.flatten(1).all(dim=1).float().mean())))
    return stats


def first_conv(model: nn.Module) -> str:
    """Name of the first Conv2d registered in the model (the one that sees the pixels in standard CNNs)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    raise ValueError("The model has no Conv2d layer.")


@dataclass(frozen=True)
class FilterImages:
    """Convolution kernels scaled to [0, 1] per filter; ``weights = images * scale + offset`` undoes it."""

    layer: str
    images: np.ndarray  # K x kh x kw (one input channel) or K x kh x kw x 3 (RGB), float64 in [0, 1]
    offset: np.ndarray  # K
    scale: np.ndarray  # K

    def weights(self) -> np.ndarray:
        """The kernels as K x C x kh x kw, recovered from the images."""
        chw = self.images[:, None] if self.images.ndim == 3 else np.moveaxis(self.images, -1, 1)
        return chw * self.scale[:, None, None, None] + self.offset[:, None, None, None]


def filter_images(model: nn.Module, layer: str | None = None, symmetric: bool = False) -> FilterImages:
    """The kernels of a convolution with 1 or 3 input channels (default: the first conv) as images.

    ``symmetric`` keeps zero at mid-grey (scale by the largest |weight|) so excitatory and inhibitory parts
    read as bright and dark; otherwise each filter is stretched min-to-max for contrast. Computed in float64 so
    the weights come back to float32 precision.
    """
    layer = layer or first_conv(model)
    module = model.get_submodule(layer)
    if not isinstance(module, nn.Conv2d):
        raise ValueError(f"Layer {layer!r} is a {type(module).__name__}, not a Conv2d.")
    w = module.weight.detach().double().cpu().numpy()
    if w.shape[1] not in (1, 3):
        raise ValueError(f"Layer {layer!r} has {w.shape[1]} input channels; only 1 (grey) or 3 (RGB) are images.")
    flat = w.reshape(len(w), -1)
    if symmetric:
        peak = np.abs(flat).max(axis=1)
        scale = np.where(peak > 0, 2 * peak, 1.0)
        offset = -scale / 2
    else:
        lo, hi = flat.min(axis=1), flat.max(axis=1)
        scale, offset = np.where(hi > lo, hi - lo, 1.0), lo
    images = (w - offset[:, None, None, None]) / scale[:, None, None, None]
    images = images[:, 0] if w.shape[1] == 1 else np.moveaxis(images, 1, -1)
    return FilterImages(layer, images, offset, scale)
