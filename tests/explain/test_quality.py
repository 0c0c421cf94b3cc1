"""Quality of explanations: deletion/insertion against hand-built images, the sanity check on a trained
vs randomised network (and its median / IQR / verdict on maps with hand-computed ranks), the trust pipeline,
agreement and stability, and the plain-language readings."""

import threading

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from torch import nn

from core.explain import explain, quality
from core.explain.base import Explanation, blur
from core.explain.quality import (
    Curve,
    SanityCheck,
    Trust,
    agreement,
    cascade,
    cascade_layers,
    deletion,
    impute,
    insertion,
    random_map,
    randomised_copy,
    rank_correlation,
    read_agreement,
    read_deletion,
    read_insertion,
    read_sanity,
    read_stability,
    reference_curves,
    road,
    road_curve,
    sanity_check,
    sanity_rho,
    stability,
    top_layers,
    top_overlap,
    trust,
)

SIDE = 32
REGION = (slice(4, 12), slice(20, 28))  # the only pixels the synthetic model looks at


class RegionEnergy(nn.Module):
    """Class-1 logit = 8 * mean(x^2 over REGION) - 4: zeroing or blurring the region's ±1 texture kills it."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(8.0), requires_grad=False)
        mask = torch.zeros(SIDE, SIDE)
        mask[REGION] = 1
        self.register_buffer("mask", mask / mask.sum())
        self.pixels = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = (self.pixels(x) ** 2 * self.mask).flatten(1).sum(1)
        logit = self.gain * energy - 4
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def textured_image() -> torch.Tensor:
    """1 x 1 x SIDE x SIDE: a ±1 checkerboard everywhere (blur removes it)."""
    i, j = np.indices((SIDE, SIDE))
    return torch.tensor(np.where((i + j) % 2, 1.0, -1.0), dtype=torch.float32)[None, None]


def correct_map() -> np.ndarray:
    m = np.zeros((SIDE, SIDE))
    m[REGION] = 1
    return m


def pixel_noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((SIDE, SIDE))


@pytest.mark.parametrize("baseline", ["zero", "blur", "mean"])
def test_deletion_and_insertion_prefer_the_correct_map(baseline):
    model, x = RegionEnergy(), textured_image()
    kw = {"baseline": baseline}
    good_del, bad_del = deletion(model, x, correct_map(), 1, **kw), deletion(model, x, pixel_noise(), 1, **kw)
    good_ins, bad_ins = insertion(model, x, correct_map(), 1, **kw), insertion(model, x, pixel_noise(), 1, **kw)
    assert good_del.auc < 0.2 < 0.4 < bad_del.auc
    assert good_ins.auc > 0.8 > 0.6 > bad_ins.auc
    assert good_del.scores[0] == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item(), abs=1e-6)
    if baseline != "blur":  # zero and the image's mean (0 here) leave no texture at all
        assert good_del.scores[-1] == pytest.approx(torch.sigmoid(torch.tensor(-4.0)).item(), abs=1e-6)
    assert "fall fast" in read_deletion(good_del) and "holds up" not in read_deletion(good_del)
    assert "falls faster than with random regions (AUC" in read_deletion(good_del, bad_del)
    assert "the map points at what the model uses" in read_deletion(good_del, bad_del)
    assert "falls slower" in read_deletion(bad_del, good_del)
    assert "back fast" in read_insertion(good_ins)
    assert "comes back faster than with random regions" in read_insertion(good_ins, bad_ins)
    assert read_deletion(good_del).startswith(f"deletion AUC {good_del.auc:.2f}:")


def test_the_defaults_are_the_measured_baselines():
    model, x = RegionEnergy(), textured_image()
    assert (quality.DELETION_BASELINE, quality.INSERTION_BASELINE) == ("zero", "blur")
    assert deletion(model, x, correct_map(), 1).auc == deletion(model, x, correct_map(), 1, baseline="zero").auc
    assert insertion(model, x, correct_map(), 1).auc == insertion(model, x, correct_map(), 1, baseline="blur").auc


def curve(kind: str, auc: float, start: float = 0.9, end: float = 0.9) -> Curve:
    """A two-point curve with the given AUC and end points (enough for the readings)."""
    return Curve(kind, np.array([0.0, 1.0]), np.array([start, end]), auc)


def test_readings_count_a_map_better_only_outside_the_random_maps_range():
    ref = curve("deletion", 0.50)
    randoms = (0.45, 0.50, 0.55)
    assert "faster than with random regions (AUC 0.50, 3 maps 0.45–0.55), by 0.100" in read_deletion(
        curve("deletion", 0.40), ref, randoms=randoms)
    inside = read_deletion(curve("deletion", 0.47), ref, randoms=randoms)
    assert "about as fast as with random regions" in inside and "no better than chance" in inside
    assert "slower than with random regions" in read_deletion(curve("deletion", 0.60), ref, randoms=randoms)
    # without the spread, any difference from the mean counts
    assert "faster than with random regions (AUC 0.50), by 0.030" in read_deletion(curve("deletion", 0.47), ref)
    ins_ref = curve("insertion", 0.50, start=0.1, end=0.9)
    assert "the highlighted pixels carry the evidence" in read_insertion(curve("insertion", 0.7), ins_ref,
                                                                        randoms=(0.45, 0.55))
    assert "the evidence lies elsewhere" in read_insertion(curve("insertion", 0.3), ins_ref, randoms=(0.45, 0.55))


def test_readings_say_when_random_orders_barely_move_the_score():
    """When the fill barely moves the score (the previous bundled model under blur: random AUC 0.93 of 0.95) a map
    cannot fall much faster, so 'better than random' by 0.005 must not read as evidence, nor 'adds little' as a
    verdict on the map."""
    flat = curve("deletion", 0.93, start=0.95)
    line = read_deletion(curve("deletion", 0.925, start=0.95), flat, randoms=(0.928, 0.93, 0.932))
    assert "faster than with random regions" in line and "by 0.005" in line
    assert "barely moves this model's score even in a random order (random AUC 0.93, intact image 0.95)" in line
    assert "shows little either way" in line and "points at" not in line
    back = read_insertion(curve("insertion", 0.92, start=0.9, end=0.95), curve("insertion", 0.91, end=0.95))
    assert "brings this model's score back at once" in back and "shows little either way" in back


@pytest.mark.parametrize(("method", "check", "phrase"), [
    ("lime", "insertion", "LIME beat random maps on 98% of them, by a median 0.020 AUC"),
    ("saliency", "deletion", "about as often as a coin toss: this check cannot tell its maps from random ones"),
    ("eigen_cam", "insertion", "on 28% of them: it usually loses to random maps here"),
    ("deeplift", "deletion", "68% of them, by a median 0.079 AUC: more often than chance, not reliably; "
                             "but under ROAD (removed pixels filled from their neighbours) only on 20%"),
])
def test_readings_carry_the_methods_benchmark_record_for_the_measured_model(method, check, phrase):
    read = read_deletion if check == "deletion" else read_insertion
    measured = quality.DELETION_BASELINE if check == "deletion" else quality.INSERTION_BASELINE
    ref = curve(check, 0.5, start=0.9 if check == "deletion" else 0.1)
    line = read(curve(check, 0.45), ref, method=method, model=quality.MEASURED_MODEL, baseline=measured)
    assert f"; on {quality.MEASURED_IMAGES} new-patient films " in line and phrase in line
    plain = read(curve(check, 0.45), ref)
    assert read(curve(check, 0.45), ref, method=method, model="another-model", baseline=measured) == plain
    assert read(curve(check, 0.45), ref, method=method, model=quality.MEASURED_MODEL, baseline="black") == plain
    assert "new-patient" not in read(curve(check, 0.45), ref, method="unmeasured", model=quality.MEASURED_MODEL,
                                     baseline=measured)
    assert "ROAD" not in read(curve(check, 0.45), ref, method="lime", model=quality.MEASURED_MODEL, baseline=measured)


def test_the_benchmark_record_covers_every_registered_method_with_shares():
    from core.explain import METHODS

    assert set(quality.FAITHFULNESS) <= set(METHODS)
    for method, checks in quality.FAITHFULNESS.items():
        assert set(checks) == {"deletion", "insertion", "road"}, method
        assert all(0 <= share <= 1 and abs(margin) < 1 for share, margin in checks.values()), method


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
@pytest.mark.parametrize("baseline", ["zero", "blur", "mean", "black"])
def test_curve_points_equal_a_pixel_by_pixel_computation(kind, baseline):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3)).eval()
    x = torch.randn(1, 3, 16, 16)
    heat = np.random.default_rng(1).random((16, 16))
    steps = 8
    curve = (deletion if kind == "deletion" else insertion)(model, x, heat, 2, steps=steps, baseline=baseline,
                                                            batch_size=3)
    fill = {"zero": torch.zeros_like(x), "blur": blur(x), "black": torch.zeros_like(x),  # a bare module: [0, 1] input
            "mean": x.mean(dim=(2, 3), keepdim=True).expand_as(x)}[baseline]
    order = np.argsort(-heat.ravel())
    expected = []
    for k in range(steps + 1):
        n = round(k * 256 / steps)
        chosen = np.zeros(256, bool)
        chosen[order[:n]] = True
        chosen = torch.from_numpy(chosen.reshape(16, 16))
        img = torch.where(chosen, fill, x) if kind == "deletion" else torch.where(chosen, x, fill)
        with torch.no_grad():
            expected.append(float(torch.softmax(model(img), 1)[0, 2]))
    np.testing.assert_allclose(curve.scores, expected, atol=1e-6)
    np.testing.assert_allclose(curve.fractions, np.linspace(0, 1, steps + 1))
    assert curve.auc == pytest.approx(np.trapezoid(expected, np.linspace(0, 1, steps + 1)), abs=1e-6)


def test_random_map_is_smooth_seeded_and_a_fair_reference():
    a, b = random_map((SIDE, SIDE), seed=1), random_map((SIDE, SIDE), seed=2)
    assert a.shape == (SIDE, SIDE) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, random_map((SIDE, SIDE), seed=1))
    assert not np.array_equal(a, b)
    assert np.abs(np.diff(a, axis=1)).mean() < 0.2 * np.abs(np.diff(random_map((SIDE, SIDE), grid=SIDE), axis=1)).mean()
    model, x = RegionEnergy(), textured_image()
    assert deletion(model, x, correct_map(), 1).auc < deletion(model, x, a, 1).auc


def test_curves_refuse_mismatched_maps_and_bad_baselines():
    model, x = RegionEnergy(), textured_image()
    with pytest.raises(ValueError, match="does not match"):
        deletion(model, x, np.zeros((SIDE, SIDE + 1)))
    with pytest.raises(ValueError, match="baseline must be one of"):
        deletion(model, x, correct_map(), baseline="purple")
    with pytest.raises(ValueError, match="baseline must be one of"):
        insertion(model, x, correct_map(), baseline="uniform")


# ---------------------------------------------------------------- ROAD


def test_imputation_by_hand_on_a_3_x_3_image():
    """Sides weigh 1/6, diagonals 1/12, over the neighbours inside the image; removed neighbours are unknowns."""
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])[None]
    centre = np.zeros((3, 3), bool)
    centre[1, 1] = True
    sides, corners = (2 + 4 + 6 + 8) / 6, (1 + 3 + 7 + 9) / 12
    assert float(impute(x, centre, noise=0)[0, 1, 1]) == pytest.approx(sides + corners, abs=1e-6)
    corner = np.zeros((3, 3), bool)
    corner[0, 0] = True  # in-image neighbours (0, 1), (1, 0) at 1/6 and (1, 1) at 1/12: weights sum to 5/12
    assert float(impute(x, corner, noise=0)[0, 0, 0]) == pytest.approx((2 / 6 + 4 / 6 + 5 / 12) / (5 / 12), abs=1e-6)
    pair = np.zeros((3, 3), bool)
    pair[0, 0] = pair[0, 1] = True
    # (5 / 12) u = u' / 6 + 4 / 6 + 5 / 12 and (8 / 12) u' = u / 6 + (3 + 5) / 6 + (4 + 6) / 12, i.e.
    # 5 u - 2 u' = 13 and -2 u + 8 u' = 26: u = u' = 13 / 3
    filled = impute(x, pair, noise=0)
    assert float(filled[0, 0, 0]) == pytest.approx(13 / 3, abs=1e-5)
    assert float(filled[0, 0, 1]) == pytest.approx(13 / 3, abs=1e-5)
    kept = ~pair
    assert torch.equal(filled[0][torch.from_numpy(kept)], x[0][torch.from_numpy(kept)])


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # numpy on torch tensors in road.py
@pytest.mark.parametrize(("channels", "share"), [(1, 0.1), (1, 0.6), (3, 0.35), (3, 0.9)])
def test_imputation_equals_pytorch_grad_cam_noisy_linear_imputer(channels, share):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    x = torch.randn(channels, 19, 23, generator=torch.Generator().manual_seed(channels))
    smooth = random_map((19, 23), seed=channels, grid=4)
    for removed in (smooth > np.quantile(smooth, 1 - share), pixel_noise(channels)[:19, :23] < share):
        theirs = NoisyLinearImputer(noise=0.0)(x, torch.from_numpy(np.float32(~removed)))  # their mask: 1 = kept
        torch.testing.assert_close(impute(x, removed, noise=0.0), theirs, atol=1e-5, rtol=1e-5)


def test_imputation_noise_is_seeded_and_only_on_removed_pixels():
    x = torch.randn(2, 20, 20, generator=torch.Generator().manual_seed(0))
    removed = random_map((20, 20), seed=4, grid=4) > 0.5
    clean = impute(x, removed, noise=0.0)
    a = impute(x, removed, noise=0.05, generator=torch.Generator().manual_seed(1))
    b = impute(x, removed, noise=0.05, generator=torch.Generator().manual_seed(1))
    c = impute(x, removed, noise=0.05, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    gone = torch.from_numpy(removed)
    assert torch.equal(a[:, ~gone], x[:, ~gone])
    assert float((a - clean)[:, gone].std()) == pytest.approx(0.05, rel=0.15)
    with pytest.raises(ValueError, match="at least one kept pixel"):
        impute(x, np.ones((20, 20), bool))
    with pytest.raises(ValueError, match="does not match"):
        impute(x, np.ones((20, 21), bool))


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # numpy on torch tensors in road.py
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_equals_pytorch_grad_cam_without_noise(order):
    """pytorch-grad-cam's ROAD at percentile p removes the pixels at or above the map's p-th percentile (MoRF;
    LeRF: of 1 - map): the same pixels as ours when we remove as many, so without noise the same probabilities."""
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3)).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    heat = pixel_noise(2)[:16, :16].astype(np.float32)  # distinct values: no ties
    percentiles = (10, 35, 50, 90)
    counts = [int(((heat if order == "morf" else 1 - heat) >= np.percentile(heat if order == "morf" else 1 - heat,
                                                                           p)).sum()) for p in percentiles]
    curve = road_curve(model, x, heat, 2, order=order, fractions=[c / 256 for c in counts], noise=0.0)
    metric = ROADMostRelevantFirst if order == "morf" else ROADLeastRelevantFirst
    theirs = []
    for p in percentiles:
        m = metric(p)
        m.perturbation.imputer.noise = 0.0
        theirs.append(float(m(x, heat[None], [ClassifierOutputSoftmaxTarget(2)], model, return_diff=False)[0]))
    np.testing.assert_allclose(curve.scores, theirs, atol=1e-5)
    with torch.no_grad():
        assert curve.full == pytest.approx(float(torch.softmax(model(x), 1)[0, 2]), abs=1e-6)
    assert curve.mean == pytest.approx(np.mean(theirs), abs=1e-5)
    assert np.ptp(theirs) > 0.01  # removing more changes the score: the comparison has something to compare


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # numpy on torch tensors in road.py
def test_road_with_noise_stays_close_to_pytorch_grad_cam_and_is_seeded():
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 14 * 14, 2)).eval()
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    heat = pixel_noise(3)[:16, :16].astype(np.float32)
    ours = road_curve(model, x, heat, 1, fractions=(0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1))  # noise 0.01
    torch.manual_seed(0)
    theirs = ROADMostRelevantFirstAverage()(x, heat[None], [ClassifierOutputSoftmaxTarget(1)], model)
    assert ours.mean - ours.full == pytest.approx(float(theirs[0]), abs=0.01)  # they report the change
    again = road_curve(model, x, heat, 1, fractions=(0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1))
    np.testing.assert_array_equal(ours.scores, again.scores)


def test_road_prefers_the_correct_map_in_both_orders():
    model, x = RegionEnergy(), textured_image()
    good, bad = road(model, x, correct_map(), 1), road(model, x, random_map((SIDE, SIDE), 3, 4), 1)
    assert good.morf.order == "morf" and good.lerf.order == "lerf"
    assert good.morf.mean < bad.morf.mean and good.lerf.mean > bad.lerf.mean
    assert good.combined == pytest.approx((good.lerf.mean - good.morf.mean) / 2)
    assert good.combined > 0.3 > bad.combined
    assert good.morf.scores[0] < 0.1 and good.lerf.scores[-1] > 0.9  # 10 % removed kills it; 90 % kept it
    with pytest.raises(ValueError, match="order"):
        road_curve(model, x, correct_map(), order="both")
    with pytest.raises(ValueError, match="fractions"):
        road_curve(model, x, correct_map(), fractions=(0.5, 1.0))


# ---------------------------------------------------------------- sanity check on a trained network


def blob_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise images with a faint 6 x 6 square in the left (class 0) or right (class 1) half (hard enough that
    the trained network's probabilities do not saturate); returns images, labels and the squares' masks."""
    x = 0.6 * torch.randn(n, 1, SIDE, SIDE, generator=generator)
    y = torch.randint(0, 2, (n,), generator=generator)
    rows = torch.randint(0, SIDE - 6, (n,), generator=generator)
    cols = torch.randint(0, SIDE // 2 - 6, (n,), generator=generator) + y * SIDE // 2
    squares = torch.zeros(n, SIDE, SIDE, dtype=torch.bool)
    for i in range(n):
        squares[i, rows[i]:rows[i] + 6, cols[i]:cols[i] + 6] = True
    return x + 0.8 * squares[:, None], y, squares


@pytest.fixture(scope="module")
def trained_net() -> nn.Module:
    """A small CNN trained for 30 steps to tell left squares from right squares (accuracy > 95%)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                        nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(16 * 8 * 8, 2))
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(30):
        x, y, _ = blob_batch(32, gen)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y, _ = blob_batch(200, torch.Generator().manual_seed(99))
    with torch.no_grad():
        assert (net(x).argmax(1) == y).float().mean() > 0.95
    return net


def test_sanity_check_separates_trained_from_randomised(trained_net):
    x, y, square = blob_batch(1, torch.Generator().manual_seed(5))
    options = {"n_samples": 300, "n_segments": 25, "compactness": 40.0, "hide": "zero"}  # a 5 x 5 grid-like split
    check = sanity_check(trained_net, x, "kernel_shap", **options)
    assert check.trained.target == int(y) and 0.6 < check.trained.score < 0.999
    assert check.layers == ("4", "7") and len(check.randomised) == len(check.correlations) == quality.SANITY_COPIES
    assert check.seeds == tuple(range(quality.SANITY_COPIES))
    assert check.correlations == tuple(sanity_rho(check.trained.heatmap, r.heatmap) for r in check.randomised)
    assert check.median == pytest.approx(np.median(np.abs(check.correlations)))
    assert check.median < 0.5
    assert "reflects what the model learned" in read_sanity(check) or "changes partly" in read_sanity(check)
    # The same check with nothing randomised gives identical maps: the test can tell the difference.
    control = sanity_check(trained_net, x, "kernel_shap", layers=(), copies=3, **options)
    assert control.median == pytest.approx(1.0) and control.verdict == "structure"
    assert "barely changes" in read_sanity(control)
    # The trained map points at the square: its most positive superpixel covers most of it.
    top = check.trained.extras["segments"] == check.trained.extras["top_positive"][0]
    assert top[square[0].numpy()].mean() > 0.5


def test_sanity_check_reuses_an_existing_explanation(trained_net, monkeypatch):
    x, _, _ = blob_batch(1, torch.Generator().manual_seed(5))
    fresh = sanity_check(trained_net, x, "grad_cam", 1, layer="2", copies=3)
    calls = []
    real = quality.explain
    monkeypatch.setattr(quality, "explain", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    reused = sanity_check(trained_net, x, fresh.trained, copies=3)
    assert len(calls) == 3  # the copies only: the trained map is taken as given
    assert reused.trained is fresh.trained and reused.trained.params["layer"] == "2"
    assert reused.correlations == pytest.approx(fresh.correlations, abs=1e-6)
    assert all(r.target == 1 and r.params == fresh.trained.params for r in reused.randomised)
    with pytest.raises(ValueError, match="differs"):
        sanity_check(trained_net, x, fresh.trained, 0)
    with pytest.raises(ValueError, match="layer"):
        sanity_check(trained_net, x, fresh.trained, layer="0")
    with pytest.raises(ValueError, match="copies"):
        sanity_check(trained_net, x, fresh.trained, copies=0)


# ---------------------------------------------------------------- median, IQR and verdict on hand-ranked maps
# 2 x 2 maps: Spearman rho = 1 - 6 * sum(d^2) / (4 * 15) = 1 - sum(d^2) / 10 against the ranks TRAINED, so every
# rho below is computed by hand from the rank differences d.

TRAINED = [[1, 2], [3, 4]]
FLAT = [[5, 5], [5, 5]]
RANKED = {  # rho against TRAINED: map with that rho (sum of d^2)
    1.0: [[1, 2], [3, 4]], 0.8: [[2, 1], [3, 4]], 0.6: [[2, 1], [4, 3]], 0.2: [[3, 2], [1, 4]],
    0.0: [[2, 4], [1, 3]], -0.2: [[4, 1], [2, 3]], -0.6: [[3, 4], [1, 2]], -0.8: [[4, 2], [3, 1]],
    -1.0: [[4, 3], [2, 1]],
}


class Copy(nn.Module):
    """Stands for the randomised copy drawn with ``seed``."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed


def hand_check(monkeypatch, copies: list, trained=TRAINED, first_seed: int = 0) -> SanityCheck:
    """sanity_check where the copy with seed ``first_seed + i`` has the map ``copies[i]``."""
    monkeypatch.setattr(quality, "randomised_copy", lambda net, layers, seed: (Copy(seed), tuple(layers)))

    def fake_explain(model, x, method, target=None, **options):
        heat = copies[model.seed - first_seed] if isinstance(model, Copy) else trained
        return [Explanation(method, np.asarray(heat, dtype=np.float64), 1, "one", 0.9, {}, 0.0, False)]

    monkeypatch.setattr(quality, "explain", fake_explain)
    return sanity_check(nn.Linear(1, 1), torch.zeros(1, 1, 2, 2), "hand", layers=("head",), seed=first_seed,
                        copies=len(copies))


@pytest.mark.parametrize(("rhos", "median", "quartiles", "verdict"), [
    # |rho| = 0.8 0.8 0.8 0.8 0.6: structure. Signed rho has median 0.6 and spans -0.8 .. 0.8 (a signed
    # implementation says "mixed" or "inconclusive").
    ((-0.8, -0.8, 0.8, 0.8, 0.6), 0.8, (0.8, 0.8), "structure"),
    # |rho| = 0 0.2 0.2 0.2 1: median 0.2 and IQR 0.2 .. 0.2, the outlier ignored (the mean, 0.32, says "mixed").
    ((0.0, 0.2, -0.2, 0.2, 1.0), 0.2, (0.2, 0.2), "learned"),
    # |rho| = 0 0.2 0.6 0.8 1: median 0.6 ("mixed" alone) but the IQR 0.2 .. 0.8 spans all three bands.
    ((0.0, 0.2, -0.6, 0.8, -1.0), 0.6, (0.2, 0.8), "inconclusive"),
    # |rho| = 0.2 0.2 0.6 0.6 0.6: the IQR 0.2 .. 0.6 (0.4) is wider than the narrowest band (0.3).
    ((0.2, -0.2, 0.6, 0.6, -0.6), 0.6, (0.2, 0.6), "inconclusive"),
    # |rho| = 0.6 0.6 0.6 0.8 1: a narrow IQR (0.2); the verdict is the median's band, not the upper quartile's.
    ((0.6, 0.6, 0.6, -0.8, 1.0), 0.6, (0.6, 0.8), "mixed"),
])
def test_median_iqr_and_verdict_from_hand_ranked_maps(monkeypatch, rhos, median, quartiles, verdict):
    check = hand_check(monkeypatch, [RANKED[r] for r in reversed(rhos)], first_seed=7)
    assert check.seeds == (7, 8, 9, 10, 11)
    assert check.correlations == pytest.approx(tuple(reversed(rhos)), abs=1e-9)  # copy i has seed 7 + i
    assert check.median == pytest.approx(median, abs=1e-9)
    assert check.quartiles == pytest.approx(quartiles, abs=1e-9)
    assert check.iqr == pytest.approx(quartiles[1] - quartiles[0], abs=1e-9)
    assert check.verdict == verdict
    reading = read_sanity(check)
    assert reading.startswith(f"sanity check median |ρ| = {median:.2f} over 5 randomised copies (IQR "
                              f"{quartiles[0]:.2f}–{quartiles[1]:.2f}):")
    words = {"structure": "barely changes", "learned": "changes completely", "mixed": "changes partly",
             "inconclusive": "inconclusive"}
    assert words[verdict] in reading
    assert all(other not in reading for v, other in words.items() if v != verdict)
    assert "-0." not in reading  # the size of rho, never its sign


def test_one_or_two_copies_never_give_a_verdict(monkeypatch):
    for copies in ([RANKED[1.0]], [RANKED[-1.0], RANKED[1.0]]):
        check = hand_check(monkeypatch, copies)
        assert check.median == pytest.approx(1.0) and check.verdict == "inconclusive"
        assert "inconclusive" in read_sanity(check) and "barely changes" not in read_sanity(check)
    assert read_sanity(hand_check(monkeypatch, [RANKED[1.0]])).startswith("sanity check median |ρ| = 1.00 over 1 "
                                                                          "randomised copy:")


def test_flat_maps_give_defined_correlations_not_nan(monkeypatch):
    # A flat copy shares no ordering with the structured trained map: rho = 0 (it changed completely).
    check = hand_check(monkeypatch, [FLAT, np.zeros((2, 2)), FLAT, RANKED[0.2], RANKED[-0.2]])
    assert check.correlations == pytest.approx((0.0, 0.0, 0.0, 0.2, -0.2), abs=1e-9)
    assert check.median == 0.0 and check.quartiles == pytest.approx((0.0, 0.2)) and check.verdict == "learned"
    assert not check.flat and "nan" not in read_sanity(check)
    # A flat trained map ranks nothing: two flat maps rank alike (rho = 1), but there is nothing to judge.
    flat = hand_check(monkeypatch, [FLAT, np.zeros((2, 2)), RANKED[0.8], FLAT, FLAT], trained=np.ones((2, 2)))
    assert flat.correlations == (1.0, 1.0, 0.0, 1.0, 1.0) and flat.median == 1.0
    assert flat.flat and flat.verdict == "inconclusive"
    assert "flat" in read_sanity(flat) and "barely changes" not in read_sanity(flat)
    assert sanity_rho(FLAT, np.zeros((2, 2))) == 1.0 and sanity_rho(TRAINED, FLAT) == sanity_rho(FLAT, TRAINED) == 0
    assert sanity_rho(TRAINED, RANKED[-0.6]) == pytest.approx(-0.6)
    with pytest.raises(ValueError, match="differ in size"):
        sanity_rho(TRAINED, np.zeros(5))


# ---------------------------------------------------------------- cascade and the trust pipeline


def test_cascade_randomises_deeper_blocks_and_keeps_each_copys_weights(trained_net):
    from core.nets import WideResNet18

    resnet = cascade_layers(WideResNet18(width=8, in_channels=1, num_classes=2))
    assert resnet[:4] == ("fc", "layer4.1", "layer4.0", "layer3.1") and resnet[-3:] == ("layer1.0", "bn1", "conv1")
    assert cascade_layers(trained_net) == ("7", "4", "2", "0")
    x, _, _ = blob_batch(1, torch.Generator().manual_seed(5))
    checks = cascade(trained_net, x, "saliency", copies=2)
    assert [c.layers for c in checks] == [("7",), ("7", "4"), ("7", "4", "2"), ("7", "4", "2", "0")]
    assert all(c.trained is checks[0].trained for c in checks)
    deepest = sanity_check(trained_net, x, checks[0].trained, layers=("7", "4", "2", "0"), copies=2)
    assert checks[-1].correlations == pytest.approx(deepest.correlations, abs=1e-6)
    shallow, _ = randomised_copy(trained_net, ("7",), seed=1)
    deep, _ = randomised_copy(trained_net, ("7", "4"), seed=1)
    assert torch.equal(shallow.state_dict()["7.weight"], deep.state_dict()["7.weight"])


def test_trust_equals_its_parts_and_takes_a_cached_reference(trained_net, monkeypatch):
    x, _, _ = blob_batch(1, torch.Generator().manual_seed(5))
    e = explain(trained_net, x, "grad_cam")[0]
    reference = reference_curves(trained_net, x, e.target, seeds=(0, 1), grid=4, steps=8)
    maps = [random_map((SIDE, SIDE), s, 4) for s in (0, 1)]
    by_hand = [deletion(trained_net, x, m, e.target, steps=8, baseline=quality.DELETION_BASELINE) for m in maps]
    assert reference.deletion.auc == pytest.approx(np.mean([c.auc for c in by_hand]), abs=1e-6)
    np.testing.assert_allclose(reference.deletion.scores, np.mean([c.scores for c in by_hand], 0), atol=1e-6)
    assert (reference.target, reference.seeds, reference.grid, reference.baseline) == (
        e.target, (0, 1), 4, quality.DELETION_BASELINE)
    assert reference.insertion_baseline == quality.INSERTION_BASELINE
    assert reference.deletion_aucs == pytest.approx([c.auc for c in by_hand], abs=1e-9)
    inserted = [insertion(trained_net, x, m, e.target, steps=8, baseline=quality.INSERTION_BASELINE) for m in maps]
    assert reference.insertion_aucs == pytest.approx([c.auc for c in inserted], abs=1e-9)
    seen: list[float] = []
    result = trust(trained_net, x, e, steps=8, reference=reference, copies=3, progress=seen.append)
    assert isinstance(result, Trust) and result.reference is reference
    assert result.deletion.auc == pytest.approx(deletion(trained_net, x, e.heatmap, e.target, steps=8,
                                                         baseline=quality.DELETION_BASELINE).auc, abs=1e-6)
    assert result.insertion.auc == pytest.approx(insertion(trained_net, x, e.heatmap, e.target, steps=8).auc,
                                                 abs=1e-6)
    assert result.sanity.trained is e
    assert result.sanity.correlations == pytest.approx(sanity_check(trained_net, x, e, copies=3).correlations,
                                                       abs=1e-6)
    assert seen and seen == sorted(seen) and seen[0] > 0 and seen[-1] <= 1
    assert result.model is None  # a bare module: no benchmark record to quote
    assert result.readings == (read_deletion(result.deletion, reference.deletion, randoms=reference.deletion_aucs),
                               read_insertion(result.insertion, reference.insertion,
                                              randoms=reference.insertion_aucs), read_sanity(result.sanity))
    assert "new-patient" not in " ".join(result.readings)
    with pytest.raises(ValueError, match="reference was computed"):
        trust(trained_net, x, e, steps=16, reference=reference, copies=1)
    with pytest.raises(ValueError, match="reference was computed"):
        trust(trained_net, x, e, steps=8, insertion_baseline="mean", reference=reference, copies=1)


def test_trust_of_a_named_model_quotes_its_benchmark_record_and_black_uses_its_normalisation(trained_net):
    from core.zoo import LoadedModel, ModelSpec, Preprocessing

    prep = Preprocessing(SIDE, 1, (0.4,), (0.25,))
    spec = ModelSpec(quality.MEASURED_MODEL, "", "", prep, ("a", "b"), "", "", lambda: trained_net, lambda _m: None, "")
    loaded = LoadedModel(spec, trained_net, torch.device("cpu"))
    x, _, _ = blob_batch(1, torch.Generator().manual_seed(5))
    e = explain(trained_net, x, "grad_cam")[0]
    result = trust(loaded, x, e, steps=4, reference_seeds=(0,), grid=4, copies=1)
    assert result.model == quality.MEASURED_MODEL
    assert "Grad-CAM beat random maps on 44% of them: it usually loses to random maps here" in result.readings[0]
    assert "Grad-CAM beat random maps on 34% of them: it usually loses to random maps here" in result.readings[1]
    blurred = trust(loaded, x, e, steps=4, baseline="blur", reference_seeds=(0,), grid=4, copies=1)
    assert "new-patient" not in blurred.readings[0]  # measured with another fill: no record to quote
    assert "new-patient" in blurred.readings[1]
    black = quality.curve_baseline(loaded, x, "black")
    torch.testing.assert_close(black, torch.full_like(x, -0.4 / 0.25))


def test_randomised_copy_leaves_the_model_and_global_rng_alone(trained_net):
    before = {k: v.clone() for k, v in trained_net.state_dict().items()}
    state = torch.random.get_rng_state()
    copy_a, layers = randomised_copy(trained_net, seed=3)
    copy_b, _ = randomised_copy(trained_net, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    after = trained_net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for name, value in copy_a.state_dict().items():
        assert torch.equal(value, copy_b.state_dict()[name])
        changed = not torch.equal(value, before[name])
        assert changed == name.startswith(tuple(f"{layer}." for layer in layers)), name


def test_randomised_copies_made_concurrently_equal_those_made_alone():
    from core.nets import WideResNet18

    net = WideResNet18(width=8, in_channels=1, num_classes=2).eval()  # big enough for threads to interleave
    seeds = [0, 1, 2, 3] * 2
    alone = {s: randomised_copy(net, seed=s)[0].state_dict() for s in set(seeds)}
    together: list[dict] = [{} for _ in seeds]

    def work(i: int) -> None:
        together[i] = randomised_copy(net, seed=seeds[i])[0].state_dict()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(seeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s, state in zip(seeds, together, strict=True):
        assert all(torch.equal(alone[s][k], state[k]) for k in alone[s])


def test_top_layers_of_a_resnet_are_its_last_block_and_head():
    from core.nets import WideResNet18

    assert top_layers(WideResNet18(width=8, in_channels=1, num_classes=2)) == ("layer4.1", "fc")
    assert top_layers(WideResNet18(width=8, in_channels=1, num_classes=2), blocks=2) == ("layer4.0", "layer4.1", "fc")


# ---------------------------------------------------------------- agreement and stability


def test_agreement_of_a_map_with_itself_is_one_and_matches_independent_ranks():
    a, b = pixel_noise(1), pixel_noise(2)
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    assert rank_correlation(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert top_overlap(a, a, 0.1) == 1.0
    first, second = np.zeros(100), np.zeros(100)
    first[:10], second[5:15] = 1 + np.arange(10), 1 + np.arange(10)  # top-10 sets share 5 of 15 pixels
    assert top_overlap(first, second, 0.1) == pytest.approx(5 / 15)
    matrix = agreement({"a": a, "b": b, "a again": a})
    np.testing.assert_allclose(np.diag(matrix.spearman), 1)
    np.testing.assert_allclose(matrix.spearman, matrix.spearman.T)
    assert matrix.spearman[0, 2] == pytest.approx(1.0) and matrix.iou[0, 2] == 1.0
    assert matrix.spearman[0, 1] == pytest.approx(rank_correlation(a, b))
    assert "rank pixels alike" in read_agreement(1.0, 1.0)
    assert "disagree" in read_agreement(0.0, 0.05)
    assert np.isnan(rank_correlation(np.ones((4, 4)), a[:4, :4]))


def test_stability_over_seeds_matches_separate_runs(trained_net):
    x, _, _ = blob_batch(1, torch.Generator().manual_seed(6))
    # Compact SLIC regions on this noise image are a near-grid of ~25 whatever the CPU; at the default compactness
    # SLIC's count depends on float rounding (5 on an AMD EPYC: 2^5 coalitions enumerated, every seed equal).
    options = {"n_samples": 100, "n_segments": 25, "compactness": 100.0}
    result = stability(trained_net, x, "lime", seeds=(0, 1, 2), **options)
    maps = np.stack([explain(trained_net, x, "lime", seed=s, **options)[0].heatmap for s in (0, 1, 2)])
    np.testing.assert_allclose(result.mean, maps.mean(0), atol=1e-7)
    np.testing.assert_allclose(result.std, maps.std(0), atol=1e-7)
    assert result.std.max() > 0  # different seeds really draw different samples
    pairs = [rank_correlation(maps[i], maps[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert result.spearman == pytest.approx(np.mean(pairs))
    assert read_stability(result).startswith(f"stability ρ = {result.spearman:.2f} over 3 seeds:")


def test_readings_cover_their_ranges():
    fractions = np.linspace(0, 1, 11)
    slow = Curve("deletion", fractions, np.full(11, 0.9), 0.9)
    assert "holds up" in read_deletion(slow)
    assert "barely comes back" in read_insertion(Curve("insertion", fractions, np.r_[np.zeros(10), 0.9], 0.05))
    assert "changes completely" in read_sanity(0.1) and "changes completely" in read_sanity(-0.1)
    assert "barely changes" in read_sanity(-0.9)  # a sign flip keeps the map's structure
    assert read_sanity(-0.9).startswith("sanity check |ρ| = 0.90:")  # ...and the number shown is its size
    assert "changes partly" in read_sanity(-0.5)
