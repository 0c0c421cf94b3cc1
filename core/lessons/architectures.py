"""Architectures measured, not typed: parameters, multiply-adds, receptive field and CPU speed of real networks.

Every number comes from the model itself: parameters are ``sum(p.numel())``, multiply-adds are half of what
``torch.utils.flop_counter.FlopCounterMode`` counts (it counts a multiply-add as 2 FLOPs, and only matrix
products and convolutions: BatchNorm, activations and pooling add a few percent), the receptive field comes from
``core.lessons.receptive_field.analyse_module``. Counting and tracing run on the ``meta`` device (shapes only,
no memory), so even VGG-16's 138 M parameters cost nothing; only the speed measurement builds real weights.
ImageNet top-1/top-5 are read from torchvision's weight enums (their ``meta``, offline), beside the numbers the
original papers reported (typed, with the paper and protocol, since no library carries them).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision import models as tvm

from core.lessons.conv import ConvCost, depthwise_separable_cost, stacked_conv_cost, standard_conv_cost
from core.lessons.receptive_field import analyse_module
from core.zoo import BUNDLED, IMAGENET_MODELS, get_spec

# The seed's table: the architectures every CNN course compares, by torchvision name.
SEED_ARCHITECTURES = ("alexnet", "vgg16", "googlenet", "resnet50", "densenet121", "mobilenet_v2", "efficientnet_b0")


@dataclass(frozen=True)
class PaperNumbers:
    """What a paper reported on ImageNet (ILSVRC-2012 validation unless the protocol says otherwise)."""

    paper: str
    params_m: float
    top1: float | None  # accuracy, %
    top5: float | None
    protocol: str


# Typed from the papers because no library carries them; the protocols differ (crops, ensembles), which is why
# they rarely equal torchvision's single-crop re-trainings.
PAPERS: dict[str, PaperNumbers] = {
    "alexnet": PaperNumbers("Krizhevsky et al. 2012", 60.0, 59.3, 81.8, "one CNN, ILSVRC-2012 val (Table 2)"),
    "vgg16": PaperNumbers("Simonyan & Zisserman 2015", 138.0, 75.6, 92.8, "config D, dense + multi-crop (Table 5)"),
    "googlenet": PaperNumbers("Szegedy et al. 2015", 6.8, None, 89.9, "one model, one crop (Table 5)"),
    "resnet50": PaperNumbers("He et al. 2016", 25.6, 77.15, 93.29, "one model, 10 crops (Table 3)"),
    "densenet121": PaperNumbers("Huang et al. 2017", 8.0, 74.98, 92.29, "one crop (Table 3)"),
    "mobilenet_v2": PaperNumbers("Sandler et al. 2018", 3.4, 72.0, None, "224 px, one crop (Table 4)"),
    "efficientnet_b0": PaperNumbers("Tan & Le 2019", 5.3, 77.1, 93.3, "224 px, one crop (Table 2)"),
}


def zoo_architectures() -> dict[str, str]:
    """torchvision architecture -> zoo name, for every ImageNet model the zoo lists (read through its public API)."""
    return {get_spec(name).architecture: name for name in IMAGENET_MODELS}


def architecture_names() -> list[str]:
    """The bundled model, the zoo's torchvision architectures, then the rest of the seed's table."""
    zoo = list(zoo_architectures())
    return [BUNDLED, *zoo, *(a for a in SEED_ARCHITECTURES if a not in zoo)]


def input_channels(name: str) -> int:
    """Channels the architecture reads: the bundled model's own, 3 for the ImageNet networks."""
    return get_spec(BUNDLED).preprocessing.channels if name == BUNDLED else 3


def native_size(name: str) -> int:
    """The input size the architecture was trained at."""
    return get_spec(BUNDLED).preprocessing.size if name == BUNDLED else 224


