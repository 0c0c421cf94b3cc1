"""The explorer's scatter plot and export: one table of points, drawn by plotly (WebGL) or matplotlib (PNG).

Every trace carries each point's row number as ``customdata[0]`` so a selection in the browser maps back to
the table whatever the colouring. Misclassified points get a black ring on top in every colouring, so they
stand out even in a crowded map.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.figure import Figure
from plotly.colors import qualitative

from core.embed.features import Embeddings
from core.embed.sources import ImageSet
from core.zoo import DISCLAIMER

FOOTER_WIDTH = 110  # characters per footer line at 7 pt: inside the 7-inch figure

COLOUR_BY = ("true label", "predicted label", "correct / incorrect", "confidence", "training / held-out")
PALETTE = qualitative.Plotly + qualitative.D3  # enough distinct colours for MedMNIST's 11 organ classes
CORRECT_COLOURS = {"correct": "#9aa5b1", "incorrect": "#d62728"}
SPLIT_COLOURS = {"training": "#9aa5b1", "held out": "#1f77b4"}
COLUMNS = ["item", "label", "predicted", "confidence", "correct", "split", "x", "y", "position"]


def classes_match(source_classes: Sequence[str], model_classes: Sequence[str]) -> bool:
    """True when every class of the data is a class of the model (case-insensitive), so correctness is defined."""
    model = {c.lower() for c in model_classes}
    return all(c.lower() in model for c in source_classes)


def points_table(images: ImageSet, emb: Embeddings, xy: np.ndarray, model_classes: Sequence[str],
                 held_out: np.ndarray | None = None) -> pd.DataFrame:
    """One row per embedded image: name, true and predicted class, confidence, correctness, split, coordinates.

    ``position`` is the row's index in ``images``; ``correct`` is None when the model's classes are not the
    data's (e.g. an ImageNet model on X-rays); ``split`` ("training" or "held out") is None unless ``held_out``
    (one flag per image of ``images``, see ``core.embed.held_out``) is given.
    """
    labels = [images.class_names[images.labels[i]] for i in emb.kept]
    predicted = [model_classes[p] if p < len(model_classes) else str(p) for p in emb.predictions]
    if classes_match(images.class_names, model_classes):
        correct: list[bool | None] = [a.lower() == b.lower() for a, b in zip(labels, predicted, strict=True)]
    else:
        correct = [None] * len(labels)
    split = [None] * len(labels) if held_out is None else np.where(held_out[emb.kept], "held out", "training")
    return pd.DataFrame({"item": [images.items[i] for i in emb.kept], "label": labels, "predicted": predicted,
                         "confidence": emb.confidences.astype(float), "correct": pd.array(correct, dtype="boolean"),
                         "split": pd.array(split, dtype="string"), "x": xy[:, 0].astype(float),
                         "y": xy[:, 1].astype(float), "position": emb.kept})


def _groups(table: pd.DataFrame, colour_by: str) -> list[tuple[str, np.ndarray, str]]:
    """(legend name, row mask, colour) per trace for a categorical colouring."""
    if colour_by == "correct / incorrect":
        if table["correct"].isna().all():
            raise ValueError("Correctness is undefined: the model's classes are not the data's classes.")
        ok = table["correct"].fillna(False).to_numpy(bool)
        return [("correct", ok, CORRECT_COLOURS["correct"]), ("incorrect", ~ok, CORRECT_COLOURS["incorrect"])]
    if colour_by == "training / held-out":
        if table["split"].isna().all():
            raise ValueError("The split is unknown: the model records none, or these are not its training folder.")
        return [(name, (table["split"] == name).fillna(False).to_numpy(bool), colour)
                for name, colour in SPLIT_COLOURS.items()]
    column = "label" if colour_by == "true label" else "predicted"
    names = list(dict.fromkeys(sorted(table[column].unique())))
    return [(name, (table[column] == name).to_numpy(), PALETTE[i % len(PALETTE)]) for i, name in enumerate(names)]


def scatter_figure(table: pd.DataFrame, colour_by: str = "true label", title: str = "", height: int = 560
                   ) -> go.Figure:
    """A WebGL scatter of the table's map, coloured by ``colour_by`` (one of COLOUR_BY)."""
    if colour_by not in COLOUR_BY:
        raise ValueError(f"colour_by must be one of {', '.join(COLOUR_BY)}, got {colour_by!r}")
    custom = np.column_stack([np.arange(len(table)), table["item"], table["label"], table["predicted"],
                              table["confidence"].round(3)])
    hover = ("%{customdata[1]}<br>true: %{customdata[2]}<br>predicted: %{customdata[3]} "
             "(%{customdata[4]})<extra></extra>")
    fig = go.Figure()
    size = 6 if len(table) <= 2000 else 4
    if colour_by == "confidence":
        fig.add_trace(go.Scattergl(x=table["x"], y=table["y"], mode="markers", name="images", customdata=custom,
                                   hovertemplate=hover, marker={"size": size, "color": table["confidence"],
                                                                "colorscale": "Viridis", "cmin": 0, "cmax": 1,
                                                                "colorbar": {"title": {"text": "confidence"}}}))
    else:
        for name, mask, colour in _groups(table, colour_by):
            fig.add_trace(go.Scattergl(x=table["x"][mask], y=table["y"][mask], mode="markers", name=str(name),
                                       customdata=custom[mask], hovertemplate=hover,
                                       marker={"size": size, "color": colour, "opacity": 0.8}))
    wrong = (~table["correct"].fillna(True)).to_numpy(bool)
    if wrong.any():
        fig.add_trace(go.Scattergl(x=table["x"][wrong], y=table["y"][wrong], mode="markers",
                                   name=f"misclassified ({int(wrong.sum())})", customdata=custom[wrong],
                                   hovertemplate=hover,
                                   marker={"size": size + 5, "color": "rgba(0,0,0,0)",
                                           "line": {"width": 1.5, "color": "black"}}))
    fig.update_layout(title=title or None, height=height, margin={"l": 10, "r": 10, "t": 40 if title else 30, "b": 10},
                      legend={"itemsizing": "constant", "orientation": "h", "y": -0.01, "yanchor": "top", "x": 0},
                      plot_bgcolor="white", dragmode="lasso")
    axis_style = {"showticklabels": False, "zeroline": False, "showgrid": True, "gridcolor": "#eee"}
    fig.update_xaxes(axis_style)  # map axes have no units: the caption names the method instead
    fig.update_yaxes(axis_style)
    return fig


