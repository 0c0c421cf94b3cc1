"""The live-training loop: its per-epoch numbers against scikit-learn on the network as it stands, seeded
determinism, the training-set sampler, model builders, augmentation and the disk-cached decoding."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, log_loss, recall_score, roc_auc_score
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from core.embed.cache import ArrayCache
from core.lessons import training as T

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 32


def synthetic(n: int, positive_share: float, seed: int, signal: float = 0.5) -> T.Images:
    """Noise films; PNEUMONIA ones carry a brighter square in the middle (``signal`` 0: indistinguishable)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < positive_share).long()
    x = torch.rand(n, 1, SIZE, SIZE, generator=g) * 0.5
    x[:, :, 10:22, 10:22] += signal * y.view(-1, 1, 1, 1)
    return T.Images(x.clamp(0, 1), y)


@pytest.fixture(scope="module")
def tiny() -> T.LabData:
    return T.LabData(synthetic(60, 0.6, 0), synthetic(40, 0.5, 1), synthetic(30, 0.4, 2), "synthetic")


SMALL = T.Settings(architecture="plain", width=4, epochs=2, batch_size=8, train_size=30, lr=0.05, optimiser="momentum")


def sklearn_score(model: nn.Module, images: T.Images, mean: float, std: float) -> dict[str, float]:
    """The numbers of one set from scikit-learn, on the network's evaluation-mode probabilities."""
    model.eval()
    with torch.no_grad():
        prob = torch.softmax(model((images.x - mean) / std), 1)[:, 1].double().numpy()
    y = images.y.numpy()
    pred = (prob >= 0.5).astype(int)
    return {"loss": log_loss(y, prob, labels=[0, 1]), "accuracy": accuracy_score(y, pred),
            "sensitivity": recall_score(y, pred), "specificity": recall_score(y, pred, pos_label=0),
            "roc_auc": roc_auc_score(y, prob), "called_positive": pred.mean(), "n": len(y)}


def as_dict(score: T.SetScore) -> dict[str, float]:
    return {k: v for k, v in dataclasses.asdict(score).items()}


def test_two_epochs_score_the_network_as_it_stands(tiny):
    run = T.LiveRun(tiny, dataclasses.replace(SMALL, architecture="resnet", dropout=0.3))
    assert run.mean == pytest.approx(float(run.train.x.mean())) and run.std == pytest.approx(float(run.train.x.std()))
    seen = []
    for record in run:  # paused at each yield: run.model holds the weights the record scored
        seen.append(record.epoch)
        for name in ("validation", "external"):
            expected = sklearn_score(run.model, getattr(tiny, name), run.mean, run.std)
            got = as_dict(getattr(record, name))
            assert got["n"] == expected["n"]
            for key in ("loss", "accuracy", "sensitivity", "specificity", "roc_auc", "called_positive"):
                assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), (record.epoch, name, key)
        assert record.train.n == 30 and not record.diverged
    assert seen == [1, 2]


def test_training_curve_averages_over_films_not_batches(tiny):
    """With a learning rate too small to move the weights and no dropout or batch norm, the running training
    numbers equal the network scored on the training films: the mean over films, with a short last batch."""
    settings = dataclasses.replace(SMALL, optimiser="sgd", lr=1e-12, batch_norm=False, batch_size=7, epochs=1,
                                   class_weighting=True)
    run = T.LiveRun(tiny, settings)
    record = next(iter(run))
    expected = sklearn_score(run.model, run.train, run.mean, run.std)
    got = as_dict(record.train)
    for key in ("loss", "accuracy", "sensitivity", "specificity", "roc_auc", "called_positive"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5), key  # plain CE although the loss is weighted


def test_same_seed_same_curves_and_callers_rng_untouched(tiny):
    settings = dataclasses.replace(SMALL, augment=True, dropout=0.2, architecture="resnet")
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = list(T.LiveRun(tiny, settings))
    assert torch.equal(torch.rand(3), expected_next)  # the run drew nothing from the global generator
    second = list(T.LiveRun(tiny, settings))
    other = list(T.LiveRun(tiny, dataclasses.replace(settings, seed=1)))
    for a, b in zip(first, second, strict=True):
        for name in ("train", "validation", "external"):
            np.testing.assert_allclose(list(as_dict(getattr(a, name)).values()),
                                       list(as_dict(getattr(b, name)).values()), rtol=1e-6)
    assert any(a.validation.loss != pytest.approx(c.validation.loss, rel=1e-4) for a, c in zip(first, other,
                                                                                                  strict=True))


