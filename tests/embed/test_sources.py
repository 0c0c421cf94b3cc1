"""Image sources: folder fingerprints, zip safety, MedMNIST files, digits, stratified subsampling."""

from __future__ import annotations

import io
import os
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from core import embed as E
from core.embed import sources
from tests.embed.conftest import write_pattern_folder


def png_bytes(value: int = 128, size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def test_folder_source_labels_items_and_groups(pattern_folder):
    images = E.folder_source(pattern_folder)
    assert images.class_names == ("dark", "light")
    assert len(images) == 12 and images.labels.tolist() == [0] * 6 + [1] * 6
    assert images.items[0] == "dark/img00.png" and images.groups[0] == "img00"
    first = images.image(0)
    assert first.shape == (40, 40) and first.dtype == np.float32 and 0 <= first.min() <= first.max() <= 1


def test_folder_fingerprint_changes_with_the_data(pattern_folder):
    images = E.folder_source(pattern_folder)
    same = E.folder_source(pattern_folder)
    assert images.fingerprint == same.fingerprint
    assert images.subset([0, 1, 6]).fingerprint != images.subset([0, 1, 7]).fingerprint
    path = pattern_folder / "dark" / "img00.png"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a re-saved file
    assert E.folder_source(pattern_folder).fingerprint != images.fingerprint


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(E.SourceError, match="does not exist"):
        E.folder_source(tmp_path / "nope")


def test_zip_upload_reads_classes_and_strips_a_wrapper_folder():
    data = make_zip({"set/NORMAL/a.png": png_bytes(10), "set/NORMAL/b.png": png_bytes(20),
                     "set/PNEUMONIA/c.png": png_bytes(200), "__MACOSX/set/._a.png": b"junk", "set/.DS_Store": b"x"})
    images = E.zip_source(data, "set.zip")
    assert images.class_names == ("NORMAL", "PNEUMONIA")
    assert images.items == ("NORMAL/a.png", "NORMAL/b.png", "PNEUMONIA/c.png")
    assert images.labels.tolist() == [0, 0, 1] and images.notes == ()
    assert images.image(2).mean() == pytest.approx(200 / 255, abs=1e-6)


def test_zip_with_one_class_folder_keeps_it_as_the_class():
    images = E.zip_source(make_zip({"NORMAL/a.png": png_bytes(), "NORMAL/b.png": png_bytes(90)}))
    assert images.class_names == ("NORMAL",) and len(images) == 2


def test_zip_slip_symlinks_and_non_images_are_skipped_and_counted():
    data = make_zip({
        "NORMAL/ok.png": png_bytes(50),
        "PNEUMONIA/ok.png": png_bytes(150),
        "../evil.png": png_bytes(),
        "NORMAL/../../evil2.png": png_bytes(),
        "/abs/NORMAL/x.png": png_bytes(),
        "NORMAL/readme.txt": b"hello",
        "NORMAL/fake.png": b"this is text, not a PNG",
        "NORMAL/truncated.png": png_bytes()[:60],
        "loose.png": png_bytes(),
    }, symlinks={"NORMAL/link.png": "/etc/passwd"})
    images = E.zip_source(data)
    assert images.items == ("NORMAL/ok.png", "PNEUMONIA/ok.png")
    note = " ".join(images.notes)
    assert "Skipped 8 file(s)" in note
    assert "3 unsafe path" in note and "1 symbolic link" in note and "1 not an image file type" in note
    assert "2 not a readable image" in note and "1 not inside a class folder" in note


def test_zip_bomb_member_is_skipped():
    bomb = b"\x89PNG" + bytes(5 * 2**20)  # 5 MiB of zeros: deflates over 1000:1
    images = E.zip_source(make_zip({"A/ok.png": png_bytes(), "A/bomb.png": bomb}))
    assert len(images) == 1 and "zip bomb" in images.notes[0]


def test_zip_expanding_beyond_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr(sources, "ZIP_MAX_TOTAL_BYTES", 1000)
    with pytest.raises(E.SourceError, match="would expand"):
        E.zip_source(make_zip({"A/a.png": bytes(600), "A/b.png": bytes(600)}))  # 1200 bytes once expanded


@pytest.mark.parametrize(("data", "match"), [(b"not a zip", "not a readable zip"),
                                             (make_zip({"A/notes.txt": b"x"}), "no readable images")])
def test_unusable_zip_is_a_clear_error(data, match):
    with pytest.raises(E.SourceError, match=match):
        E.zip_source(data)


def test_digits_source():
    digits = E.digits_source()
    assert len(digits) == 1797 and digits.class_names == tuple("0123456789")
    img = digits.image(0)
    assert img.shape == (8, 8) and img.max() <= 1.0 and img.min() >= 0.0
    assert sum(i.startswith("train/") for i in digits.items) == 899  # even positions train the digits CNN


def test_medmnist_reads_a_local_file_without_network(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"{split}_{kind}": (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if kind == "images"
                                  else rng.integers(0, 2, (n, 1)))
              for split, n in (("train", 5), ("val", 3), ("test", 4)) for kind in ("images", "labels")}
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    images = E.medmnist_source("pneumoniamnist", "test", root=tmp_path, download=False)
    assert images.class_names == ("normal", "pneumonia")
    assert images.labels.tolist() == arrays["test_labels"][:, 0].tolist()
    np.testing.assert_allclose(images.image(1), arrays["test_images"][1] / 255.0, rtol=1e-6)


def test_medmnist_missing_file_without_download_says_what_to_do(tmp_path):
    with pytest.raises(E.SourceError, match="allow the download"):
        E.medmnist_source("pneumoniamnist", root=tmp_path, download=False)
    with pytest.raises(E.SourceError, match="Unknown or unsupported"):
        E.medmnist_source("chestmnist", root=tmp_path, download=False)  # multi-label: not offered


def test_subsample_is_stratified_and_seeded(tmp_path):
    images = E.folder_source(write_pattern_folder(tmp_path / "d", per_class=30))
    images = images.subset(list(range(30)) + list(range(30, 40)))  # 30 dark, 10 light
    a, b, c = E.subsample(images, 20, seed=1), E.subsample(images, 20, seed=1), E.subsample(images, 20, seed=2)
    assert a.items == b.items and a.items != c.items
    assert np.bincount(a.labels).tolist() == [15, 5]
    assert E.subsample(images, 40) is images


def test_thumbnail_enlarges_tiny_images_crisply():
    tiny = np.eye(8, dtype=np.float32)
    big = E.thumbnail(tiny, 64)
    assert big.shape == (64, 64) and big.dtype == np.uint8
    assert set(np.unique(big).tolist()) == {0, 255}  # nearest-neighbour: no blur
    assert E.thumbnail(np.zeros((200, 100, 3)), 50).shape == (50, 25, 3)
