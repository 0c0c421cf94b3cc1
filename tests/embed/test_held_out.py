"""Held-out patients: the bundled model's validation split, recomputed, is the one it was trained and scored on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core import embed as E
from core.data import CLASS_NAMES, data_dir, patient_id
from core.embed.held_out import held_out_files, held_out_mask
from core.evaluate import evaluate
from core.trust import trust_for
from core.zoo import BUNDLED, get_spec, read_checkpoint_config


@pytest.mark.data
def test_the_recomputed_split_reproduces_the_recorded_validation_scores(tmp_path):
    assert data_dir() is not None, "set CNNLENS_DATA or deselect with -m 'not data'"
    images = E.folder_source()
    spec = get_spec(BUNDLED)
    held = held_out_mask(images, held_out_files(images, spec))
    assert held is not None and held.sum() == sum(spec.training_split.val_per_class) == 1043
    patients = np.array(images.groups)
    assert not set(patients[held]) & set(patients[~held])  # no patient on both sides
    # score the model on exactly those images, through core.evaluate's own pipeline
    for label in CLASS_NAMES:
        (tmp_path / label).mkdir()
    for path, keep in zip(images.store, held, strict=True):
        if keep:
            (tmp_path / path.parent.name / path.name).symlink_to(path)
    recorded = read_checkpoint_config(spec.weights_source)["validation"]
    # core.train recorded raw-softmax decisions at 0.5 (logit gap 0); after Platt scaling softmax(z / T + b) that
    # gap sits at calibrated P = sigmoid(b), so this threshold reproduces the same decisions
    trust = trust_for(spec)
    raw_half = float(1 / (1 + np.exp(-trust.bias))) if trust else 0.5
    scored = evaluate(BUNDLED, tmp_path, threshold=raw_half, progress=False)
    assert scored["confusion_matrix"] == recorded["confusion_matrix"]
    # core.evaluate --held-out finds the same images by itself
    assert evaluate(BUNDLED, data_dir(), threshold=raw_half, progress=False, held_out=True)["confusion_matrix"] \
        == recorded["confusion_matrix"]
    assert scored["roc_auc"] == pytest.approx(recorded["roc_auc"], abs=1e-4)
    assert {patient_id(p) for p in (tmp_path / "NORMAL").iterdir()} <= set(patients[held])


@pytest.mark.data
def test_the_split_is_unknown_for_another_folder_or_a_model_without_one(tmp_path):
    source = data_dir()
    assert source is not None, "set CNNLENS_DATA or deselect with -m 'not data'"
    for label in CLASS_NAMES:  # a smaller folder of the same X-rays: not the folder the model was trained on
        (tmp_path / label).mkdir()
        for path in sorted((source / label).iterdir())[:20]:
            (tmp_path / label / path.name).symlink_to(path)
    spec = get_spec(BUNDLED)
    assert held_out_files(E.folder_source(tmp_path), spec) is None
    folder = E.folder_source()
    assert held_out_files(folder, dataclasses.replace(spec, training_split=None)) is None
    split = spec.training_split
    swapped = dataclasses.replace(split, val_per_class=split.val_per_class[::-1])  # same total, other classes
    assert held_out_files(folder, dataclasses.replace(spec, training_split=swapped)) is None
    digest = dataclasses.replace(split, val_digest="0" * 64)  # a recorded digest must match too
    assert held_out_files(folder, dataclasses.replace(spec, training_split=digest)) is None


def test_images_without_a_folder_have_no_split(digits):
    assert held_out_files(digits, get_spec(BUNDLED)) is None
    assert held_out_mask(digits, None) is None
