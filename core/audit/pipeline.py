"""The per-batch audit step both engines run: decode, assess, embed and explain a batch of files into rows.

``Auditor`` holds one loaded model and turns a batch of file paths into an Arrow table with one row per file;
the local engine calls it in a loop, Ray Data uses the same class as an actor (``map_batches``), so both engines
compute every number with the same code. Nothing here is re-implemented: decoding is ``core.io.load_image``
(with its size limits), preprocessing ``core.zoo.preprocess``, probability, operating-threshold prediction, OOD
score and the pooled embedding ``core.trust`` (one forward pass), maps ``core.explain.explain`` (one batched
call per method).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from core.audit.summaries import MAP_SIDE, SUMMARY_FIELDS, downsample, summarise
from core.data import CLASS_NAMES, IMAGE_SUFFIXES
from core.explain import METHODS, explain
from core.io import ImageError, load_image
from core.trust import interpret, logits_and_features
from core.trust.ood import colourfulness
from core.zoo import LoadedModel, load_model, preprocess

BATCH_SIZE = 32


@dataclass(frozen=True)
class AuditConfig:
    """What an audit computes: the model, the explanation methods and the stored map size."""

    model: str
    methods: tuple[str, ...] = ("grad_cam",)
    map_side: int = MAP_SIDE
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"Unknown method(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(METHODS)}.")

    def as_dict(self) -> dict:
        """JSON-able form, stored beside the parts so a rerun can check it continues the same audit."""
        return {**asdict(self), "methods": list(self.methods)}


@dataclass(frozen=True)
class Item:
    """One file to audit: its path, its name in the results (relative to the data folder) and true label."""

    path: str
    file: str
    label: str | None


def list_items(folder: Path | str) -> list[Item]:
    """Every image under ``folder`` (suffixes of ``core.data.IMAGE_SUFFIXES``), sorted; labelled by its
    NORMAL/PNEUMONIA subfolder when the folder has both, unlabelled otherwise."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Data folder {root} does not exist or is not a folder.")
    labelled = all((root / name).is_dir() for name in CLASS_NAMES)
    tops = [root / name for name in CLASS_NAMES] if labelled else [root]
    items = []
    for top in tops:
        for path in sorted(p for p in top.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            items.append(Item(str(path), path.relative_to(root).as_posix(), top.name if labelled else None))
    if not items:
        raise FileNotFoundError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return items


def map_column(method: str) -> str:
    """Name of the column holding a method's downsampled map (flattened, row-major)."""
    return f"map_{method}"


def summary_column(method: str, field: str) -> str:
    """Name of the column holding one summary share of a method's map."""
    return f"{method}_{field}"


def schema(config: AuditConfig) -> pa.Schema:
    """The columns every part file has, in order."""
    fields = [("file", pa.string()), ("label", pa.string()), ("prediction", pa.string()),
              ("probability", pa.float64()), ("threshold", pa.float64()), ("ood_score", pa.float64()),
              ("in_distribution", pa.bool_()), ("embedding", pa.list_(pa.float32()))]
    for method in config.methods:
        fields.append((map_column(method), pa.list_(pa.float32())))
        fields += [(summary_column(method, f), pa.float64()) for f in SUMMARY_FIELDS]
    fields.append(("error", pa.string()))
    return pa.schema(fields)


class Auditor:
    """One model, ready to audit batches; the callable Ray Data keeps in each actor of its pool."""

    def __init__(self, config: AuditConfig, device: str | None = None) -> None:
        self.config = config
        self.loaded: LoadedModel = load_model(config.model, torch.device(device) if device else None)
        self.schema = schema(config)

    def __call__(self, batch: dict[str, Sequence]) -> pa.Table:
        """Rows for a batch given as columns ``path``, ``file``, ``label`` (Ray passes numpy arrays)."""
        items = [Item(str(p), str(f), None if lab is None or lab != lab else str(lab))  # lab != lab: NaN
                 for p, f, lab in zip(batch["path"], batch["file"], batch["label"], strict=True)]
        return self.audit(items)

    def audit(self, items: Sequence[Item]) -> pa.Table:
        """One row per item; files that cannot be read give a row with only ``file``, ``label`` and ``error``."""
        rows: list[dict] = [{"file": it.file, "label": it.label} for it in items]
        tensors, colour, good = [], [], []
        for i, it in enumerate(items):
            try:
                image = load_image(it.path)
                tensors.append(preprocess(image, self.loaded.spec.preprocessing))
                colour.append(colourfulness(image.array))
                good.append(i)
            except (ImageError, OSError) as err:
                rows[i]["error"] = f"{type(err).__name__}: {err}"
        if good:
            self._fill([rows[i] for i in good], torch.cat(tensors), colour)
        return pa.Table.from_pylist(rows, schema=self.schema)

    def _fill(self, rows: list[dict], x: torch.Tensor, colour: list[float]) -> None:
        names = self.loaded.spec.class_names
        logits, features = logits_and_features(self.loaded, x)
        assessments = interpret(self.loaded, logits, features, colour)
        targets = [names.index(a.label) for a in assessments]  # the class on the prediction card is explained
        for row, a, f in zip(rows, assessments, features.numpy(), strict=True):
            row.update(prediction=a.label, probability=a.probability, threshold=a.threshold,
                       ood_score=a.ood_score, in_distribution=a.in_distribution, embedding=f.astype(np.float32))
        for method in self.config.methods:
            found = explain(self.loaded, x, method, targets, seed=self.config.seed, batch_size=len(x))
            heatmaps = np.stack([e.heatmap for e in found])
            small = downsample(heatmaps, self.config.map_side).reshape(len(x), -1)
            for row, heatmap, flat in zip(rows, heatmaps, small, strict=True):
                row[map_column(method)] = flat
                for field, value in asdict(summarise(heatmap)).items():
                    row[summary_column(method, field)] = value
