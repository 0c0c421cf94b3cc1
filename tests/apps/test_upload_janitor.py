"""The upload cleaner deletes only what visitors uploaded: files Gradio's /upload route recorded, never the files the
app serves from the same folder (example thumbnails, maps), even when a client names their paths or uploads an
identical file onto an example's path. Checked in-process on a real Gradio Blocks with an examples gallery."""

from __future__ import annotations

import contextvars
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from apps.xray.uploads import UploadJanitor


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[gr.Blocks, Path, Path]:
    """(Blocks with a gallery of one thumbnail, as the X-ray app's examples, its upload folder, the thumbnail)."""
    folder = tmp_path / "gradio-tmp"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    with gr.Blocks() as demo:
        gallery = gr.Gallery(value=[(np.full((16, 16, 3), 90, np.uint8), "NORMAL · example")])
    (thumbnail,) = gallery.temp_files
    return demo, folder, Path(thumbnail)


def uploaded(demo: gr.Blocks, folder: Path, name: str, data: bytes) -> Path:
    """A file as Gradio's /upload route leaves it: in a folder of its own, recorded in ``upload_file_set``."""
    path = folder / f"hash-{name}" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    demo.upload_file_set.add(str(path))
    return path


def test_an_example_thumbnail_named_by_a_client_is_read_but_never_deleted(app):
    demo, folder, thumbnail = app
    janitor = UploadJanitor(folder, grace=0)
    janitor.bind(demo)
    assert thumbnail.is_file() and thumbnail.is_relative_to(folder)  # published in /config, inside the upload folder
    assert janitor.take(str(thumbnail)) == thumbnail.read_bytes()  # /predict still answers for it
    janitor.release(str(thumbnail))
    assert janitor.pending() == 0 and janitor.flush() == 0 and thumbnail.is_file()


def test_uploads_are_still_deleted(app):
    demo, folder, _ = app
    janitor = UploadJanitor(folder, grace=0)
    janitor.bind(demo)
    upload = uploaded(demo, folder, "xray.png", b"pixels")
    next(iter(demo.blocks.values())).temp_files.add(str(upload))  # as Gradio does for an input it preprocesses
    assert janitor.take(str(upload)) == b"pixels"
    assert janitor.flush() == 1 and not upload.exists() and not upload.parent.exists()


def test_an_identical_upload_landing_on_an_examples_path_leaves_the_example(app):
    demo, folder, thumbnail = app
    janitor = UploadJanitor(folder, grace=0)
    janitor.bind(demo)
    demo.upload_file_set.add(str(thumbnail))  # same bytes and name: Gradio's content hash gives the same path
    janitor.take(str(thumbnail))
    assert janitor.flush() == 0 and thumbnail.is_file()


def test_unbound_it_reads_the_records_of_the_request_being_served(app):
    from gradio.context import LocalContext

    demo, folder, thumbnail = app
    janitor = UploadJanitor(folder, grace=0)
    upload = uploaded(demo, folder, "mine.png", b"x")
    ctx = contextvars.copy_context()
    ctx.run(LocalContext.blocks.set, demo)
    ctx.run(janitor.take, str(thumbnail))
    ctx.run(janitor.take, str(upload))
    assert janitor.flush() == 1 and thumbnail.is_file() and not upload.exists()


def test_inside_an_app_whose_records_cannot_be_read_nothing_is_deleted(tmp_path):
    janitor = UploadJanitor(tmp_path, grace=0)
    janitor.bind(SimpleNamespace())  # a Gradio without upload_file_set: fail closed
    file = tmp_path / "h" / "x.png"
    file.parent.mkdir()
    file.write_bytes(b"x")
    janitor.take(file)
    assert janitor.flush() == 0 and file.exists()


def test_tidy_removes_only_empty_folders_and_empty_temp_files(tmp_path):
    import os
    import time

    root = tmp_path / "gradio-tmp"
    (root / "emptied-hash" / "inner").mkdir(parents=True)
    (root / "kept-hash").mkdir()
    (root / "kept-hash" / "map.png").write_bytes(b"png")
    (root / "tmpabc123").write_bytes(b"")  # what Gradio's multipart parser leaves per gradio_client upload
    (root / "tmpfull").write_bytes(b"data")  # not empty: not ours to judge
    (root / "empty.txt").write_bytes(b"")  # not a temp file's name
    (root / "fresh-hash").mkdir()
    (root / "tmpfresh").write_bytes(b"")
    old = time.time() - 120
    for path in (root / "emptied-hash", root / "emptied-hash" / "inner", root / "kept-hash", root / "tmpabc123",
                 root / "tmpfull", root / "empty.txt"):
        os.utime(path, (old, old))
    janitor = UploadJanitor(root, grace=60)
    assert janitor.tidy(min_age=60) == 3  # inner, emptied-hash, tmpabc123; the fresh ones may be uploads arriving
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == ["empty.txt", "fresh-hash", "kept-hash", "kept-hash/map.png", "tmpfresh", "tmpfull"]
    assert janitor.tidy() == 2 and not (root / "fresh-hash").exists() and not (root / "tmpfresh").exists()


def test_uploads_no_request_read_are_deleted_after_a_while(app):
    """An upload whose request was refused at the queue (quota, full queue) never reaches ``take``."""
    import os
    import time

    demo, folder, thumbnail = app
    old, fresh = uploaded(demo, folder, "refused.png", b"old"), uploaded(demo, folder, "waiting.png", b"new")
    long_ago = time.time() - 1200
    for path in (old, thumbnail):
        os.utime(path, (long_ago, long_ago))
    demo.upload_file_set.add(str(thumbnail))  # a client that names an example's path is no uploader of it
    janitor = UploadJanitor(folder, grace=0)
    janitor.bind(demo)
    assert janitor.expire_unclaimed(600) == 1
    assert janitor.expire_unclaimed(600) == 0  # already scheduled
    janitor.sweep()
    assert not old.exists() and fresh.exists() and thumbnail.exists()