def build(name: str, device: torch.device | str = "cpu") -> nn.Module:
    """An untrained copy in eval mode (nothing downloaded); on ``meta`` it holds shapes only.

    GoogLeNet is built without its two auxiliary training heads, which inference never runs (as torchvision does
    when it loads the ImageNet weights).
    """
    with torch.device(device), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision warns that GoogLeNet's initialisation will change
        if name == BUNDLED:
            model = get_spec(BUNDLED).build()
        elif name == "googlenet":
            model = tvm.googlenet(weights=None, aux_logits=False, init_weights=True)
        elif name in tvm.list_models(module=tvm):
            model = tvm.get_model(name, weights=None)
        else:
            raise ValueError(f"Unknown architecture {name!r}; choose one of {', '.join(architecture_names())}.")
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    """Learnable parameters (each shared tensor once, as ``nn.Module.parameters`` yields it)."""
    return sum(p.numel() for p in model.parameters())


def multiply_adds(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of ``x``, as FlopCounterMode counts them (every call of every op, so a
    module used twice counts twice and functional convolutions count too; forward hooks would miss both)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class Measured:
    """One architecture's numbers, computed from the model at ``size`` px."""

    name: str
    size: int
    params: int
    macs: int
    receptive_field: int | None  # None when the analysis cannot follow the graph to the last feature map
    rf_note: str
    top1: float | None  # torchvision's ImageNet weights, single crop (None for the bundled model)
    top5: float | None
    weights: str


def _last_feature_map(model: nn.Module, x: torch.Tensor) -> int:
    """Height of the smallest spatial output of any convolution: the map the classifier pools."""
    heights: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: heights.append(out.shape[-2]))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    spatial = [h for h in heights if h > 1]
    return min(spatial) if spatial else 1


def receptive_field(model: nn.Module, size: int, channels: int) -> tuple[int | None, str]:
    """Field size (px) of a unit of the last feature map, or None with the reason when the analysis stops early
    (it ends the spatial part at the first global pooling, which in squeeze-and-excitation blocks only gates)."""
    analysis = analyse_module(model, size)
    spatial = [r for r in analysis.rows if r.layer is not None or r.height > 1]
    if not spatial:
        return None, "no convolution or pooling found"
    last = spatial[-1]
    final = _last_feature_map(model, torch.empty(1, channels, size, size, device="meta"))
    if last.height > final:
        return None, (f"the analysis stops at {last.name} ({last.height}×{last.width}), before the last "
                      f"{final}×{final} map: " + " ".join(analysis.notes))
    return max(r.field.size for r in spatial), ""


def measure(name: str, size: int | None = None) -> Measured:
    """Parameters, multiply-adds and receptive field at ``size`` px (default: the native size), plus the ImageNet
    accuracy torchvision's default weights carry."""
    size = size or native_size(name)
    model = build(name, "meta")
    channels = input_channels(name)
    x = torch.empty(1, channels, size, size, device="meta")
    rf, note = receptive_field(model, size, channels)
    top1 = top5 = None
    weights = "the bundled checkpoint (chest X-rays)"
    if name != BUNDLED:
        enum = tvm.get_model_weights(name).DEFAULT
        metrics = enum.meta["_metrics"]["ImageNet-1K"]
        top1, top5, weights = metrics["acc@1"], metrics["acc@5"], str(enum)
    return Measured(name, size, count_parameters(model), multiply_adds(model, x), rf, note, top1, top5, weights)


def images_per_second(name: str, size: int, batch: int = 4, repeats: int = 3) -> float:
    """CPU throughput of an untrained copy (speed does not depend on the weights): best of ``repeats`` timed
    batches after one warm-up, at the current torch thread count."""
    model = build(name)
    x = torch.randn(batch, input_channels(name), size, size)
    best = float("inf")
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    return batch / best


# ------------------------------------------------------------------------------ cost calculator (Inception & co)


@dataclass(frozen=True)
class Comparison:
    """A block and its cheaper replacement, by formula, with torch layers that realise both."""

    title: str
    before: ConvCost
    after: ConvCost
    build_before: Callable[[], nn.Module]
    build_after: Callable[[], nn.Module]
    in_channels: int

    @property
    def saving(self) -> float:
        """Fraction of multiply-adds saved by the replacement."""
        return 1.0 - self.after.macs / self.before.macs


