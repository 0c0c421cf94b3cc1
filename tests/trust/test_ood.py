"""The out-of-distribution gate: Mahalanobis scores by hand, the colour test, and the bundled model's gate on
images that are not chest films (a set of its own; bench/trust.py measures a different one)."""

import io

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from core.data import CLASS_NAMES, external_dir, index_folder
from core.io import load_image
from core.trust import assess, trust_for
from core.trust.ood import OodGate, colourfulness


def test_scores_are_half_the_squared_mahalanobis_distance_to_the_nearest_centre():
    rng = np.random.default_rng(0)
    z0 = rng.normal([0, 0], [1, 3], (400, 2))
    z1 = rng.normal([6, 0], [1, 3], (400, 2))
    train = torch.as_tensor(np.r_[z0, z1], dtype=torch.float32)
    labels = torch.cat([torch.zeros(400), torch.ones(400)]).long()
    gate = OodGate.fit(train, labels, train, quantile=0.9)
    mu = np.array([z0.mean(0), z1.mean(0)])
    scatter = sum((z - m).T @ (z - m) for z, m in ((z0, mu[0]), (z1, mu[1])))  # pytorch_ood: unnormalised
    precision = np.linalg.inv(scatter)
    points = np.array([[0.0, 0.0], [6.0, 9.0], [3.0, 0.0], [-20.0, 0.0]])
    expected = [0.5 * min((p - m) @ precision @ (p - m) for m in mu) for p in points]
    got = gate.raw_scores(torch.as_tensor(points, dtype=torch.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-3)
    assert np.mean(gate.scores(train) > 1) == pytest.approx(0.1, abs=0.01)  # the quantile sets the share flagged
    assert gate.scores(torch.tensor([[-20.0, 0.0]]))[0] > 1 > gate.scores(torch.tensor([[0.0, 0.0]]))[0]


@pytest.mark.parametrize("n", [269, 100, 41, 20])
def test_at_most_the_stated_share_of_the_reference_is_flagged(n):
    rng = np.random.default_rng(n)
    train = torch.as_tensor(rng.normal(size=(300, 3)), dtype=torch.float32)
    labels = torch.as_tensor(rng.integers(0, 2, 300))
    reference = torch.as_tensor(rng.normal(size=(n, 3)), dtype=torch.float32)
    gate = OodGate.fit(train, labels, reference, quantile=0.95)
    scores = gate.scores(reference)
    flagged = int((scores > 1).sum())
    assert flagged == int(np.floor(0.05 * n + 1e-9))  # as many as the share allows, never one more
    assert np.abs(scores - 1).min() > 1e-4  # no reference film on the threshold: decoding noise cannot flip it


def test_colourfulness():
    grey = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    assert colourfulness(grey) == 0.0
    assert colourfulness(np.repeat(grey[..., None], 3, axis=-1)) == 0.0
    red = np.zeros((4, 4, 3), np.float32)
    red[..., 0] = 1.0
    assert colourfulness(red) == pytest.approx(1.0)
    half = red.copy()
    half[:2] = 0.0
    assert colourfulness(half) == pytest.approx(0.5)


def _png(array: np.ndarray) -> bytes:
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = (np.clip(array / (array.max() or 1), 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def non_chest_images(xray: np.ndarray) -> dict[str, bytes]:
    """Photos, text, textures, microscopy, phantoms, synthetic images and misused chest films."""
    rng = np.random.default_rng(7)
    named = ("camera", "coins", "moon", "astronaut", "chelsea", "text", "page", "clock", "brick", "cell",
             "checkerboard", "binary_blobs")
    images = {name: getattr(skimage.data, name)() for name in named}
    images["uniform noise"] = (rng.random((300, 300)) * 255).astype(np.uint8)
    images["flat grey"] = np.full((256, 256), 128, np.uint8)
    images["black"] = np.zeros((200, 240), np.uint8)
    images["horizontal gradient"] = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))
    from sklearn.datasets import load_digits

    digit = load_digits().images[3]
    images["handwritten digit"] = np.kron(digit / 16 * 255, np.ones((24, 24))).astype(np.uint8)
    images["inverted chest film"] = 255 - xray
    images["sideways chest film"] = np.rot90(xray).copy()
    return {name: _png(a) for name, a in images.items()}


@pytest.mark.data
def test_bundled_gate_flags_non_chest_images_and_passes_new_patients(bundled):
    folder = external_dir()
    assert folder is not None, "the chest X-ray data folder has no external/ beside train/"
    assert trust_for(bundled.spec) is not None, "the bundled checkpoint has no trust data (python -m core.calibrate)"
    films = index_folder(folder, CLASS_NAMES)
    xray = (load_image(films.paths[0]).array * 255).astype(np.uint8)
    results = {name: assess(bundled, load_image(data)) for name, data in non_chest_images(xray).items()}
    missed = [name for name, r in results.items() if r.in_distribution]
    assert len(missed) <= 0.1 * len(results), f"not flagged: {missed}"
    assert all(r.ood_reason for r in results.values() if not r.in_distribution)
    sample = films.paths[::4]  # every 4th new-patient film: the gate was set to flag 5 % of all of them
    flagged = [p.name for p in sample if not assess(bundled, load_image(p)).in_distribution]
    assert len(flagged) <= 0.12 * len(sample), flagged