def test_class_weights_are_sklearns_balanced():
    y = torch.tensor([0] * 3 + [1] * 17)
    np.testing.assert_allclose(T.class_weights(y).numpy(),
                               compute_class_weight("balanced", classes=np.array([0, 1]), y=y.numpy()), rtol=1e-6)


@pytest.mark.parametrize("weighting", [True, False])
def test_one_step_is_sgd_on_the_class_weighted_cross_entropy(tiny, weighting):
    """One full-batch SGD step of the run equals one step on F.cross_entropy(weight=balanced weights) (or the
    plain one) computed by hand from the same starting weights."""
    settings = dataclasses.replace(SMALL, optimiser="sgd", lr=0.5, batch_size=30, epochs=1,
                                   class_weighting=weighting)
    run = T.LiveRun(tiny, settings)
    start = copy.deepcopy(run.model)
    next(iter(run))
    x = (run.train.x - run.mean) / run.std
    y = run.train.y
    weight = torch.tensor(compute_class_weight("balanced", classes=np.array([0, 1]), y=y.numpy()),
                          dtype=torch.float32) if weighting else None
    start.train()
    F.cross_entropy(start(x), y, weight=weight).backward()
    for (name, p0), p1 in zip(start.named_parameters(), run.model.parameters(), strict=True):
        torch.testing.assert_close(p1.detach(), p0.detach() - 0.5 * p0.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_diverging_run_stops_with_a_flag(tiny):
    settings = dataclasses.replace(SMALL, optimiser="sgd", lr=1e8, batch_norm=False, epochs=6)
    records = list(T.LiveRun(tiny, settings))
    assert records[-1].diverged and len(records) < 6
    assert np.isnan(records[-1].validation.loss) and not any(r.diverged for r in records[:-1])


def test_sampler_keeps_share_size_and_seed():
    images = synthetic(400, 0.7, 5)
    a = T.sample_training_set(images, 100, 0.25, seed=0)
    assert len(a) == 100 and int((a.y == 0).sum()) == 25
    b = T.sample_training_set(images, 100, 0.25, seed=0)
    c = T.sample_training_set(images, 100, 0.25, seed=1)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert len({tuple(v.flatten()[:8].tolist()) for v in a.x}) == 100  # no film twice
    kept = T.sample_training_set(images, 100, None, seed=0)
    share = float((images.y == 0).float().mean())
    assert int((kept.y == 0).sum()) == round(100 * share)  # the folder's own mix
    with pytest.raises(ValueError, match=r"300 films with 90% NORMAL need 270 NORMAL films; the training fold has \d+"):
        T.sample_training_set(images, 300, 0.9, seed=0)
    with pytest.raises(ValueError, match="has 400 films"):
        T.sample_training_set(images, 401, None, seed=0)


@pytest.mark.parametrize("architecture", ["resnet", "plain"])
def test_model_builder_switches(architecture):
    torch.manual_seed(0)
    with_bn = T.build_model(architecture, 4, 0.3, True)
    without = T.build_model(architecture, 4, 0.0, False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    assert [m.p for m in with_bn.modules() if isinstance(m, nn.Dropout)] == [0.3]
    x = torch.rand(5, 1, 64, 64)
    with torch.no_grad():
        out = without.eval()(x)
    assert out.shape == (5, 2) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="Dropout"):
        T.build_model(architecture, 4, 1.0, True)


def test_unknown_choices_are_refused(tiny):
    with pytest.raises(ValueError, match="Unknown architecture"):
        T.build_model("vgg", 4, 0.0, True)
    with pytest.raises(ValueError, match="Unknown optimiser"):
        T.make_optimiser("rmsprop", iter([nn.Parameter(torch.zeros(1))]), 0.1, 0.0)
    with pytest.raises(ValueError, match="learning rate"):
        T.LiveRun(tiny, dataclasses.replace(SMALL, lr=0.0))
    with pytest.raises(ValueError, match="Unknown preset"):
        T.preset("nope")


def test_optimisers_are_the_named_ones():
    params = [nn.Parameter(torch.zeros(2))]
    assert isinstance(T.make_optimiser("adam", iter(params), 0.1, 0.01), torch.optim.AdamW)
    sgd = T.make_optimiser("sgd", iter(params), 0.1, 0.0)
    momentum = T.make_optimiser("momentum", iter(params), 0.1, 1e-4)
    assert sgd.defaults["momentum"] == 0.0 and momentum.defaults["momentum"] == 0.9
    assert momentum.defaults["weight_decay"] == 1e-4


def test_augmentation_jitters_each_film_and_stays_in_range():
    x = torch.rand(1, 1, SIZE, SIZE).repeat(6, 1, 1, 1)
    out = T.augment(x, torch.Generator().manual_seed(0))
    again = T.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, again)
    assert len({round(float((out[i] - out[0]).abs().sum()), 4) for i in range(6)}) == 6  # each film its own jitter


