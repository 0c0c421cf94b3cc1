"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) with Zennit, the field's reference.

The class logit is handed back layer by layer with a rule per layer type, chosen by a Zennit composite; at the
input the relevance of every pixel remains. Residual networks and batch norm break the plain rules (the skip
addition is not a layer, a batch norm is an affine map with its own bias): Zennit's ResNet canonizer routes each
block's addition through a ``Sum`` module that the composite's rules see and merges every batch norm into the
convolution before it, and other networks get the batch-norm merge alone.

What is written here rather than taken from Zennit: Zennit changes the model it explains (hooks on every layer,
parameters swapped during the backward, merged batch norms), so every call runs on a private copy from
``core.explain.replicas``; and the relevance starts from the target logit itself (one-hot x logit, not Zennit's
tutorial one-hot), so the map is in the logit's units, keeps its sign for a negative logit, and for
conservative rules on a bias-free network sums to the logit (reported per image as ``relevance_sum``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import (
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    LayerMapComposite,
    layer_map_base,
)
from zennit.core import Composite
from zennit.rules import Epsilon
from zennit.torchvision import ResNetCanonizer
from zennit.types import Convolution

from core.explain.base import Context, Param, batches, register
from core.explain.replicas import replica

COMPOSITE_HELP = {
    "epsilon_plus_flat": "LRP-epsilon on dense layers, z+ on convolutions, flat on the first layer (Kohlbrenner "
                         "et al. 2020's recommendation: positive, well-spread maps)",
    "epsilon_gamma_box": "LRP-epsilon on dense layers, gamma on convolutions, z-box on the first layer (bounded by "
                         "black and white pixels; Montavon et al. 2019)",
    "epsilon_alpha2_beta1_flat": "LRP-epsilon on dense layers, alpha2-beta1 on convolutions (shows negative "
                                 "evidence too), flat on the first layer",
    "epsilon_plus": "LRP-epsilon on dense layers, z+ on every convolution",
    "epsilon": "LRP-epsilon on every layer (with epsilon 0 on a network without biases: gradient x input)",
}


def canonizers(model: nn.Module) -> list:
    """Zennit's ResNet canonizer for torchvision ResNet blocks (skip additions, batch norms); otherwise the merge
    of batch norms that follow a convolution or linear layer."""
    if any(isinstance(m, BasicBlock | Bottleneck) for m in model.modules()):
        return [ResNetCanonizer()]
    return [SequentialMergeBatchNorm()]


def _exact_zero_safe(z: torch.Tensor) -> torch.Tensor:
    """LRP-0's denominator: z itself, with exact zeros replaced by 1 (their relevance is 0 / 1 = 0, not NaN)."""
    return torch.where(z == 0, torch.ones_like(z), z)


def make_composite(name: str, model: nn.Module, epsilon: float = 1e-6, gamma: float = 0.25,
                   low: torch.Tensor | float = 0.0, high: torch.Tensor | float = 1.0) -> Composite:
    """The Zennit composite ``name`` with the canonizers ``model`` needs; ``epsilon`` = 0 gives exact LRP-0 on
    the layers that use the epsilon rule; ``low``/``high`` bound the input for the z-box rule."""
    eps: Any = epsilon if epsilon > 0 else _exact_zero_safe
    canon = canonizers(model)
    if name == "epsilon_plus_flat":
        return EpsilonPlusFlat(epsilon=eps, canonizers=canon)
    if name == "epsilon_gamma_box":
        return EpsilonGammaBox(low=low, high=high, epsilon=eps, gamma=gamma, canonizers=canon)
    if name == "epsilon_alpha2_beta1_flat":
        return EpsilonAlpha2Beta1Flat(epsilon=eps, canonizers=canon)
    if name == "epsilon_plus":
        return EpsilonPlus(epsilon=eps, canonizers=canon)
    if name == "epsilon":
        rule = Epsilon(epsilon=eps)
        return LayerMapComposite([*layer_map_base(), (Convolution, rule), (nn.Linear, rule)], canonizers=canon)
    raise ValueError(f"composite must be one of {', '.join(COMPOSITE_HELP)}, got {name!r}.")


@register("lrp", "LRP (layer-wise relevance)", "relevance",
          "How is the class score shared out among the pixels? The logit is passed back layer by layer with "
          "conservation rules (Bach et al. 2015), here with Zennit's composites and its ResNet canonizer for skip "
          "connections and batch norm. Signed, summed over channels: positive pixels carry evidence for the class.",
          signed=True, own_forward=True,
          params=[
              Param("composite", "Rule composite", "choice", "epsilon_plus_flat", choices=tuple(COMPOSITE_HELP),
                    help="Which LRP rule each layer uses — "
                         + "; ".join(f"{k}: {v}" for k, v in COMPOSITE_HELP.items()) + "."),
              Param("epsilon", "Epsilon (dense layers)", "float", 1e-6, 0.0, 1.0, 1e-6,
                    help="Stabiliser of the epsilon rule: larger values absorb weak or contradictory relevance and "
                         "give sparser maps; 0 is LRP-0."),
              Param("gamma", "Gamma (epsilon_gamma_box)", "float", 0.25, 0.0, 4.0, 0.05,
                    help="How much the gamma rule favours positive contributions on convolutions (only used by "
                         "epsilon_gamma_box)."),
          ])
def lrp(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Signed relevance maps (N x H x W); per image the target logit and the input relevance's sum."""
    maps, extras = [], []
    with replica(ctx.model, "zennit") as net:
        for rows in batches(len(x), ctx.batch_size):
            xb = x[rows].detach()
            composite = make_composite(ctx.params["composite"], net, ctx.params["epsilon"], ctx.params["gamma"],
                                       ctx.pixel_value(0.0, xb), ctx.pixel_value(1.0, xb))
            chosen: list[torch.Tensor] = []

            def start(output: torch.Tensor, rows: slice = rows, chosen: list = chosen) -> torch.Tensor:
                logits = output.detach()
                targets = ctx.resolve(logits, rows)  # the copy's logits: the prediction pass comes for free
                chosen.append(logits.gather(1, targets[:, None]))
                return torch.zeros_like(logits).scatter_(1, targets[:, None], chosen[0])

            with torch.enable_grad(), Gradient(model=net, composite=composite) as attributor:
                _out, relevance = attributor(xb, start)
            maps.append(relevance.sum(dim=1))
            totals = relevance.sum(dim=(1, 2, 3)).tolist()
            extras += [{"score_input": float(s), "relevance_sum": float(r)}
                       for s, r in zip(chosen[0][:, 0].tolist(), totals, strict=True)]
            ctx.report(rows.stop / len(x))
    return torch.cat(maps), extras
