"""Hand-crafted vs learned features: learning-curve bookkeeping against scikit-learn, features against
scikit-image, per-group learning rates against Adam's first step, the chest split against the checkpoint's."""

import numpy as np
import pytest
import torch
from skimage.feature import hog, local_binary_pattern
from sklearn.model_selection import learning_curve

from core.data import patient_id
from core.embed.digits import DigitsCNN
from core.lessons import transfer as T
from core.nets import WideResNet18

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    return T.digits_task()


def test_curve_order_keeps_the_class_mix_in_every_prefix():
    labels = np.array([0] * 30 + [1] * 90 + [2] * 15)
    order = T.curve_order(labels, seed=3)
    assert sorted(order) == list(range(len(labels)))
    share = np.bincount(labels) / len(labels)
    for n in range(1, len(labels) + 1):
        counts = np.bincount(labels[order[:n]], minlength=3)
        assert np.all(np.abs(counts - n * share) <= 1.0), (n, counts)
    assert not np.array_equal(order, T.curve_order(labels, seed=4))


@pytest.mark.parametrize("classifier", T.CLASSIFIERS)
def test_learning_curve_equals_scikit_learns(classifier, digits):
    """Same prefixes, same estimator: sklearn.model_selection.learning_curve with the pool as the one training fold
    (train_sizes take its first n rows) must give the same AUC and accuracy at every size."""
    binary = np.isin(digits.pool.labels, (3, 8))
    x_pool = digits.pool.images[binary].reshape(binary.sum(), -1).astype(float)
    y_pool = (digits.pool.labels[binary] == 8).astype(int)
    held = digits.evals["held-out half"]
    keep = np.isin(held.labels, (3, 8))
    x_test, y_test = held.images[keep].reshape(keep.sum(), -1).astype(float), (held.labels[keep] == 8).astype(int)
    sizes = [6, 15, 40]
    points = T.classifier_curve("a", classifier, x_pool, y_pool, {"test": (x_test, y_test)}, sizes, 2)
    x_all, y_all = np.vstack([x_pool, x_test]), np.concatenate([y_pool, y_test])
    cv = [(np.arange(len(y_pool)), np.arange(len(y_pool), len(y_all)))]
    for scoring, field in (("roc_auc", "auc"), ("accuracy", "accuracy")):
        n, _, test = learning_curve(T.make_classifier(classifier), x_all, y_all, train_sizes=sizes, cv=cv,
                                    scoring=scoring, shuffle=False)
        assert [p.n_train for p in points] == list(n)
        np.testing.assert_allclose([getattr(p, field) for p in points], test[:, 0], rtol=1e-9)


def test_multiclass_curve_uses_one_vs_rest_auc(digits):
    x = digits.pool.images.reshape(len(digits.pool), -1).astype(float)
    held = digits.evals["held-out half"]
    xt = held.images.reshape(len(held), -1).astype(float)
    cv = [(np.arange(len(x)), np.arange(len(x), len(x) + len(xt)))]
    _, _, test = learning_curve(T.make_classifier("logistic regression"), np.vstack([x, xt]),
                                np.concatenate([digits.pool.labels, held.labels]), train_sizes=[30, 120], cv=cv,
                                scoring="roc_auc_ovr", shuffle=False)
    points = T.classifier_curve("a", "logistic regression", x, digits.pool.labels, {"t": (xt, held.labels)},
                                [30, 120], 10)
    np.testing.assert_allclose([p.auc for p in points], test[:, 0], rtol=1e-9)


def test_auc_is_nan_when_a_class_was_never_seen():
    labels = np.array([0, 1, 2, 2])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.4, 0.6]])
    auc, acc = T.scores(labels, proba, np.array([0, 1]), 3)
    assert np.isnan(auc) and acc == 0.5


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="between 4 and the pool"):
        T.check_sizes([2, 10], 50)
    with pytest.raises(ValueError, match="between 4 and the pool"):
        T.check_sizes([10, 60], 50)
    assert T.check_sizes([50, 10, 10], 50) == [10, 50]


def test_handcrafted_features_are_scikit_images(digits):
    images = digits.pool.head(3)
    feats = T.handcrafted_features(images, 32)
    img = torch.nn.functional.interpolate(images.floats(), size=(32, 32), mode="bilinear", antialias=True,
                                          align_corners=False)[:, 0].clamp(0, 1).numpy().astype(np.float64)
    expected_hog = hog(img[1], orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2))
    assert feats.shape == (3, len(expected_hog) + 10 + 9)
    np.testing.assert_allclose(feats[1, :len(expected_hog)], expected_hog, rtol=1e-5, atol=1e-6)
    lbp = local_binary_pattern((img[1] * 255).astype(np.uint8), 8, 1, method="uniform")
    np.testing.assert_allclose(feats[1, len(expected_hog):len(expected_hog) + 10],
                               np.histogram(lbp, bins=10, range=(0, 10))[0] / lbp.size, rtol=1e-6)
    intensity = feats[1, -9:]
    assert intensity[0] == pytest.approx(img[1].mean(), rel=1e-5)
    assert intensity[1] == pytest.approx(img[1].std(), rel=1e-5)
    assert intensity[4] == pytest.approx(np.median(img[1]), rel=1e-5)
    assert T.handcrafted_features(images, 32, ["LBP"]).shape == (3, 10)
    with pytest.raises(ValueError, match="Choose hand-crafted"):
        T.handcrafted_features(images, 32, ["SIFT"])
    with pytest.raises(ValueError, match="at least 16 px"):
        T.handcrafted_features(images, 8)


