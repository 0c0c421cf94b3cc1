"""The embedding explorer page: AppTest end to end on 24 real X-rays (numbers checked against an independent
forward pass), the digits fallback, zip and query uploads, bad input; and a Chromium screenshot with a lasso."""

from __future__ import annotations

import io
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.data import CLASS_NAMES, data_dir, patient_id
from core.io import load_image
from core.zoo import load_model, predict, preprocess
from tests.conftest import free_port, start_server
from tests.helpers import PAGES, chart, run

PAGE = str(PAGES / "embeddings.py")
PER_CLASS = 12
FULL_DATA = data_dir()  # read at import, before the module's fixture points $CNNLENS_DATA at a small folder

pytestmark = pytest.mark.data


def small_xray_folder(root: Path) -> Path:
    """Symlinks to PER_CLASS real X-rays per class, one per patient, spread over the folder (never copies)."""
    source = data_dir()
    assert source is not None, "set CNNLENS_DATA or deselect with -m 'not data'"
    for label in CLASS_NAMES:
        (root / label).mkdir(parents=True)
        seen: set[str] = set()
        files = sorted((source / label).iterdir())
        for path in files[:: len(files) // (4 * PER_CLASS)]:
            if patient_id(path) not in seen and len(seen) < PER_CLASS:
                seen.add(patient_id(path))
                (root / label / path.name).symlink_to(path)
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A small data folder and a temp cache, exported for the page (in this process) and for a server."""
    values = {"CNNLENS_DATA": str(small_xray_folder(tmp_path_factory.mktemp("emb-data"))),
              "CNNLENS_CACHE": str(tmp_path_factory.mktemp("emb-cache"))}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in values.items():
            mp.setenv(key, value)
        yield values


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def percent(text: str) -> float:
    return float(text.rstrip("%")) / 100


def independent_numbers(folder: Path) -> dict[str, float]:
    """Accuracy, cosine silhouette and precision@10 from a plain forward pass and numpy, not core.embed."""
    loaded = load_model("cxr-resnet18")
    paths = [p for label in CLASS_NAMES for p in sorted((folder / label).iterdir())]
    labels = np.array([CLASS_NAMES.index(p.parent.name) for p in paths])
    x = torch.cat([preprocess(load_image(p), loaded.spec.preprocessing) for p in paths])
    trunk = torch.nn.Sequential(*list(loaded.model.children())[:-1])  # everything up to the global average pool
    with torch.no_grad():
        feats = trunk(x).flatten(1).numpy().astype(np.float64)
    accuracy = float((predict(loaded, x).argmax(1).numpy() == labels).mean())
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    d = 1 - unit @ unit.T
    sil = []
    for i in range(len(labels)):
        same = (labels == labels[i]) & (np.arange(len(labels)) != i)
        a, b = d[i, same].mean(), d[i, labels != labels[i]].mean()
        sil.append((b - a) / max(a, b))
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :10]
    precision = float((labels[nearest] == labels[:, None]).mean())
    return {"accuracy": accuracy, "silhouette": float(np.mean(sil)), "precision": precision}


@pytest.fixture(scope="module")
def page(env) -> AppTest:
    return run(AppTest.from_file(PAGE, default_timeout=600))


def test_page_numbers_match_an_independent_computation(page, env):
    expected = independent_numbers(Path(env["CNNLENS_DATA"]))
    assert metric(page, "Images") == str(2 * PER_CLASS)
    assert percent(metric(page, "Model accuracy")) == pytest.approx(expected["accuracy"], abs=0.0006)
    assert float(metric(page, "Silhouette")) == pytest.approx(expected["silhouette"], abs=0.0006)
    assert percent(metric(page, "Precision@10")) == pytest.approx(expected["precision"], abs=0.0006)
    assert 0.0 <= percent(metric(page, "10-NN on the embedding")) <= 1.0
    assert not page.error


def test_map_draws_every_image_once(page):
    spec = chart(page, "emb_map")
    traces = [t for t in spec["data"] if not t["name"].startswith("misclassified")]
    assert all(t["type"] == "scattergl" for t in spec["data"])
    assert sum(len(t["customdata"]) for t in traces) == 2 * PER_CLASS


def test_inspect_tab_shows_grad_cam_and_neighbours(page):
    captions = [c for img in page.image for c in img.captions]
    assert any(c.startswith("Grad-CAM (layer4)") for c in captions)
    assert sum(" · d " in c for c in captions) == 8  # the default 8 nearest neighbours, with distances
    labels = [b.proto.label for b in page.get("download_button")]
    assert labels[0].startswith("Download CSV") and labels[1] == "Download PNG of the map"


def test_only_usable_models_are_offered_and_the_others_are_listed_once(page):
    from core.zoo import model_names, unavailable_reason

    offered = page.sidebar.selectbox(key="emb_model_cxr-resnet18").options
    usable = [n for n in model_names(demos=True) if unavailable_reason(n) is None]
    assert offered == usable and "digits-cnn" in offered
    compare = page.sidebar.selectbox(key="emb_compare_cxr-resnet18").options
    assert set(compare) == {"(none)", "cxr-resnet18 (untrained)", *usable} - {"cxr-resnet18"}
    notes = [c.value for c in page.sidebar.caption if "is unavailable" in c.value]
    assert sorted(n.split("**")[1] for n in notes) == sorted(set(model_names(demos=True)) - set(usable))


def test_pca_correctness_colouring_and_untrained_comparison(page):
    page.segmented_control(key="emb_method").set_value("PCA")
    page.selectbox(key="emb_colour").set_value("correct / incorrect")
    page.sidebar.selectbox(key="emb_compare_cxr-resnet18").set_value("cxr-resnet18 (untrained)")
    run(page)
    table = page.dataframe[0].value
    assert table["model"].tolist() == ["cxr-resnet18", "cxr-resnet18 (untrained)"]
    assert table["silhouette"][0] == pytest.approx(float(metric(page, "Silhouette")), abs=0.0006)
    assert table["silhouette"][0] > table["silhouette"][1]  # training organised the space
    names = {c.proto.id.rsplit("-", 1)[-1] for c in page.get("plotly_chart")}
    assert {"emb_map", "emb_cmp_a", "emb_cmp_b"} <= names


def test_query_upload_finds_the_same_image_first(page, env):
    path = sorted((Path(env["CNNLENS_DATA"]) / "PNEUMONIA").iterdir())[3]
    page.file_uploader(key="emb_query").upload(path.name, path.read_bytes(), "image/jpeg")
    run(page)
    captions = [c for img in page.image for c in img.captions]
    assert any(c.startswith("query · model says") for c in captions)
    first_hit = captions[captions.index(next(c for c in captions if c.startswith("query"))) + 1]
    assert first_hit.startswith(f"{path.name} ") and "d 0.000" in first_hit


def test_bad_query_upload_is_a_clear_error(page):
    page.file_uploader(key="emb_query").set_value(("notes.png", b"just text", "image/png"))
    run(page)
    assert any("text file, not an image" in e.value for e in page.error)


def test_zip_upload_source(env):
    at = run(AppTest.from_file(PAGE, default_timeout=600))
    at.sidebar.radio(key="emb_source").set_value("Zip upload")
    run(at)
    assert any("Upload a zip" in i.value for i in at.info)
    buffer = io.BytesIO()
    folder = Path(env["CNNLENS_DATA"])
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in CLASS_NAMES:
            for path in sorted((folder / label).iterdir())[:4]:
                archive.writestr(f"upload/{label}/{path.name}", path.read_bytes())
        archive.writestr("../escape.png", b"x")
        archive.writestr("upload/NORMAL/notes.txt", b"not an image")
    at.sidebar.file_uploader(key="emb_zip").upload("xrays.zip", buffer.getvalue(), "application/zip")
    run(at)
    assert metric(at, "Images") == "8"
    notes = " ".join(c.value for c in at.sidebar.caption)
    assert "Skipped 2 file(s)" in notes and "unsafe path" in notes


def test_missing_folder_is_an_error_not_a_crash(env):
    at = run(AppTest.from_file(PAGE, default_timeout=600))
    at.sidebar.text_input(key="emb_folder").set_value("no/such/folder")  # inside the data folder; outside: refused
    run(at)
    errors = [e.value for e in at.error]
    assert any("/no/such/folder does not exist" in e for e in errors), errors
    assert not any(env["CNNLENS_DATA"] in e for e in errors)  # the data folder's server path is never shown


def test_digits_fallback(env):
    at = run(AppTest.from_file(PAGE, default_timeout=600))
    at.segmented_control(key="emb_method").set_value("PCA")
    at.sidebar.radio(key="emb_source").set_value("Digits (built in)")
    run(at)
    assert at.sidebar.selectbox(key="emb_model_digits-cnn").value == "digits-cnn"
    assert metric(at, "Images") == "1,797"
    from core.embed import digits_source, load

    images, model = digits_source(), load("digits-cnn")
    x = torch.cat([preprocess(images.image(i), model.spec.preprocessing) for i in range(len(images))])
    expected = float((predict(model, x).argmax(1).numpy() == images.labels).mean())
    assert percent(metric(at, "Model accuracy")) == pytest.approx(expected, abs=0.0006)
    assert expected > 0.97  # half of the digits trained it; the other half is held out


def test_held_out_patients_on_the_full_folder(tmp_path):
    """On the folder the bundled model trained on, its validation patients are marked, and the accuracy the page
    reports is theirs: checked against a forward pass over exactly those images."""
    full = FULL_DATA
    assert full is not None, "set CNNLENS_DATA or deselect with -m 'not data'"
    at = AppTest.from_file(PAGE, default_timeout=600)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLENS_DATA", str(full))
        mp.setenv("CNNLENS_CACHE", str(tmp_path))
        n = len([p for label in CLASS_NAMES for p in (full / label).iterdir()])
        at.session_state[f"emb_n_{n}"] = 120  # a 120-image subset of the whole folder
        run(at)
        at.selectbox(key="emb_colour").set_value("training / held-out")
        run(at)
    traces = {t["name"]: t for t in chart(at, "emb_map")["data"]}
    held = [row[1] for row in traces["held out"]["customdata"]]  # "NORMAL/IM-....jpeg"
    assert len(held) + len(traces["training"]["customdata"]) == 120 and 5 < len(held) < 60
    loaded = load_model("cxr-resnet18")
    x = torch.cat([preprocess(load_image(full / item), loaded.spec.preprocessing) for item in held])
    labels = np.array([CLASS_NAMES.index(item.split("/")[0]) for item in held])
    expected = float((predict(loaded, x).argmax(1).numpy() == labels).mean())
    assert percent(metric(at, "Model accuracy, held out")) == pytest.approx(expected, abs=0.0006)


# ---------------------------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def explorer_url(env, tmp_path_factory) -> Iterator[str]:
    """The classroom on a free port, reading the small data folder and caching in the temp folder."""
    port = free_port()
    server = start_server([sys.executable, "-m", "streamlit", "run", "apps/streamlit_app.py", "--server.port",
                           str(port), "--server.address", "127.0.0.1", "--server.headless", "true"], port,
                          tmp_path_factory.mktemp("explorer") / "server.log", env)
    yield server.url
    server.stop()


@pytest.mark.browser
def test_explorer_in_chromium_with_a_lasso_selection(browser, explorer_url, artifacts):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    try:
        page.goto(explorer_url)  # enter through the app's navigation (wide layout, grouped menu)
        page.wait_for_selector("h1", timeout=120_000)
        page.goto(f"{explorer_url}/embeddings")
        page.wait_for_selector("text=Mendeley Data", timeout=300_000)  # the footer: the page ran to the end
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                               timeout=300_000)
        assert page.locator("h1").first.inner_text() == "Embedding explorer"
        assert page.locator("[data-testid='stException']").count() == 0
        plot = page.locator(".js-plotly-plot").first
        plot.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        page.set_viewport_size({"width": 1500, "height": min(height + 50, 16_000)})  # Streamlit scrolls inside
        page.wait_for_timeout(1500)
        page.screenshot(path=str(artifacts / "embeddings.png"), full_page=True)
        box = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
        x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
        page.mouse.move(x0 + 0.02 * w, y0 + 0.02 * h)
        page.mouse.down()
        for fx, fy in ((0.98, 0.02), (0.98, 0.98), (0.02, 0.98), (0.02, 0.03)):
            page.mouse.move(x0 + fx * w, y0 + fy * h, steps=8)
        page.mouse.up()
        page.wait_for_selector("text=/\\d+ selected/", timeout=120_000)
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                               timeout=120_000)
        page.wait_for_timeout(1500)
        assert page.get_by_text(f"{2 * PER_CLASS} selected").count() >= 1
        page.screenshot(path=str(artifacts / "embeddings_selection.png"), full_page=False)
    finally:
        page.close()


def test_exported_pictures_credit_the_data_they_show(tmp_path):
    from types import SimpleNamespace

    from apps.classroom.embeddings import View
    from core.data import ATTRIBUTION

    folder = SimpleNamespace(notes=(), folder=tmp_path, class_names=("NORMAL", "PNEUMONIA"))
    other = SimpleNamespace(notes=(), folder=tmp_path, class_names=("cat", "dog"))
    med = SimpleNamespace(notes=("2 unreadable", "MedMNIST v2 pneumoniamnist (Yang et al. 2023), CC BY 4.0."),
                          folder=None, class_names=("normal", "pneumonia"))
    credit = View.credit.fget
    assert credit(SimpleNamespace(images=folder, source_name="data")) == ATTRIBUTION
    assert credit(SimpleNamespace(images=other, source_name="pets")) == "Images: pets."
    assert credit(SimpleNamespace(images=med, source_name="m")).startswith("MedMNIST v2 pneumoniamnist")
