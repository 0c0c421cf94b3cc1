"""The embedding explorer opens only folders the server shares: the data folder and those an operator lists in
$CNNLENS_ALLOWED_DATA, with ``..``, symlinks and absolute paths resolved before the check; no server path reaches the
page. Folders with fewer than 5 images per class get a clear message, not a traceback. Pages run under AppTest on
small folders of generated images (the bundled model embeds anything)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.helpers import PAGES, run

PAGE = str(PAGES / "embeddings.py")


def image_folder(root: Path, per_class: int) -> Path:
    """``root/NORMAL`` and ``root/PNEUMONIA`` with ``per_class`` small generated PNGs each (one patient each)."""
    rng = np.random.default_rng(len(str(root)))
    for c, label in enumerate(("NORMAL", "PNEUMONIA")):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((64, 64)) * 120 + 100 * c).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label.lower()}-{i}.png")
    return root


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """A shared data folder (with a small subfolder and a symlink out of it), a private folder outside it, and a
    cache; $CNNLENS_DATA points at the shared one."""
    data = image_folder(tmp_path / "shared" / "xrays", 6)
    image_folder(data / "small", 3)
    private = image_folder(tmp_path / "private" / "other-visitors", 6)
    (data / "escape").symlink_to(private, target_is_directory=True)
    monkeypatch.setenv("CNNLENS_DATA", str(data))
    monkeypatch.setenv("CNNLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLENS_ALLOWED_DATA", raising=False)
    yield {"data": data, "private": private, "tmp": tmp_path}


def texts(at: AppTest) -> str:
    """Everything the page put on screen (every element's protobuf, as text)."""
    out: list[str] = []

    def walk(node: object) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def images_shown(at: AppTest) -> str | None:
    return next((m.value for m in at.metric if m.label == "Images"), None)


def opened(typed: str) -> AppTest:
    at = run(AppTest.from_file(PAGE, default_timeout=600))
    at.sidebar.text_input(key="emb_folder").set_value(typed)
    return run(at)


def test_the_page_shows_no_server_path(folders):
    at = run(AppTest.from_file(PAGE, default_timeout=600))
    assert images_shown(at) == "12"
    assert at.sidebar.selectbox(key="emb_root").options == ["xrays"]
    assert at.sidebar.text_input(key="emb_folder").value == ""
    shown = texts(at)
    assert str(folders["tmp"]) not in shown and "/tmp" not in shown


@pytest.mark.parametrize("typed", ["{private}", "../../private/other-visitors", "escape", "/etc", "/no/such/folder"])
def test_folders_outside_the_shared_ones_are_refused_alike(folders, typed):
    at = opened(typed.format(**folders))
    assert images_shown(at) is None
    assert [e.value for e in at.error] == ["That folder is outside the folders this server shares (xrays). Type a "
                                           "subfolder of one of them; an operator can share more with "
                                           "$CNNLENS_ALLOWED_DATA."]
    assert str(folders["tmp"]) not in texts(at).replace(typed.format(**folders), "")  # only the visitor's own text


def test_an_operator_can_share_more_folders(folders, monkeypatch):
    monkeypatch.setenv("CNNLENS_ALLOWED_DATA", f"{folders['tmp'] / 'missing'}:{folders['private']}")
    at = run(AppTest.from_file(PAGE, default_timeout=600))
    assert at.sidebar.selectbox(key="emb_root").options == ["xrays", "other-visitors"]
    at.sidebar.selectbox(key="emb_root").set_value("other-visitors")
    run(at)
    assert images_shown(at) == "12" and str(folders["tmp"]) not in texts(at)
    at.sidebar.text_input(key="emb_folder").set_value("escape")  # a subfolder that does not exist there
    run(at)
    assert any("other-visitors/escape" in e.value for e in at.error) and str(folders["tmp"]) not in texts(at)


def test_a_subfolder_inside_the_data_folder_opens_and_small_ones_get_a_clear_message(folders):
    at = opened("small/../small")
    assert images_shown(at) == "6"
    assert any("Few images per class (NORMAL 3, PNEUMONIA 3)" in w.value for w in at.warning)
    assert not at.exception and "n_splits" not in texts(at)
    assert next(m.proto.help for m in at.metric if m.label == "Images").startswith("xrays/small;")
