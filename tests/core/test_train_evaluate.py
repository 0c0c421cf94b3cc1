"""core.train lowers the loss; core.evaluate reproduces a confusion matrix worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from core import evaluate, train, zoo
from core.nets import WideResNet18


def _folder(root, values_by_class):
    for cls, values in values_by_class.items():
        (root / cls).mkdir(parents=True)
        for i, v in enumerate(values):
            prefix = f"person{i}_bacteria_{i}" if cls == "PNEUMONIA" else f"IM-{i:04d}-0001"
            Image.fromarray(np.full((64, 64), round(v * 255), np.uint8)).save(root / cls / f"{prefix}.png")


def test_binary_metrics_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.4, 0.6, 0.9, 0.8, 0.3, 0.55])
    m = evaluate.binary_metrics(y, p)
    assert m["confusion_matrix"] == [[2, 1], [1, 3]]
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    assert m["roc_auc"] == pytest.approx(9 / 12)  # 9 of the 12 positive/negative pairs are ordered correctly
    assert m["n"] == 7


def _brightness_model() -> WideResNet18:
    """A ResNet-18 wired by hand so that P(PNEUMONIA) > 0.5 exactly when mean brightness exceeds ~0.5."""
    model = WideResNet18(width=4, in_channels=1, num_classes=2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1.0), module.bias.zero_(), module.running_mean.zero_(), module.running_var.fill_(1)
        model.conv1.weight[0, 0] = 1.0 / 49  # channel 0 = local mean brightness
        for layer in (model.layer2, model.layer3, model.layer4):
            layer[0].downsample[0].weight[0, 0] = 1.0  # shortcut carries channel 0 through
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in layer:
                block.bn2.weight.zero_()  # residual branch off: blocks pass the shortcut through
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.weight[1, 0] = 40.0
        model.fc.bias[1] = -40.0 * 0.45
    return model.eval()


def test_evaluate_gives_the_confusion_matrix_worked_out_by_hand(tmp_path, capsys):
    # NORMAL: two dark films and one bright (a false positive); PNEUMONIA: three bright and one dark (false negative)
    _folder(tmp_path / "data", {"NORMAL": [0.1, 0.25, 0.85], "PNEUMONIA": [0.8, 0.9, 0.95, 0.2]})
    ckpt = tmp_path / "bright.safetensors"
    zoo.save_checkpoint(_brightness_model(), ckpt, {"width": 4, "channels": 1, "input_size": 64, "mean": [0.0],
                                                    "std": [1.0], "class_names": ["NORMAL", "PNEUMONIA"]})
    evaluate.main(["--model", str(ckpt), "--data", str(tmp_path / "data"), "--json"])
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) >= {"accuracy", "roc_auc", "sensitivity", "specificity", "precision", "f1",
                            "confusion_matrix", "n"}  # today's keys stay
    assert metrics["threshold"] == 0.5 and metrics["calibrated"] is False  # no trust data: plain softmax at 0.5
    assert set(metrics["ci95"]) == {"roc_auc", "sensitivity", "specificity"}
    assert 0 <= metrics["ece"] <= 1 and 0 <= metrics["brier"] <= 1
    assert metrics["confusion_matrix"] == [[2, 1], [1, 3]]
    assert metrics["n"] == 7
    assert metrics["accuracy"] == pytest.approx(5 / 7)
    assert metrics["sensitivity"] == pytest.approx(3 / 4)
    assert metrics["specificity"] == pytest.approx(2 / 3)
    # --threshold overrides: at 0 every film is called PNEUMONIA
    evaluate.main(["--model", str(ckpt), "--data", str(tmp_path / "data"), "--json", "--threshold", "0"])
    lenient = json.loads(capsys.readouterr().out)
    assert lenient["threshold"] == 0.0 and lenient["confusion_matrix"] == [[0, 3], [0, 4]]


def test_bootstrap_intervals_by_hand_and_against_scipy():
    from scipy.stats import bootstrap

    y = np.r_[np.ones(60), np.zeros(40)].astype(int)
    separable = np.r_[np.linspace(0.6, 1, 60), np.linspace(0, 0.4, 40)]
    ci = evaluate.bootstrap_intervals(y, separable, 0.5, resamples=200)
    assert ci == {"roc_auc": pytest.approx([1.0, 1.0]), "sensitivity": [1.0, 1.0], "specificity": [1.0, 1.0]}
    rng = np.random.default_rng(0)
    prob = np.clip(np.r_[rng.normal(0.65, 0.2, 60), rng.normal(0.4, 0.2, 40)], 0, 1)
    ci = evaluate.bootstrap_intervals(y, prob, 0.5, resamples=4000)
    # resampling within the positives only is a plain bootstrap of their hit rate
    theirs = bootstrap(((prob[:60] >= 0.5).astype(float),), np.mean, n_resamples=4000, method="percentile",
                       random_state=1).confidence_interval
    assert ci["sensitivity"] == pytest.approx([theirs.low, theirs.high], abs=0.03)
    point = evaluate.binary_metrics(y, prob)["roc_auc"]
    assert ci["roc_auc"][0] < point < ci["roc_auc"][1] and ci["roc_auc"][1] - ci["roc_auc"][0] < 0.25


def test_a_few_training_steps_lower_the_loss_and_write_a_loadable_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    _folder(tmp_path / "data", {"NORMAL": rng.uniform(0.1, 0.35, 24), "PNEUMONIA": rng.uniform(0.6, 0.9, 24)})
    out = tmp_path / "m.safetensors"
    args = train.parse_args(["--data", str(tmp_path / "data"), "--out", str(out), "--size", "48", "--width", "4",
                             "--epochs", "6", "--batch-size", "16", "--lr", "0.01", "--no-bf16", "--patience", "99"])
    result = train.train(args)
    losses = result["loss_history"]
    assert losses[-1] < losses[0]
    assert result["n_train"] + result["n_val"] == 48
    spec = zoo.get_spec(str(out))
    assert spec.preprocessing.size == 48 and spec.class_names == ("NORMAL", "PNEUMONIA")
    recipe = zoo.read_checkpoint_config(out)["recipe"]  # the whole recipe travels with the weights
    assert recipe["epochs"] == 6 and recipe["augment"] == "strong" and recipe["lr"] == 0.01
    # the checkpoint records its split, so the images it never trained on can be found again, and only there
    split = spec.training_split
    assert split is not None and split.val_digest is not None and sum(split.val_per_class) == result["n_val"]
    from core.data import held_out_paths, index_folder

    held = held_out_paths(index_folder(tmp_path / "data"), split)
    assert held is not None and len(held) == result["n_val"]
    renamed = sorted(held)[0]
    renamed.rename(renamed.with_name("renamed.png"))  # same counts, but no longer the validation set it recorded
    assert held_out_paths(index_folder(tmp_path / "data"), split) is None


def test_a_student_distils_from_a_teacher_on_the_same_held_out_fold(tmp_path):
    rng = np.random.default_rng(1)
    _folder(tmp_path / "data", {"NORMAL": rng.uniform(0.1, 0.35, 24), "PNEUMONIA": rng.uniform(0.6, 0.9, 24)})
    common = ["--data", str(tmp_path / "data"), "--size", "48", "--width", "4", "--epochs", "3", "--batch-size", "16",
              "--lr", "0.01", "--no-bf16", "--patience", "99"]
    teacher = tmp_path / "teacher.safetensors"
    first = train.train(train.parse_args([*common, "--out", str(teacher)]))
    student = tmp_path / "student.safetensors"
    second = train.train(train.parse_args([*common, "--out", str(student), "--seed", "5", "--teacher", str(teacher),
                                           "--temperature", "3"]))
    assert second["loss_history"][-1] < second["loss_history"][0]
    # a new initialisation seed keeps the patient split: teacher and student are judged on the same fold
    assert zoo.get_spec(str(student)).training_split == zoo.get_spec(str(teacher)).training_split
    assert second["n_val"] == first["n_val"]
    recipe = zoo.read_checkpoint_config(student)["recipe"]
    assert recipe["teacher"] == [str(teacher)] and recipe["temperature"] == 3.0
    # the student's metadata carries its teacher's own recipe, and a grand-student carries both generations
    lineage = zoo.read_checkpoint_config(student)["teachers"]
    assert [t["recipe"]["seed"] for t in lineage] == [0] and lineage[0]["teachers"] == []
    grand = tmp_path / "grand.safetensors"
    train.train(train.parse_args([*common, "--out", str(grand), "--seed", "6", "--epochs", "1", "--teacher",
                                  str(student)]))
    chain = zoo.read_checkpoint_config(grand)["teachers"]
    assert chain[0]["recipe"]["seed"] == 5 and chain[0]["teachers"][0]["recipe"]["seed"] == 0
    with pytest.raises(SystemExit, match="teacher"):  # a teacher that reads another input size is refused
        train.train(train.parse_args([*common, "--size", "40", "--teacher", str(teacher)]))
