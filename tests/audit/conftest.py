"""A small synthetic X-ray-like set with a planted shortcut, and a tiny model trained on it in a few seconds.

Every image is smooth noise with a bright central "thorax"; every PNEUMONIA image also carries a white square
near its top-left corner (the planted marker), NORMAL images never do. The model can only tell the classes
apart by the marker, so an honest audit must find a cluster of marked images with evidence at the marker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from core.nets import WideResNet18
from core.zoo import save_checkpoint

SIDE = 128
PER_CLASS = 24
MARKER = (6, 26)  # rows and columns [6, 26) of the top-left corner
CLASSES = ("NORMAL", "PNEUMONIA")


def synthetic_image(rng: np.random.Generator, marked: bool) -> np.ndarray:
    """One SIDE x SIDE grey image in [0, 1]: blurred noise, a bright ellipse of random size, and the marker."""
    noise = rng.normal(0, 1, (SIDE // 8, SIDE // 8))
    noise = np.asarray(Image.fromarray(noise.astype(np.float32)).resize((SIDE, SIDE), Image.BILINEAR))
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    a, b = rng.uniform(0.25, 0.35), rng.uniform(0.3, 0.4)
    ellipse = (((xx - 0.5) / a) ** 2 + ((yy - 0.5) / b) ** 2) < 1
    image = 0.3 + 0.08 * noise + 0.3 * ellipse * rng.uniform(0.6, 1.0)
    if marked:
        image[MARKER[0]:MARKER[1], MARKER[0]:MARKER[1]] = 1.0
    return np.clip(image, 0, 1)


def write_set(root: Path, per_class: int = PER_CLASS, seed: int = 0) -> Path:
    """Write the synthetic set as PNGs under root/NORMAL and root/PNEUMONIA."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (synthetic_image(rng, marked=label == 1) * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name.lower()}_{i:03d}.png")
    return root


def train_tiny(root: Path, out: Path, seed: int = 0) -> Path:
    """Train a width-4 ResNet-18 on the set for a few seconds and save it as a core.train-style checkpoint."""
    torch.manual_seed(seed)
    files = sorted(root.glob("*/*.png"))
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255)[None] for f in files])
    x = (x - 0.5) / 0.25
    y = torch.tensor([CLASSES.index(f.parent.name) for f in files])
    model = WideResNet18(width=4, in_channels=1, num_classes=2)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        model.train()
        for idx in torch.randperm(len(x)).split(16):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            if (model(x).argmax(1) == y).all():
                break
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    assert accuracy == 1.0, f"the tiny model did not learn the marker (training accuracy {accuracy:.2f})"
    path = out / "tiny-marker.safetensors"
    save_checkpoint(model, path, {"width": 4, "channels": 1, "class_names": list(CLASSES), "input_size": SIDE,
                                  "mean": [0.5], "std": [0.25], "description": "tiny test model (planted marker)"})
    return path


@pytest.fixture(scope="session")
def marker_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(synthetic folder, tiny model checkpoint trained on it)."""
    base = tmp_path_factory.mktemp("marker")
    root = write_set(base / "data")
    return root, train_tiny(root, base)
