"""Tiny hand-built networks for explainer tests (fast on a CPU, weights set from a seed)."""

from __future__ import annotations

import torch
from torch import nn

from core.nets import WideResNet18


class TinyGapNet(nn.Module):
    """conv -> ReLU (in-place) -> conv -> ReLU -> global average pooling -> linear: a CAM-compatible network."""

    def __init__(self, channels: int = 1, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class TinyFlatNet(nn.Module):
    """conv -> ReLU -> flatten -> linear (no global pooling), for CAM's refusal and a non-GAP Grad-CAM."""

    def __init__(self, channels: int = 1, side: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(channels, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * side * side, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


def small_resnet(channels: int = 1, seed: int = 0) -> nn.Module:
    """The bundled architecture (torchvision BasicBlocks: one in-place ReLU reused per block) at width 8, with
    random batch-norm statistics so that no block is the identity."""
    torch.manual_seed(seed)
    net = WideResNet18(width=8, in_channels=channels, num_classes=2)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def image(channels: int = 1, side: int = 16, n: int = 1, seed: int = 0) -> torch.Tensor:
    """A smooth random batch (N x C x side x side)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, channels, side // 4, side // 4, generator=g)
    return nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
