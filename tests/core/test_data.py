"""core.data: patient ids, patient-level split without leaks, folder indexing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core import data


@pytest.mark.parametrize(("name", "patient"), [
    ("person123_bacteria_456.jpeg", "person123"),
    ("person1000_virus_1681.jpeg", "person1000"),
    ("IM-0117-0001.jpeg", "im-0117"),
    ("NORMAL2-IM-0117-0001.jpeg", "normal2-0117"),
    ("other.png", "other"),
])
def test_patient_id(name, patient):
    assert data.patient_id(name) == patient


def _write(folder, name, value):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 40), value, np.uint8)).save(folder / name)


def test_split_keeps_patients_and_duplicates_on_one_side(tmp_path):
    for p in range(30):
        for k in range(3):
            _write(tmp_path / "PNEUMONIA", f"person{p}_bacteria_{k}.jpeg", 3 * p + k)
    for p in range(20):
        _write(tmp_path / "NORMAL", f"IM-{p:04d}-0001.jpeg", 200 + p)
    _write(tmp_path / "NORMAL", "IM-9999-0001.jpeg", 0)  # byte-identical to person0_bacteria_0
    index = data.index_folder(tmp_path, data.CLASS_NAMES)
    assert len(index) == 111 and index.labels.sum() == 90
    train, val = data.patient_split(index, 0.2, seed=1)
    train_patients = {data.patient_id(p) for p in train.paths}
    val_patients = {data.patient_id(p) for p in val.paths}
    assert not train_patients & val_patients
    assert len(train) + len(val) == len(index)
    assert 0.1 < len(val) / len(index) < 0.3
    side = {data.patient_id(p): "train" for p in train.paths} | {data.patient_id(p): "val" for p in val.paths}
    assert side["im-9999"] == side["person0"]


def test_index_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.index_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no class subfolders"):
        data.index_folder(tmp_path)


def test_data_dir_honours_environment(monkeypatch, tmp_path):
    (tmp_path / "train" / "NORMAL").mkdir(parents=True)
    monkeypatch.setenv("CNNLENS_DATA", str(tmp_path))
    assert data.data_dir() == tmp_path / "train"
    monkeypatch.setenv("CNNLENS_DATA", str(tmp_path / "missing"))
    assert data.data_dir() is None
