"""User checkpoints are bounded before anything large is allocated: what a .pt zip decompresses to, a CNN Lens
config's architecture metadata (width, input size, channels, classes, normalisation), the torchvision input size
and class count; each refusal is one sentence. Files are tiny and hostile; nothing here loads gigabytes."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import core.zoo
from apps.xray import models
from apps.xray.models import (
    ARCHITECTURES,
    MAX_WEIGHTS_BYTES,
    check_config,
    decompressed_size,
    load_user_checkpoint,
    zoo_status,
)
from core.nets import WideResNet18

GOOD = {"architecture": "resnet18", "width": 8, "channels": 1, "input_size": 64, "mean": [0.5], "std": [0.25],
        "class_names": ["NORMAL", "PNEUMONIA"]}


def cnnlens_file(path: Path, **changes: object) -> Path:
    """A safetensors file of a few hundred bytes whose CNN Lens config is GOOD with ``changes``."""
    config = {**GOOD, **changes}
    save_file({"conv1.weight": torch.zeros(1)}, str(path), metadata={"cnnlens": json.dumps(config)})
    return path


@pytest.mark.parametrize(("changes", "reason"), [
    ({"width": 400}, "width 400; this app accepts 4 to 128"),
    ({"width": 2}, "width 2; this app accepts 4 to 128"),
    ({"input_size": 6000}, "input_size 6000; this app accepts 16 to 1024"),
    ({"width": True}, "width as True; it must be a whole number"),
    ({"input_size": "160"}, "input_size as '160'"),
    ({"input_size": 160.5}, "input_size as 160.5"),
    ({"channels": 2}, "channels 2; it must be 1 (grey) or 3"),
    ({"channels": 3}, "mean as 3 finite number(s)"),
    ({"class_names": ["A"]}, "at least two class names"),
    ({"class_names": [f"c{i}" for i in range(5000)]}, "at most 1,000"),
    ({"class_names": "NORMAL,PNEUMONIA"}, "class names as non-empty strings"),
    ({"mean": [math.nan]}, "mean as 1 finite number(s)"),
    ({"std": [0.0]}, "std that is not positive"),
    ({"architecture": "vgg16"}, "CNN Lens checkpoints are resnet18"),
])
def test_out_of_range_architecture_metadata_is_refused_in_one_line(tmp_path, changes, reason):
    path = cnnlens_file(tmp_path / "hostile.safetensors", **changes)
    assert path.stat().st_size < 60_000  # the whole attack is a small file
    with pytest.raises(ValueError) as err:
        load_user_checkpoint(path, "resnet18", "")
    message = str(err.value)
    assert reason in message and "\n" not in message and len(message) < 200, message


def test_a_valid_cnnlens_checkpoint_with_trust_statistics_loads(tmp_path):
    config = {**GOOD}
    path = tmp_path / "mine.safetensors"
    state = {k: v.contiguous() for k, v in WideResNet18(width=8, in_channels=1, num_classes=2).state_dict().items()}
    save_file({**state, "trust.feature_mean": torch.zeros(64)}, str(path), metadata={"cnnlens": json.dumps(config)})
    check_config(config)
    _, loaded, layer = load_user_checkpoint(path, "ignored", "")
    assert loaded.spec.preprocessing.size == 64 and loaded.spec.class_names == ("NORMAL", "PNEUMONIA")
    assert layer.startswith("layer4")


def test_a_small_deflated_pt_that_would_expand_past_the_cap_is_refused_before_loading(tmp_path, monkeypatch):
    plain = tmp_path / "plain.pt"
    torch.save({"fc.weight": torch.zeros(64 * 2**20)}, plain)  # 256 MiB of float32 zeros, stored as torch writes it
    hostile = tmp_path / "deflated.pt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(hostile, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            with source.open(member) as reader, target.open(member.filename, "w", force_zip64=True) as writer:
                while chunk := reader.read(2**24):
                    writer.write(chunk)
    plain.unlink()
    assert hostile.stat().st_size < 2**20  # under 1 MB on disk...
    assert decompressed_size(hostile.read_bytes()) > 256 * 2**20  # ...256 MiB once loaded

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not run on a file that expands past the cap")

    monkeypatch.setattr(models.torch, "load", never)
    with pytest.raises(ValueError, match=r"expands to 256 MiB, more than the \d+ MiB this architecture"):
        load_user_checkpoint(hostile, "resnet18", "A, B")


def test_decompressed_size_of_each_format(tmp_path):
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(1000)}, buffer)
    data = buffer.getvalue()
    assert 4000 <= decompressed_size(data) <= len(data) + 4000
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1000)}, str(path))
    assert decompressed_size(path.read_bytes()) == path.stat().st_size


def test_the_pre_zip_pytorch_format_is_refused_with_a_reason(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"fc.weight": torch.zeros(2, 512)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"zip format, PyTorch 1\.6 or later, and safetensors"):
        load_user_checkpoint(path, "resnet18", "A, B")


@pytest.mark.parametrize(("args", "reason"), [
    (("resnet18", "A, B", 6000), "from 32 to 1024"),
    (("resnet18", "A, B", True), "from 32 to 1024"),
    (("resnet18", ", ".join(f"c{i}" for i in range(5000)), 224), "at most 1,000"),
    (("regnet_y_128gf", "A, B", 224), "Unknown architecture"),
])
def test_torchvision_settings_are_checked_before_the_weights_are_read(tmp_path, monkeypatch, args, reason):
    path = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(2, 512)}, path)
    monkeypatch.setattr(models, "_read_state_dict", lambda *a, **k: pytest.fail("weights read before the checks"))
    with pytest.raises(ValueError, match=reason):
        load_user_checkpoint(path, *args)


def test_architectures_too_big_for_the_weights_cap_are_not_offered():
    assert "resnet18" in ARCHITECTURES and "vgg19" in ARCHITECTURES
    assert "regnet_y_128gf" not in ARCHITECTURES and "convnext_large" not in ARCHITECTURES
    assert MAX_WEIGHTS_BYTES == 600 * 2**20


def test_a_bundled_checkpoint_with_out_of_range_metadata_is_unavailable_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(core.zoo, "BUNDLED_WEIGHTS", cnnlens_file(tmp_path / "cxr-resnet18.safetensors",
                                                                  input_size=6000))
    status = zoo_status()
    assert "cxr-resnet18" not in status.available
    assert "input_size 6000; this app accepts 16 to 1024" in status.unavailable["cxr-resnet18"]


def _tiny_cnnlens_checkpoint(path: Path, init_seed: int, **config: object) -> Path:
    torch.manual_seed(init_seed)
    state = {k: v.contiguous() for k, v in WideResNet18(width=4, in_channels=1, num_classes=2).state_dict().items()}
    save_file(state, str(path), metadata={"cnnlens": json.dumps({**GOOD, "width": 4, **config})})
    return path


def test_user_models_share_the_zoo_cache_and_only_the_newest_stay(tmp_path):
    keys = [load_user_checkpoint(_tiny_cnnlens_checkpoint(tmp_path / f"m{i}.safetensors", i), "", "")[0]
            for i in range(models.MAX_USER_MODELS + 1)]
    assert len(set(keys)) == len(keys)
    with pytest.raises(core.zoo.ModelUnavailable, match="no longer loaded"):
        models.get_model(keys[0])  # the oldest was dropped
    for key in keys[1:]:
        assert models.get_model(key) is core.zoo.cached_only(("user", key))


def test_an_uploaded_cnnlens_checkpoint_keeps_its_whole_spec(tmp_path):
    """The spec is copied with dataclasses.replace: the training split its config records is not dropped."""
    validation = {"confusion_matrix": [[3, 1], [0, 5]]}
    path = _tiny_cnnlens_checkpoint(tmp_path / "split.safetensors", 0, seed=7, val_fraction=0.25,
                                    validation=validation)
    _, loaded, _ = load_user_checkpoint(path, "", "")
    assert loaded.spec.training_split == core.zoo.TrainingSplit(7, 0.25, (4, 5), None)
    assert loaded.spec.weights_source == "uploaded file"
