"""Activation maximisation: synthesise the input a network responds to most, starting from seeded noise.

Gradient ascent on the pixels (kept in [0, 1], the range of a real image) of a class logit or of a channel's
mean activation, with the usual image priors (Simonyan et al. 2014; Yosinski et al. 2015; Olah et al. 2017):
an L2 pull towards mid-grey, total variation, random jitter each step and a Gaussian blur every few steps.

How "how much did it rise" is measured: a logit can be negative, so a ratio of logits means nothing. For a
class we report ``gain = exp(final_logit - start_logit)``, the factor by which the unnormalised class
probability exp(logit) grew; tenfold means the logit rose by ln 10 ≈ 2.3. For a channel the score is its
mean activation and the gain is the plain ratio (defined only when the start is positive).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import nn

from core.hooks import capture
from core.zoo import Preprocessing, get_layer, normalise

ProgressFn = Callable[[float], None]


@dataclass(frozen=True)
class Target:
    """What to maximise: a class logit, or the mean activation of one channel of a layer."""

    kind: Literal["class", "channel"]
    index: int
    layer: str | None = None

    def describe(self, class_names: tuple[str, ...] = ()) -> str:
        """Human label such as 'class PNEUMONIA' or 'layer3 channel 7'."""
        if self.kind == "class":
            name = class_names[self.index] if self.index < len(class_names) else str(self.index)
            return f"class {name}"
        return f"{self.layer} channel {self.index}"


@dataclass(frozen=True)
class Settings:
    """Optimisation and regularisation settings (defaults tuned on the bundled 160 px chest X-ray model)."""

    steps: int = 96
    lr: float = 0.02
    l2: float = 1.0  # weight of mean squared distance from mid-grey
    tv: float = 1.0  # weight of mean absolute difference between neighbouring pixels
    jitter: int = 2  # random shift in pixels (each direction) applied before every forward pass
    blur_every: int = 8  # blur the image every this many steps (0: never)
    blur_sigma: float = 0.5  # Gaussian sigma in pixels
    noise: float = 0.1  # standard deviation of the starting noise around mid-grey
    frames: int = 8  # intermediate snapshots kept for display
    seed: int = 0


@dataclass
class Synthesis:
    """Result: the image, snapshots along the way and the score before and after."""

    target: Target
    image: np.ndarray  # H x W (grey) or H x W x 3 in [0, 1]
    start_image: np.ndarray
    frames: list[tuple[int, np.ndarray]]
    history: np.ndarray  # score at every step (on that step's jittered image)
    start_score: float
    final_score: float
    start_probability: float | None = None  # softmax probability of the class (class targets only)
    final_probability: float | None = None

    @property
    def gain(self) -> float:
        """exp(logit rise) for a class; final / start mean activation for a channel (NaN if start <= 0)."""
        if self.target.kind == "class":
            return math.exp(self.final_score - self.start_score)
        return self.final_score / self.start_score if self.start_score > 0 else math.nan


Scorer = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def _scorer(model: nn.Module, target: Target, prep: Preprocessing) -> Scorer:
    """A function pixels in [0, 1] (1 x C x S x S) -> (score, logits for class targets else None)."""
    if target.kind == "class":
        def class_score(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = model(normalise(pixels, prep))
            if not 0 <= target.index < logits.shape[1]:
                raise ValueError(f"Class index must be in [0, {logits.shape[1] - 1}], got {target.index}.")
            return logits[0, target.index], logits

        return class_score

    get_layer(model, target.layer or "")  # a misspelt layer fails here, before any optimisation

    def channel_score(pixels: torch.Tensor) -> tuple[torch.Tensor, None]:
        with capture(model, target.layer or "", stop=True) as record:  # the rest of the network is not needed
            model(normalise(pixels, prep))
        out = record.activations
        if out is None or out.ndim != 4:
            raise ValueError(f"Layer {target.layer!r} does not output channels of 2-D maps.")
        if not 0 <= target.index < out.shape[1]:
            raise ValueError(f"Channel must be in [0, {out.shape[1] - 1}], got {target.index}.")
        return out[0, target.index].mean(), None

    return channel_score


def total_variation(pixels: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontally and vertically neighbouring pixels."""
    return ((pixels[..., 1:, :] - pixels[..., :-1, :]).abs().mean()
            + (pixels[..., :, 1:] - pixels[..., :, :-1]).abs().mean())


def _display(pixels: torch.Tensor) -> np.ndarray:
    img = pixels[0].detach().cpu().numpy()
    return img[0].copy() if img.shape[0] == 1 else np.moveaxis(img, 0, -1).copy()


def maximise(model: nn.Module, prep: Preprocessing, target: Target, settings: Settings | None = None,
             progress: ProgressFn | None = None) -> Synthesis:
    """Gradient ascent on the input's pixels to raise ``target``, on the model's device; seeded and repeatable.

    The model must be in eval mode (batch-norm statistics are not updated); its weights are not touched:
    gradients are taken with respect to the pixels only. ``progress(fraction)`` is called after every step
    and may raise to cancel.
    """
    s = settings or Settings()
    if s.steps < 1:
        raise ValueError(f"steps must be at least 1, got {s.steps}.")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(s.seed)  # CPU generator: the same noise on every device
    shape = (1, prep.channels, prep.size, prep.size)
    pixels = (0.5 + s.noise * torch.randn(shape, generator=gen)).clamp(0, 1).to(device).requires_grad_(True)
    score_of = _scorer(model, target, prep)
    start_image = _display(pixels)
    with torch.no_grad():
        start_score, start_logits = score_of(pixels)
    optimiser = torch.optim.Adam([pixels], lr=s.lr)
    kernel = 2 * math.ceil(3 * s.blur_sigma) + 1
    snap_every = max(1, s.steps // max(s.frames, 1))
    frames: list[tuple[int, np.ndarray]] = [(0, start_image)]
    history = np.empty(s.steps, dtype=np.float64)
    for step in range(1, s.steps + 1):
        dy, dx = (int(v) for v in torch.randint(-s.jitter, s.jitter + 1, (2,), generator=gen))
        score, _ = score_of(torch.roll(pixels, shifts=(dy, dx), dims=(-2, -1)))
        history[step - 1] = float(score.detach())
        loss = -score + s.l2 * ((pixels - 0.5) ** 2).mean() + s.tv * total_variation(pixels)
        (grad,) = torch.autograd.grad(loss, pixels)
        pixels.grad = grad
        optimiser.step()
        with torch.no_grad():
            if s.blur_every and step % s.blur_every == 0 and s.blur_sigma > 0:
                pixels.copy_(TF.gaussian_blur(pixels, [kernel, kernel], [s.blur_sigma, s.blur_sigma]))
            pixels.clamp_(0, 1)
        if step % snap_every == 0 or step == s.steps:
            frames.append((step, _display(pixels)))
        if progress is not None:
            progress(step / s.steps)
    with torch.no_grad():
        final_score, final_logits = score_of(pixels)
    result = Synthesis(target, _display(pixels), start_image, frames, history, float(start_score), float(final_score))
    if target.kind == "class":
        result.start_probability = float(torch.softmax(start_logits, 1)[0, target.index])
        result.final_probability = float(torch.softmax(final_logits, 1)[0, target.index])
    return result