def _same(c_in: int, c_out: int, k: int | tuple[int, int], groups: int = 1) -> nn.Conv2d:
    kh, kw = (k, k) if isinstance(k, int) else k
    return nn.Conv2d(c_in, c_out, (kh, kw), padding=(kh // 2, kw // 2), groups=groups)


def asymmetric_pair_cost(channels: int, k: int, h_out: int, w_out: int) -> ConvCost:
    """A 1 x k then a k x 1 convolution (Inception-v3's factorisation of a k x k one), with biases.

    Written here because ``core.lessons.conv``'s costs take square kernels only.
    """
    one = k * channels * channels
    return ConvCost(f"1x{k} then {k}x1", 2 * (one + channels), 2 * one * h_out * w_out,
                    f"2·({k}·{channels}·{channels} + {channels})", f"2·{k}·{channels}·{channels}·{h_out}·{w_out}")


def factorise_5x5(channels: int, size: int) -> Comparison:
    """A 5 x 5 convolution against two stacked 3 x 3 ones: same receptive field, 18/25 of the cost (28 % fewer)."""
    return Comparison("5x5 as two 3x3", standard_conv_cost(channels, channels, 5, size, size),
                      stacked_conv_cost(channels, 3, 2, size, size),
                      lambda: _same(channels, channels, 5),
                      lambda: nn.Sequential(_same(channels, channels, 3), _same(channels, channels, 3)), channels)


def factorise_asymmetric(channels: int, size: int, k: int = 3) -> Comparison:
    """A k x k convolution against 1 x k then k x 1: 2k/k² of the cost (3 x 3: 33 % fewer)."""
    return Comparison(f"{k}x{k} as 1x{k} + {k}x1", standard_conv_cost(channels, channels, k, size, size),
                      asymmetric_pair_cost(channels, k, size, size),
                      lambda: _same(channels, channels, k),
                      lambda: nn.Sequential(_same(channels, channels, (1, k)), _same(channels, channels, (k, 1))),
                      channels)


def bottleneck(c_in: int, c_out: int, reduce_to: int, k: int, size: int) -> Comparison:
    """A k x k convolution against a 1 x 1 reduction to ``reduce_to`` channels followed by the k x k one
    (GoogLeNet's 'reduce' layers)."""
    reduce, conv = standard_conv_cost(c_in, reduce_to, 1, size, size), standard_conv_cost(reduce_to, c_out, k, size,
                                                                                         size)
    after = ConvCost(f"1x1 to {reduce_to}, then {k}x{k}", reduce.params + conv.params, reduce.macs + conv.macs,
                     f"{reduce.params_formula} + {conv.params_formula}", f"{reduce.macs_formula} + {conv.macs_formula}")
    return Comparison(f"1x1 bottleneck before a {k}x{k}", standard_conv_cost(c_in, c_out, k, size, size), after,
                      lambda: _same(c_in, c_out, k),
                      lambda: nn.Sequential(_same(c_in, reduce_to, 1), _same(reduce_to, c_out, k)), c_in)


def depthwise_separable(c_in: int, c_out: int, k: int, size: int) -> Comparison:
    """A standard k x k convolution against MobileNet's depthwise k x k + pointwise 1 x 1."""
    return Comparison(f"depthwise-separable {k}x{k}", standard_conv_cost(c_in, c_out, k, size, size),
                      depthwise_separable_cost(c_in, c_out, k, size, size),
                      lambda: _same(c_in, c_out, k),
                      lambda: nn.Sequential(_same(c_in, c_in, k, groups=c_in), _same(c_in, c_out, 1)), c_in)


def torch_cost(make: Callable[[], nn.Module], channels: int, size: int) -> tuple[int, int]:
    """(parameters, multiply-adds) of real torch layers on a ``size`` x ``size`` input, built on the meta device
    (shapes only): the formulas' check."""
    with torch.device("meta"):
        module = make()
    return count_parameters(module), multiply_adds(module, torch.empty(1, channels, size, size, device="meta"))