def test_presets_are_distinct_and_named():
    assert len(set(T.PRESET_NAMES)) == len(T.PRESETS) == 6
    assert len({p.settings for p in T.PRESETS}) == len(T.PRESETS)
    assert T.preset("Overfit a tiny training set").settings.train_size == 100
    reg = T.preset("Regularisation closes the gap").settings
    overfit = T.preset("Overfit a tiny training set").settings
    assert dataclasses.replace(reg, augment=False, dropout=0.0, weight_decay=0.0) == overfit  # one change: regularisers


@pytest.mark.data
def test_presets_fit_the_real_training_fold(real_lab):
    for p in T.PRESETS:
        assert len(T.sample_training_set(real_lab.train, p.settings.train_size, p.settings.normal_share, 0)) == \
            p.settings.train_size


@pytest.fixture(scope="module")
def real_lab(tmp_path_factory):
    from core.data import data_dir

    assert data_dir() is not None, "set CNNLENS_DATA or deselect with -m 'not data'"
    return T.load_lab_data(cache=ArrayCache(tmp_path_factory.mktemp("lab-cache")))


@pytest.mark.data
def test_decoded_once_and_cached(real_lab, tmp_path_factory):
    from core.data import CLASS_NAMES, data_dir, index_folder, patient_split

    train_idx, val_idx = patient_split(index_folder(data_dir(), CLASS_NAMES), T.VAL_FRACTION, T.SPLIT_SEED)
    assert real_lab.train.x.shape == (len(train_idx), 1, 64, 64)
    np.testing.assert_array_equal(real_lab.validation.y.numpy(), val_idx.labels)
    assert real_lab.external is not None
    assert 0 <= float(real_lab.external.x.min()) < float(real_lab.external.x.max()) <= 1
    # a second load with an empty cache folder but the same key reads what the first wrote
    cache = ArrayCache(tmp_path_factory.mktemp("lab-cache-2"))
    calls = []
    T.load_lab_data(cache=cache, progress=calls.append)
    assert calls and calls[-1] == pytest.approx(1.0)
    calls.clear()
    again = T.load_lab_data(cache=cache, progress=calls.append)
    assert not calls and torch.equal(again.validation.x, real_lab.validation.x) and again.key == real_lab.key


@pytest.mark.data
def test_a_folder_too_small_for_a_patient_fold_is_explained(tmp_path):
    from core.data import CLASS_NAMES, data_dir

    assert data_dir() is not None, "set CNNLENS_DATA or deselect with -m 'not data'"
    for label in CLASS_NAMES:
        (tmp_path / label).mkdir()
        for path in sorted((data_dir() / label).iterdir())[:2]:
            (tmp_path / label / path.name).symlink_to(path)
    with pytest.raises(ValueError, match=r"too few films for a patient-level validation fold \(2 NORMAL, 2 PNEUMONIA"):
        T.load_lab_data(tmp_path, None, cache=ArrayCache(tmp_path / "cache"))
