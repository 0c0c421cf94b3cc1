"""A small CNN for scikit-learn's 8 x 8 digits, trained on first use in seconds and cached on disk.

It lets the explorer work on a fresh machine with no X-ray folder and no internet: the classic t-SNE example,
with a real trained network behind it. It is exposed as a ``core.zoo.ModelSpec`` so everything that takes a
zoo model (embeddings, an untrained copy, Grad-CAM) takes it too. The even-numbered half of the digits
train it; the other half is held out, so the explorer has honest mistakes to show.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from core.embed.cache import ArrayCache, default_cache, digest
from core.threads import single_thread
from core.zoo import LoadedModel, ModelSpec, Preprocessing, instantiate

DIGITS_MODEL = "digits-cnn"
SEED = 0
EPOCHS = 25
_RECIPE = ("digits-cnn-v2", "even", SEED, EPOCHS)  # any change here retrains
_LOCK = threading.Lock()


class DigitsCNN(nn.Module):
    """Three 3x3 conv blocks (16-32-64 channels, one 2x2 max-pool) -> global average pool -> linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 64))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a N x 1 x 8 x 8 batch."""
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def digits_train_indices(labels: np.ndarray) -> np.ndarray:
    """Positions of the training half: the even-numbered digits (the odd ones are held out).

    A fixed rule rather than a seeded shuffle, so that a seeded subsample drawn later for display can never
    line up with it and show only training images. The digits' order cycles through the classes, so each
    half holds every class in about equal numbers.
    """
    return np.arange(0, len(labels), 2)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def _preprocessing() -> Preprocessing:
    images, labels = _digits()
    train = images[digits_train_indices(labels)]
    return Preprocessing(8, 1, (float(train.mean()),), (float(train.std()),))


def train_digits_cnn(epochs: int = EPOCHS, seed: int = SEED) -> dict[str, torch.Tensor]:
    """Train a DigitsCNN on the training half with Adam; returns its state dict (a few seconds on a CPU)."""
    images, labels = _digits()
    prep = _preprocessing()
    train = digits_train_indices(labels)
    x = (torch.from_numpy(images[train])[:, None] - prep.mean[0]) / prep.std[0]
    y = torch.from_numpy(labels[train])
    with torch.random.fork_rng(), single_thread():
        torch.manual_seed(seed)
        model = DigitsCNN()
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=1e-2, total_steps=epochs * (-(-len(x) // 64)))
        model.train()
        for _ in range(epochs):
            for batch in torch.randperm(len(x)).split(64):
                optimiser.zero_grad()
                nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimiser.step()
                schedule.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def digits_spec(cache: ArrayCache | None = None) -> ModelSpec:
    """The digits CNN as a zoo spec; loading its weights trains it once and caches the result."""
    store = cache or default_cache()
    key = digest(*_RECIPE, torch.__version__)

    def load_weights(model: nn.Module) -> None:
        with _LOCK:  # two page sessions starting together train once
            arrays, _ = store.fetch("digits-cnn", key,
                                    lambda: {k: v.numpy() for k, v in train_digits_cnn().items()})
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})

    return ModelSpec(
        name=DIGITS_MODEL,
        description="Small CNN (3 conv blocks, 16-32-64 channels) trained here in seconds on half of "
                    "scikit-learn's digits; the other half is held out.",
        architecture="digits-cnn",
        preprocessing=_preprocessing(),
        class_names=tuple(str(d) for d in range(10)),
        cam_layer="features",
        embedding_layer="avgpool",
        build=DigitsCNN,
        load_weights=load_weights,
        weights_source=f"trained on first use, cached in {store.root or 'memory'}",
    )


def load_digits_model(cache: ArrayCache | None = None, device: torch.device | None = None) -> LoadedModel:
    """The trained digits CNN in eval mode (trained and cached on first call)."""
    return instantiate(digits_spec(cache), device)