@pytest.mark.parametrize("factor", [0.0, 0.1])
def test_earlier_layers_learn_at_their_own_rate(factor):
    """Adam's first step moves every weight by lr (times the sign of its gradient, up to epsilon): with the earlier
    layers' group at lr·factor, their weights move by exactly that much less (0: frozen)."""
    model = T.fresh_head(WideResNet18(width=4, in_channels=1, num_classes=2), 2, seed=0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)  # no zero-initialised branch: every weight gets a gradient
    groups = T.parameter_groups(model, 1e-2, factor)
    assert len(groups) == (2 if factor else 1)
    named = dict(model.named_parameters())
    before = {k: v.detach().clone() for k, v in named.items()}
    x, y = torch.randn(8, 1, 32, 32), torch.tensor([0, 1] * 4)
    settings = T.CNNSettings(32, epochs=1, lr=1e-2, earlier_lr_factor=factor, batch_size=8, min_steps=1)
    T.train_cnn(model, groups, x, y, settings)
    moved = {k: (named[k].detach() - before[k]).abs() for k in named}
    top = moved["layer4.0.conv1.weight"]
    early = moved["conv1.weight"]
    weight_decay = 1e-4 * 1e-2 * before["layer4.0.conv1.weight"].abs()
    assert torch.allclose(top[top > 1e-6].median(), torch.tensor(1e-2), rtol=0.05)
    assert (top - weight_decay).max() <= 1e-2 * 1.0001
    if factor == 0:
        assert early.max() == 0 and not named["conv1.weight"].requires_grad
    else:
        assert torch.allclose(early[early > 1e-7].median(), torch.tensor(1e-2 * factor), rtol=0.05)
    assert moved["fc.weight"].max() > 0


def test_parameter_groups_partition_the_model():
    model = DigitsCNN()
    groups = T.parameter_groups(model, 1e-3, 0.5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    top = {id(p) for p in groups[0]["params"]}
    assert top == {id(p) for n, p in model.named_parameters() if n.startswith(("features.7.", "features.8.", "fc."))}
    assert [g["lr"] for g in groups] == [1e-3, 5e-4]
    with pytest.raises(ValueError, match=">= 0"):
        T.parameter_groups(DigitsCNN(), 1e-3, -1)
    with pytest.raises(ValueError, match="ResNets and the digits CNN"):
        T.parameter_groups(torch.nn.Sequential(torch.nn.Linear(2, 2)), 1e-3, 0.1)


def test_cnn_curve_on_digits_learns_and_scratch_differs(digits, tmp_path, monkeypatch):
    from core.embed.models import load

    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path))
    loaded = load("digits-cnn", torch.device("cpu"))
    settings = T.CNNSettings(8, epochs=3, lr=3e-3, earlier_lr_factor=0.1)
    tuned = T.cnn_curve("c", loaded, digits, [20, 100], settings, from_scratch=False)
    scratch = T.cnn_curve("d", loaded, digits, [20, 100], settings, from_scratch=True)
    assert [(p.n_train, p.evaluated_on) for p in tuned] == [(20, "held-out half"), (100, "held-out half")]
    assert tuned[-1].accuracy > 0.5  # ten classes: chance is 0.1
    assert tuned[-1].auc > scratch[-1].auc  # pretrained features help with 100 images
    key = T.curve_key("c", T.model_key(loaded), T.data_key(digits), settings, (20, 100))
    first, hit = T.cached_curve(key, lambda: tuned)
    again, hit_again = T.cached_curve(key, lambda: pytest.fail("recomputed"))
    assert (hit, hit_again) == (False, True) and again == first


def test_embeddings_go_through_core_embed_and_its_cache(digits, tmp_path, monkeypatch):
    from core.embed import embed_array
    from core.embed.models import load

    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path))
    loaded = load("digits-cnn", torch.device("cpu"))
    images = digits.pool.head(12)
    vectors, hit = T.cnn_embeddings(loaded, images, digits.class_names, "pool")
    for i in (0, 7):
        expected, _ = embed_array(loaded, images.images[i].astype(np.float32) / 16.0)
        np.testing.assert_allclose(vectors[i], expected, rtol=1e-5, atol=1e-6)
    assert not hit and list((tmp_path / "embeddings").glob("*.npz"))  # stored in core.embed's cache
    again, hit = T.cnn_embeddings(loaded, images, digits.class_names, "pool")
    assert hit and np.array_equal(again, vectors)


@pytest.mark.data
def test_chest_task_uses_the_bundled_models_split(tmp_path, monkeypatch):
    from core.data import held_out_paths, index_folder
    from core.zoo import get_spec

    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path))
    split = get_spec("cxr-resnet18").training_split
    task = T.chest_task(split, 32, 40, 30)
    held = held_out_paths(index_folder(T.data_dir(), T.CLASS_NAMES), split)
    pool_paths = {k.split("|")[0] for k in task.pool.keys}
    val_paths = {k.split("|")[0] for k in task.evals["validation fold"].keys}
    assert val_paths <= {str(p) for p in held}
    assert not pool_paths & {str(p) for p in held}
    assert not {patient_id(p) for p in pool_paths} & {patient_id(p) for p in val_paths}
    assert len(task.pool) == 40 and len(task.evals["validation fold"]) == 30
    assert len(task.evals["external (new patients)"]) == len(index_folder(T.external_dir(), T.CLASS_NAMES))
    assert task.pool.images.shape == (40, 32, 32) and task.pool.images.dtype == np.uint8
    assert 0.15 < task.pool.labels.mean() < 0.95 and set(task.pool.labels) == {0, 1}
