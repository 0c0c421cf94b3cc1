"""Embeddings: what one layer of a network outputs for every image, globally average-pooled, with predictions.

Images are decoded and preprocessed exactly as the apps do (``core.zoo.preprocess``, batched) by a DataLoader, run
through the model in batches of 64, and the chosen layer's output is captured by a forward hook. Batch size was
measured (``bench/embeddings.py`` prints the sweep): on an idle 2-core CPU, 16 is best (3.0 ms per image against
3.6 for 64), but with other work on the cores 64 was 1.5-3x faster than 16 in every run; 64 risks little and
saves much. The result is cached on disk under a key made of the weights, the layer, the preprocessing and the
data's fingerprint, so a rerun with the same inputs is a file read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core.embed.cache import ArrayCache, default_cache, digest, weights_digest
from core.embed.sources import ImageSet
from core.hooks import capture
from core.io import ImageError
from core.zoo import LoadedModel, Preprocessing, get_layer, normalise, preprocess, resize, to_channels

BATCH_SIZE = 64
WORKER_THRESHOLD = 256
ProgressFn = Callable[[float], None]


@dataclass(frozen=True, eq=False)
class Embeddings:
    """One vector per readable image, with the model's prediction and confidence for it.

    ``kept`` are positions into the ImageSet that was embedded (images that failed to decode are left out and
    listed in ``skipped`` with the reason).
    """

    vectors: np.ndarray
    predictions: np.ndarray
    confidences: np.ndarray
    kept: np.ndarray
    skipped: tuple[str, ...]
    layer: str
    key: str
    from_cache: bool

    def __len__(self) -> int:
        return len(self.vectors)


def pooled(output: torch.Tensor) -> torch.Tensor:
    """A layer output as one vector per image: spatial (and any further) axes averaged, i.e. global pooling."""
    return output.flatten(2).mean(dim=2) if output.ndim > 2 else output


class _Decoded(Dataset):
    """Image i of an ImageSet as a C x H x W tensor with the model's channel count, or why it is unreadable."""

    def __init__(self, images: ImageSet, channels: int) -> None:
        self.images, self.channels = images, channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str]:
        try:
            return torch.from_numpy(np.ascontiguousarray(to_channels(self.images.image(i), self.channels))), i, ""
        except ImageError as err:
            return None, i, f"{self.images.items[i]}: {err}"


def _collate(batch: list[tuple[torch.Tensor | None, int, str]], prep: Preprocessing
             ) -> tuple[torch.Tensor | None, list[int], list[str]]:
    """Resize and normalise a batch exactly as ``core.zoo.preprocess`` does one image, but in one call when the
    images share a size (4x cheaper per image than one call each on this CPU)."""
    good = [(x, i) for x, i, _ in batch if x is not None]
    errors = [err for x, _, err in batch if x is None]
    if not good:
        return None, [], errors
    tensors = [x for x, _ in good]
    if all(t.shape == tensors[0].shape for t in tensors):
        x = resize(torch.stack(tensors), prep.size)
    else:
        x = torch.cat([resize(t[None], prep.size) for t in tensors])
    return normalise(x, prep), [i for _, i in good], errors


@torch.inference_mode()
def forward_features(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features of ``layer``, class probabilities) for one preprocessed batch.

    The features are the layer's own output, not what an in-place operation after it makes of it (``bn1`` of a
    ResNet is followed by ``ReLU(inplace=True)``); for a layer used twice, its last use, the one nearest the head.
    """
    with capture(model, layer) as record:
        probs = torch.softmax(model(x), dim=1)
    if record.activations is None:
        raise ValueError(f"Layer {layer!r} produced no tensor output in the forward pass.")
    return pooled(record.activations).float(), probs


def default_workers(n_images: int) -> int:
    """One decoding process beside the forward pass for sets of 256+ images on a multi-core machine, else none.

    Measured on 800 X-rays here: 22.6-25.0 s with one worker against 28.5-35.2 s without (decoding overlaps the
    forward pass); below a few hundred images the worker's start-up costs more than it saves.
    """
    return 1 if n_images >= WORKER_THRESHOLD and (os.cpu_count() or 1) > 1 else 0


def embedding_key(loaded: LoadedModel, images: ImageSet, layer: str) -> str:
    """Cache key: model weights, layer, preprocessing and the data's fingerprint."""
    return digest("embeddings-v2", weights_digest(loaded.model), layer, loaded.spec.preprocessing,
                  images.fingerprint)


def embed(loaded: LoadedModel, images: ImageSet, layer: str | None = None, *, batch_size: int = BATCH_SIZE,
          cache: ArrayCache | None = None, progress: ProgressFn | None = None, show_progress: bool = False,
          num_workers: int | None = None) -> Embeddings:
    """Embeddings of every image at ``layer`` (default: the spec's embedding layer), cached on disk.

    ``progress`` receives the fraction done after each batch; ``show_progress`` adds a tqdm bar.
    ``num_workers`` decoding processes (default: :func:`default_workers`).
    """
    layer = layer or loaded.spec.embedding_layer
    get_layer(loaded.model, layer)  # fail early, with the layer's name, before any image is decoded
    if len(images) == 0:
        raise ValueError("There are no images to embed.")
    key = embedding_key(loaded, images, layer)
    store = cache or default_cache()
    arrays, hit = store.fetch("embeddings", key, lambda: _compute(loaded, images, layer, batch_size, progress,
                                                                  show_progress, num_workers))
    if progress is not None:
        progress(1.0)
    return Embeddings(arrays["vectors"], arrays["predictions"], arrays["confidences"], arrays["kept"],
                      tuple(str(s) for s in arrays["skipped"]), layer, key, hit)


def _compute(loaded: LoadedModel, images: ImageSet, layer: str, batch_size: int, progress: ProgressFn | None,
             show_progress: bool, num_workers: int | None) -> dict[str, np.ndarray]:
    prep = loaded.spec.preprocessing
    workers = default_workers(len(images)) if num_workers is None else num_workers
    loader = DataLoader(_Decoded(images, prep.channels), batch_size=batch_size, num_workers=workers,
                        collate_fn=partial(_collate, prep=prep))
    vectors, probs, kept, skipped = [], [], [], []
    done = 0
    with tqdm(total=len(images), desc="Embedding", unit="img", disable=not show_progress, leave=False) as bar:
        for x, idx, errors in loader:
            skipped += errors
            if x is not None:
                feats, p = forward_features(loaded.model, layer, x.to(loaded.device))
                vectors.append(feats.cpu().numpy())
                probs.append(p.cpu().numpy())
                kept += idx
            done += len(idx) + len(errors)
            bar.update(len(idx) + len(errors))
            if progress is not None:
                progress(done / len(images))
    if not kept:
        raise ValueError(f"None of the {len(images)} images could be read. {' '.join(skipped[:3])}")
    p = np.concatenate(probs)
    return {"vectors": np.concatenate(vectors).astype(np.float32), "predictions": p.argmax(1).astype(np.int64),
            "confidences": p.max(1).astype(np.float32), "kept": np.asarray(kept, dtype=np.int64),
            "skipped": np.asarray(skipped, dtype=str)}


def embed_array(loaded: LoadedModel, array: np.ndarray, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embedding vector, class probabilities) of one image in [0, 1], e.g. an uploaded query."""
    x = preprocess(array, loaded.spec.preprocessing, loaded.device)
    feats, probs = forward_features(loaded.model, layer or loaded.spec.embedding_layer, x)
    return feats[0].cpu().numpy(), probs[0].cpu().numpy()
