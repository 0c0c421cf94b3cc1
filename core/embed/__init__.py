"""Embedding explorer: what a trained network's layers make of a dataset, as maps, numbers and neighbours.

- ``sources``: image folders, zip uploads, MedMNIST and scikit-learn's digits as one ImageSet type.
- ``digits`` / ``models``: the built-in digits CNN, zoo models and seeded untrained copies.
- ``features``: batched, cached layer embeddings with predictions.
- ``projection``: PCA, t-SNE, UMAP (cached; UMAP compiled in the background).
- ``metrics`` / ``neighbours``: silhouette, k-NN accuracy, similar-image search, precision@k.
- ``plot``: the WebGL scatter, PNG and CSV export.
- ``cache``: the on-disk array cache everything above shares.
"""

from core.embed.cache import ArrayCache, cache_dir, default_cache
from core.embed.features import Embeddings, embed, embed_array
from core.embed.metrics import Separation, knn_accuracy, separation, silhouette
from core.embed.models import layer_names, load, model_names, spec_for, untrained_copy
from core.embed.neighbours import label_agreement, nearest, neighbour_index, precision_at_k
from core.embed.projection import METHODS, METRICS, ProjectionParams, project, warm_up_umap
from core.embed.sources import (
    ImageSet,
    SourceError,
    digits_source,
    folder_source,
    medmnist_flags,
    medmnist_source,
    subsample,
    thumbnail,
    zip_source,
)

__all__ = [
    "METHODS", "METRICS", "ArrayCache", "Embeddings", "ImageSet", "ProjectionParams", "Separation", "SourceError",
    "cache_dir", "default_cache", "digits_source", "embed", "embed_array", "folder_source", "knn_accuracy",
    "label_agreement", "layer_names", "load", "medmnist_flags", "medmnist_source", "model_names", "nearest",
    "neighbour_index", "precision_at_k", "project", "separation", "silhouette", "spec_for", "subsample",
    "thumbnail", "untrained_copy", "warm_up_umap", "zip_source",
]