def scatter_png(table: pd.DataFrame, colour_by: str = "true label", title: str = "", axis: str = "",
                dpi: int = 150, credit: str = "") -> bytes:
    """The same map as a PNG, drawn with matplotlib (plotly's PNG export needs kaleido and a browser). A picture
    travels without its page, so it carries the disclaimer and ``credit`` (the data's attribution) under the map
    and in its PNG text fields."""
    fig = Figure(figsize=(7, 6), dpi=dpi)  # the object API, not pyplot: no global state across page sessions
    ax = fig.subplots()
    size = 10 if len(table) <= 2000 else 4
    if colour_by == "confidence":
        points = ax.scatter(table["x"], table["y"], c=table["confidence"], cmap="viridis", vmin=0, vmax=1, s=size)
        fig.colorbar(points, ax=ax, label="confidence")
    else:
        for name, mask, colour in _groups(table, colour_by):
            ax.scatter(table["x"][mask], table["y"][mask], s=size, color=colour, alpha=0.8, label=str(name))
    wrong = (~table["correct"].fillna(True)).to_numpy(bool)
    if wrong.any():
        ax.scatter(table["x"][wrong], table["y"][wrong], s=size * 4, facecolors="none", edgecolors="black",
                   linewidths=0.8, label=f"misclassified ({int(wrong.sum())})")
    if colour_by != "confidence" or wrong.any():
        ax.legend(loc="best", fontsize=8, markerscale=1.5, frameon=True)
    ax.set(title=title, xlabel=f"{axis} 1".strip(), ylabel=f"{axis} 2".strip(), xticks=[], yticks=[])
    footer = "\n".join(textwrap.wrap(f"{DISCLAIMER} {credit}".strip(), FOOTER_WIDTH))
    lines = footer.count("\n") + 1
    fig.tight_layout(rect=(0, 0.025 * lines + 0.01, 1, 1))  # room for the footer under the axes
    fig.text(0.5, 0.01, footer, ha="center", va="bottom", fontsize=7, color="#7c2d12")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Disclaimer": DISCLAIMER, "Source": credit or "not given"})
    return buffer.getvalue()


def csv_bytes(table: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV (coordinates, labels, predictions, confidences, file names)."""
    return table[COLUMNS].to_csv(index=False).encode("utf-8")
