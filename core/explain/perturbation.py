"""Meaningful perturbation (Fong and Vedaldi, ICCV 2017): the smallest smooth deletion that destroys a class.

A low-resolution keep-mask m in [0, 1] (upsampled bilinearly to the input) blends the image with a perturbed
copy, ``m * x + (1 - m) * p``, where p is the image blurred or a constant (the normalisation mean, 0 in model
input space). Adam minimises

    area * mean(1 - m) + smoothness * mean(|grad m|^3) + softmax(model(blend))[target]

with m clamped to [0, 1] after each step and the image jittered by a few pixels against the mask each step
(the paper's defences against adversarial masks: low resolution, TV with beta = 3, jitter). The map returned
is how much each pixel is deleted, 1 - m, in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from core.explain.base import Context, Param, batches, register

BETA = 3.0  # exponent of the total-variation term, as in the paper


def perturbed(x: torch.Tensor, mode: str, sigma: float) -> torch.Tensor:
    """The 'deleted' version of a batch: Gaussian blur with ``sigma`` pixels, or the constant 0 (the mean)."""
    if mode == "constant":
        return torch.zeros_like(x)
    if mode != "blur":
        raise ValueError(f"perturbation must be 'blur' or 'constant', got {mode!r}.")
    radius = min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1)  # reflect padding needs radius < side
    return TF.gaussian_blur(x, [2 * radius + 1] * 2, [sigma, sigma])


def blend(x: torch.Tensor, background: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``keep * x + (1 - keep) * background``; ``keep`` is N x 1 x H x W (or broadcastable)."""
    return keep * x + (1 - keep) * background


def upsample(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Low-resolution N x 1 x h x w mask -> N x 1 x H x W, bilinear."""
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False)


def smoothness_penalty(mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean of |finite difference|^BETA over both axes of the low-resolution mask (N values)."""
    dy = (mask[..., 1:, :] - mask[..., :-1, :]).abs().pow(BETA).flatten(1).mean(1)
    dx = (mask[..., :, 1:] - mask[..., :, :-1]).abs().pow(BETA).flatten(1).mean(1)
    return dy + dx


def target_probability(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax probability of each image's target class (N values)."""
    return torch.softmax(model(x), dim=1).gather(1, targets[:, None])[:, 0]


def _optimise(ctx: Context, x: torch.Tensor, targets: torch.Tensor, done: int, total: int) -> torch.Tensor:
    """Optimise the low-resolution keep-masks of one batch; returns them (N x 1 x r x r).

    The jitter offsets come from a CPU generator seeded by the method's seed alone and restarted for every batch,
    so every image sees the same offsets at the same step as if it were explained alone (the masks of a batch
    are independent: each image's loss depends on its own mask only, and Adam is element-wise): a map depends
    neither on the batch size nor on its batch mates, and a seed gives the same offsets on every device.
    """
    p = ctx.params
    gen = torch.Generator().manual_seed(ctx.seed)
    size = tuple(x.shape[-2:])
    background = perturbed(x, p["perturbation"], p["blur_sigma"])
    keep = torch.full((len(x), 1, p["mask_size"], p["mask_size"]), 0.5, device=x.device, requires_grad=True)
    optimiser = torch.optim.Adam([keep], lr=p["lr"])
    jitter = p["jitter"]
    for step in range(p["steps"]):
        dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
        mask = upsample(keep, size)
        shifted = torch.roll(x, (dy, dx), dims=(-2, -1)), torch.roll(background, (dy, dx), dims=(-2, -1))
        score = target_probability(ctx.model, blend(*shifted, mask), targets)
        loss = (p["area"] * (1 - keep).flatten(1).mean(1) + p["smoothness"] * smoothness_penalty(keep) + score).sum()
        (grad,) = torch.autograd.grad(loss, keep)  # masks only: the model's weights get no gradients
        keep.grad = grad
        optimiser.step()
        with torch.no_grad():
            keep.clamp_(0, 1)
        ctx.report((done + (step + 1) / p["steps"] * len(x)) / total)
    return keep.detach()


@register(
    "meaningful_perturbation", "Meaningful perturbation", "perturbation",
    "Smallest smooth blur (or constant) deletion mask that destroys the class score (Fong and Vedaldi 2017); "
    "the map is how much each pixel is deleted.",
    stochastic=True,
    params=[
        Param("steps", "Optimisation steps", "int", 100, 10, 2000, 10, help="Adam steps on the mask."),
        Param("lr", "Learning rate", "float", 0.1, 0.001, 1.0, 0.01),
        Param("mask_size", "Mask resolution", "int", 20, 4, 64, 1,
              help="Side of the low-resolution mask; lower = blobbier, more robust masks."),
        Param("area", "Area weight (L1)", "float", 0.3, 0.0, 20.0, 0.05,
              help="Price of deleting: higher keeps the deleted region smaller."),
        Param("smoothness", "Smoothness weight (TV)", "float", 1.0, 0.0, 20.0, 0.1,
              help="Price of ragged mask edges (mean |gradient|^3 of the low-resolution mask)."),
        Param("perturbation", "Deletion by", "choice", "constant", choices=("constant", "blur"),
              help="Replace deleted pixels with the dataset mean, or blur them (the paper's default; on chest "
                   "X-rays a blur looks like an opacity, so it rarely removes evidence of pneumonia)."),
        Param("blur_sigma", "Blur sigma (px)", "float", 10.0, 0.5, 50.0, 0.5),
        Param("jitter", "Jitter (px)", "int", 4, 0, 16, 1,
              help="Random shift of the image against the mask each step, against adversarial masks."),
    ],
)
def meaningful_perturbation(ctx: Context, x: torch.Tensor, targets: torch.Tensor
                            ) -> tuple[torch.Tensor, list[dict]]:
    """Deletion maps (N x H x W in [0, 1]) plus each image's deleted area and target probability after deletion."""
    maps, extras = [], []
    for part in batches(len(x), ctx.batch_size):
        xb, tb = x[part], targets[part]
        keep = upsample(_optimise(ctx, xb, tb, part.start, len(x)), tuple(x.shape[-2:]))
        with torch.no_grad():
            deleted = target_probability(
                ctx.model, blend(xb, perturbed(xb, ctx.params["perturbation"], ctx.params["blur_sigma"]), keep), tb)
        maps.append(1 - keep[:, 0])
        extras += [{"deleted_area": float(1 - k.mean()), "score_after_deletion": float(d)}
                   for k, d in zip(keep, deleted, strict=True)]
    return torch.cat(maps), extras
