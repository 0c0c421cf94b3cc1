"""The points table, the WebGL scatter's traces and row mapping, PNG and CSV export."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import embed as E
from core.embed.features import Embeddings
from core.embed.plot import COLOUR_BY, classes_match, csv_bytes, points_table, scatter_figure, scatter_png
from core.zoo import DISCLAIMER


@pytest.fixture
def table() -> pd.DataFrame:
    images = E.ImageSet("t", ("NORMAL", "PNEUMONIA"), np.array([0, 0, 1, 1, 1]), tuple(f"c/{i}.png" for i in range(5)),
                        tuple("abcde"), tuple("abcde"), np.zeros((5, 8, 8), np.uint8))
    kept = np.array([0, 1, 2, 4])  # image 3 was unreadable
    emb = Embeddings(np.zeros((4, 3), np.float32), np.array([0, 1, 1, 0]), np.array([0.9, 0.6, 0.8, 0.7], np.float32),
                     kept, ("c/3.png: corrupt",), "avgpool", "key", False)
    held_out = np.array([False, True, False, True, True])  # one flag per image, the unreadable one included
    return points_table(images, emb, np.arange(8, dtype=np.float32).reshape(4, 2), ("normal", "pneumonia"),
                        held_out)


def test_points_table(table):
    assert table["item"].tolist() == ["c/0.png", "c/1.png", "c/2.png", "c/4.png"]
    assert table["label"].tolist() == ["NORMAL", "NORMAL", "PNEUMONIA", "PNEUMONIA"]
    assert table["predicted"].tolist() == ["normal", "pneumonia", "pneumonia", "normal"]
    assert table["correct"].tolist() == [True, False, True, False]  # class names match case-insensitively
    assert table["position"].tolist() == [0, 1, 2, 4] and table["x"].tolist() == [0, 2, 4, 6]
    assert table["split"].tolist() == ["training", "held out", "training", "held out"]


def test_split_colouring_needs_a_known_split(table):
    fig = scatter_figure(table, "training / held-out")
    held = [t for t in fig.data if t.name == "held out"]
    assert len(held) == 1 and sorted(int(c[0]) for c in held[0].customdata) == [1, 3]
    table["split"] = pd.array([None] * 4, dtype="string")
    with pytest.raises(ValueError, match="split is unknown"):
        scatter_figure(table, "training / held-out")


def test_correctness_is_undefined_for_foreign_classes():
    assert classes_match(("NORMAL", "PNEUMONIA"), ("normal", "pneumonia", "covid"))
    assert not classes_match(("NORMAL", "PNEUMONIA"), ("tench", "goldfish"))


@pytest.mark.parametrize("colour_by", COLOUR_BY)
def test_every_point_is_drawn_once_and_maps_back_to_its_row(table, colour_by):
    fig = scatter_figure(table, colour_by)
    assert all(trace.type == "scattergl" for trace in fig.data)
    base = [t for t in fig.data if not t.name.startswith("misclassified")]
    rows = sorted(int(c[0]) for t in base for c in t.customdata)
    assert rows == [0, 1, 2, 3]
    for trace in base:
        for x, c in zip(trace.x, trace.customdata, strict=True):
            assert x == table["x"].iloc[int(c[0])]
    ring = [t for t in fig.data if t.name.startswith("misclassified")]
    assert len(ring) == 1 and ring[0].name == "misclassified (2)"
    assert sorted(int(c[0]) for c in ring[0].customdata) == [1, 3]


def test_correct_incorrect_needs_matching_classes(table):
    table["correct"] = pd.array([None] * 4, dtype="boolean")
    with pytest.raises(ValueError, match="Correctness is undefined"):
        scatter_figure(table, "correct / incorrect")
    assert len(scatter_figure(table, "true label").data) == 2  # no misclassified ring


@pytest.mark.parametrize("colour_by", ["true label", "confidence"])
def test_png_export(table, colour_by):
    png = scatter_png(table, colour_by, title="t", axis="t-SNE", dpi=50)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (350, 300)
    assert len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 10  # something was drawn
    assert img.info["Disclaimer"] == DISCLAIMER and img.info["Source"] == "not given"


def test_png_export_carries_the_disclaimer_and_credit_under_the_map(table):
    from core.data import ATTRIBUTION

    img = Image.open(io.BytesIO(scatter_png(table, credit=ATTRIBUTION, dpi=100)))
    assert img.info["Disclaimer"] == DISCLAIMER and img.info["Source"] == ATTRIBUTION
    rgb = np.asarray(img.convert("RGB")).astype(int)
    footer = rgb[-int(0.07 * rgb.shape[0]):]  # the strip under the axes: the footer's brown text, nothing else
    brown = (np.abs(footer - [0x7C, 0x2D, 0x12]).sum(-1) < 60).sum()
    assert brown > 100
    assert (np.abs(rgb[: -int(0.1 * rgb.shape[0])] - [0x7C, 0x2D, 0x12]).sum(-1) < 60).sum() < brown / 10


def test_csv_export(table):
    frame = pd.read_csv(io.BytesIO(csv_bytes(table)))
    assert frame.columns.tolist() == ["item", "label", "predicted", "confidence", "correct", "split", "x", "y",
                                     "position"]
    assert frame["item"].tolist() == table["item"].tolist()
    np.testing.assert_allclose(frame["confidence"], [0.9, 0.6, 0.8, 0.7], rtol=1e-6)
