"""Reference-based attributions: DeepLIFT with Captum, and GradientSHAP.

DeepLIFT (Shrikumar et al. 2017, Rescale rule) explains f(x) - f(baseline): every non-linearity passes back the
ratio of its output and input differences between the image and the baseline instead of its gradient, and the
attributions add up to the score difference (summation-to-delta, reported per image). Captum computes it. Written
by hand here: Captum's DeepLIFT refuses a ReLU module called twice (torchvision's ResNet blocks reuse one) and
ignores ``F.relu``-style calls, and it hooks the model it explains. So each call runs on a private copy
(``core.explain.replicas``) rewritten once with ``torch.fx`` so that every call of a non-linearity goes to a
module of its own, not in-place; Captum's rules then apply unchanged, except at 2-D max pooling: Captum sends
each window's output difference back with ``max_unpool2d``, which overwrites instead of adding where overlapping
windows (ResNet's 3 x 3 / 2 stem) pick the same input, so part of the delta was lost (2-24% of it from a black
baseline on the bundled model, up to 140% from noise). The copy's ``nn.MaxPool2d`` modules are replaced by
``ConservativeMaxPool2d``: Captum's rule with the contributions added by ``scatter_add``, which restores
summation-to-delta.

GradientSHAP (Lundberg and Lee 2017; Captum's formulation) estimates SHAP values as the expected gradient x
(input - baseline) over baselines drawn from a distribution and points drawn uniformly on the path between
them, with optional Gaussian noise on the input: for sample j, with baseline b_j, alpha_j ~ U(0, 1) and noise
e_j, ``grad f(b_j + alpha_j (x + e_j - b_j)) * (x + e_j - b_j)``, averaged over j. Written by hand rather than
called from Captum: Captum draws from the global NumPy and torch random states (neither seedable per call nor
safe with concurrent requests) and runs every sample of a batch in one pass. Here sample j draws from its own
generator seeded by (seed, j), shared by every image (a map depends neither on the batch nor on the other
images), and rows are evaluated ``batch_size`` at a time. The tests compare it with Captum fed the same draws.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import DeepLift
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
from torch import fx, nn

from core.explain.base import BASELINE_HELP, Context, Param, baseline, batches, register
from core.explain.cam import target_logits
from core.explain.replicas import replica

# Captum announces on every call that it hooks the non-linearities: here they are a private copy's.
warnings.filterwarnings("ignore", message="Setting forward, backward hooks and attributes on non-linear",
                        category=UserWarning)

_FUNCTIONAL = {F.relu: nn.ReLU, torch.relu: nn.ReLU, torch.relu_: nn.ReLU, torch.sigmoid: nn.Sigmoid,
               torch.tanh: nn.Tanh}
_METHODS = {"relu": nn.ReLU, "relu_": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def one_module_per_nonlinearity(model: nn.Module) -> nn.Module:
    """``model`` traced with torch.fx and rewritten so that every call of a non-linearity Captum's DeepLIFT knows
    (ReLU, ELU, sigmoid, tanh, softmax, max-pool) goes to a fresh module of its own, not in-place,
    ``F.relu``/``torch.sigmoid``/``torch.tanh``-style calls become such modules, and 2-D max pooling becomes
    ``ConservativeMaxPool2d``; ``model`` itself when it cannot be traced (Captum then handles it as it is)."""
    try:
        graph_module = fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow and the like: keep the model as it is
        return model
    count = 0
    for node in graph_module.graph.nodes:
        module: nn.Module | None = None
        if node.op == "call_module":
            original = graph_module.get_submodule(node.target)
            if type(original) is nn.MaxPool2d and not original.return_indices:
                module = ConservativeMaxPool2d(copy.deepcopy(original))
            elif type(original) in SUPPORTED_NON_LINEAR:
                module = copy.deepcopy(original)
        elif node.op == "call_function" and node.target in _FUNCTIONAL:
            module = _FUNCTIONAL[node.target]()
        elif node.op == "call_method" and node.target in _METHODS:
            module = _METHODS[node.target]()
        if module is None:
            continue
        if hasattr(module, "inplace"):
            module.inplace = False
        name = f"deeplift_nonlinearity_{count}"
        count += 1
        graph_module.add_submodule(name, module)
        node.op, node.target, node.args, node.kwargs = "call_module", name, node.args[:1], {}
    graph_module.graph.lint()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    return graph_module


class _MaxPoolRule(torch.autograd.Function):
    """2-D max pooling whose backward is Captum's DeepLIFT max-pool rule (cross-maximum split of each window's
    output difference, sent to the input's and the baseline's arg-max) with overlapping windows added up. The
    batch is Captum's: the images' rows, then their baselines' rows."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor:
        y, index = F.max_pool2d(z, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode,
                                return_indices=True)
        ctx.save_for_backward(z, y, index)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        z, y, index = ctx.saved_tensors
        n = len(z) // 2

        def unpool(values: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(z).flatten(2).scatter_add_(2, index.flatten(2), values.flatten(2)).view_as(z)

        top = torch.maximum(y[:n], y[n:])
        shares = unpool(grad * torch.cat([top - y[n:], y[:n] - top]))
        delta_out = (shares[:n] + shares[n:]).repeat(2, 1, 1, 1)
        delta_in = (z[:n] - z[n:]).repeat(2, 1, 1, 1)
        flat = delta_in.abs() < _EPS  # Captum's fallback: the plain gradient where image and baseline agree
        return torch.where(flat, unpool(grad), delta_out / torch.where(flat, 1.0, delta_in)), None


_EPS = 1e-10  # Captum's DeepLift eps


class ConservativeMaxPool2d(nn.Module):
    """``nn.MaxPool2d`` for DeepLIFT copies (see ``_MaxPoolRule``); Captum does not hook it."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _MaxPoolRule.apply(z, self.pool)


class _Recorded(nn.Module):
    """The network, keeping its last output: Captum's forward on (image, baseline) rows gives both scores."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        self.last = out.detach()
        return out


def prepare_deeplift(model: nn.Module) -> nn.Module:
    """The private copy DeepLIFT runs on: the fx rewrite (``one_module_per_nonlinearity``), keeping its last
    output."""
    return _Recorded(one_module_per_nonlinearity(model))


DEEPLIFT_BASELINES = ("black", "zero", "blur", "mean", "uniform")


@register("deeplift", "DeepLIFT", "reference",
          "Which pixels make the score differ from the score of a reference image? Each non-linearity passes back "
          "the ratio of its output and input changes between the image and the baseline (Shrikumar et al. 2017, "
          "Rescale rule; Captum). Signed, summed over channels; the attributions add up to score(image) - "
          "score(baseline) (summation to delta), which the result reports.",
          signed=True, own_forward=True,
          params=[
              Param("baseline", "Baseline", "choice", "black", choices=DEEPLIFT_BASELINES,
                    help="; ".join(f"{k}: {BASELINE_HELP[k]}" for k in DEEPLIFT_BASELINES) + "."),
          ])
def deeplift(ctx: Context, x: torch.Tensor, _targets: None) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Signed DeepLIFT maps (N x H x W) and, per image, the summation-to-delta check.

    Its own forward: Captum's pass over [images; baselines] already gives the images' clean logits (the rewrite
    changes gradients only), so a requested target costs no extra forward; without one, the images go through
    the model once first to pick each one's class."""
    base = baseline(ctx, x, ctx.params["baseline"])
    maps, extras = [], []
    with replica(ctx.model, "deeplift", prepare_deeplift) as net:
        explainer = DeepLift(net)
        for rows in batches(len(x), ctx.batch_size):
            xb, bb = x[rows].detach().requires_grad_(True), base[rows].detach()
            if ctx.requested is None:
                with torch.no_grad():
                    tb = ctx.resolve(net(x[rows]), rows)
            else:
                tb = ctx.requested[rows]
            try:
                with torch.enable_grad():
                    attributions = explainer.attribute(xb, bb, target=tb)
            except (IndexError, RuntimeError):
                with torch.no_grad():
                    ctx.resolve(net(x[rows]), rows)  # a target out of range: say so in words
                raise
            n = len(xb)
            if ctx.requested is not None:
                ctx.resolve(net.last[:n], rows)  # the images' clean logits, from Captum's own forward
            scores = target_logits(net.last, torch.cat([tb, tb]))  # Captum's rows: the images, then the baselines
            net.last = None
            f_input, f_base = scores[:n].tolist(), scores[n:].tolist()
            totals = attributions.sum(dim=(1, 2, 3)).tolist()
            extras += [{"score_input": fi, "score_baseline": fb, "attribution_sum": s,
                        "completeness_gap": s - (fi - fb)}
                       for fi, fb, s in zip(f_input, f_base, totals, strict=True)]
            maps.append(attributions.detach().sum(dim=1))
            ctx.report(rows.stop / len(x))
    return torch.cat(maps), extras


SHAP_BASELINES = ("black_white", "black", "zero", "blur", "uniform")
SHAP_BASELINE_HELP = {
    "black_white": "a black or a white image, drawn with equal chance",
    "black": BASELINE_HELP["black"],
    "zero": BASELINE_HELP["zero"],
    "blur": BASELINE_HELP["blur"],
    "uniform": "a fresh uniform-noise image for every sample",
}


def intensity_range(ctx: Context, like: torch.Tensor) -> torch.Tensor:
    """Model-input width of the intensity range [0, 1], per channel (1 x C x 1 x 1)."""
    return ctx.pixel_value(1.0, like) - ctx.pixel_value(0.0, like)


def shap_draw(ctx: Context, x: torch.Tensor, sample: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample ``sample``'s draws, the same for every image: standard normal noise (C x H x W), alpha ~ U(0, 1)
    (a 0-d tensor) and a baseline choice (a 0-d index into black/white, or a C x H x W uniform image in [0, 1])."""
    gen = ctx.rng("gradient_shap", sample)
    kw: dict[str, Any] = {"generator": gen, "device": x.device, "dtype": x.dtype}
    noise = torch.randn(x.shape[1:], **kw)
    alpha = torch.rand((), **kw)
    if ctx.params["baseline"] == "uniform":
        choice = torch.rand(x.shape[1:], **kw)
    else:
        choice = torch.randint(2, (), generator=gen, device=x.device)
    return noise, alpha, choice


def shap_baselines(ctx: Context, x: torch.Tensor, image: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """The baselines of rows (image indices, and the ``choice`` draws stacked per row), in model-input values."""
    kind = ctx.params["baseline"]
    if kind == "black_white":
        black, white = ctx.pixel_value(0.0, x), ctx.pixel_value(1.0, x)
        return torch.where(choice.view(-1, 1, 1, 1) == 1, white, black).expand(len(image), *x.shape[1:])
    if kind == "uniform":
        return ctx.pixel_value(0.0, x) + intensity_range(ctx, x) * choice
    return baseline(ctx, x, kind)[image]


@register("gradient_shap", "GradientSHAP", "reference",
          "What does each pixel add to the score, on average over reference images? Expected gradient x "
          "(image - reference) over references drawn from a distribution and points on the path between them "
          "(Lundberg and Lee 2017, as Captum's GradientShap): a sampled, multi-baseline Integrated Gradients. "
          "Signed, summed over channels.",
          signed=True, stochastic=True,
          params=[
              Param("n_samples", "Samples", "int", 32, 1, 500, 1,
                    help="Random (reference, path point) samples averaged (cost grows linearly)."),
              Param("baseline", "Reference images", "choice", "black_white", choices=SHAP_BASELINES,
                    help="; ".join(f"{k}: {v}" for k, v in SHAP_BASELINE_HELP.items()) + "."),
              Param("stdevs", "Input noise", "float", 0.0, 0.0, 1.0, 0.01,
                    help="Standard deviation of Gaussian noise added to the image in every sample, as a fraction of "
                         "the intensity range (Captum's stdevs; 0: none)."),
          ])
def gradient_shap(ctx: Context, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Signed GradientSHAP maps (N x H x W)."""
    n = ctx.params["n_samples"]
    sigma = ctx.params["stdevs"] * intensity_range(ctx, x)
    draws = [shap_draw(ctx, x, j) for j in range(n)]
    total = len(x) * n
    acc = torch.zeros_like(x)
    for rows in batches(total, ctx.batch_size):
        idx = torch.arange(rows.start, rows.stop)
        image, sample = (idx // n).to(x.device), (idx % n).tolist()
        noise, alpha, choice = (torch.stack([draws[j][part] for j in sample]) for part in range(3))
        base = shap_baselines(ctx, x, image, choice)
        delta = x[image] + sigma * noise - base
        point = (base + alpha.view(-1, 1, 1, 1) * delta).detach().requires_grad_(True)
        with torch.enable_grad():
            score = target_logits(ctx.model(point), targets[image]).sum()
        (grads,) = torch.autograd.grad(score, point)
        acc.index_add_(0, image, grads * delta)
        ctx.report(rows.stop / total)
    return (acc / n).sum(dim=1)
