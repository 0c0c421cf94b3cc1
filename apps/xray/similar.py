"""Similar cases: the training X-rays nearest to an upload in the bundled model's embedding space.

The index is built once per process in a background thread, so the app serves at once; the embeddings come
from ``core.embed``'s on-disk cache (keyed by the weights and the data folder's contents, so it is rebuilt
when either changes) and only the first launch on a machine pays for embedding the folder.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

from core.embed import ImageSet, SourceError, embed, embed_array, folder_source, nearest, neighbour_index, thumbnail
from core.embed.cache import cache_dir, default_cache
from core.explain import warm_up
from core.io import ImageError
from core.zoo import LoadedModel, ModelUnavailable, load_model

log = logging.getLogger(__name__)
THUMBNAIL = 128


@dataclass(frozen=True)
class Neighbour:
    """One similar training image."""

    item: str
    label: str
    distance: float
    thumbnail: np.ndarray


class SimilarCases:
    """A nearest-neighbour index over the data folder, built in the background."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._lock = threading.Lock()
        self._progress = 0.0
        self._problem: str | None = None
        self._ready = threading.Event()
        self._loaded: LoadedModel | None = None
        self._images: ImageSet | None = None
        self._kept: np.ndarray | None = None
        self._index: NearestNeighbors | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Prepare the model's DeepLIFT and LRP copies, then begin building the index (returns at once).

        DeepLIFT's copy is made by tracing the model with torch.fx, which patches ``nn.Module.__call__`` for the whole
        process while it runs: done after this thread starts, it would hijack the index's forward passes ("module
        is not installed as a submodule"). Done first, no trace of this model's architecture runs again."""
        if self._thread is None:
            with contextlib.suppress(ModelUnavailable):  # the thread reports it
                warm_up(load_model(self.model_name))

            self._thread = threading.Thread(target=self._build, name="similar-cases-index", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the index is ready or has failed; True when ready."""
        self._ready.wait(timeout)
        return self._index is not None

    def _build(self) -> None:
        try:
            loaded = load_model(self.model_name)
            images = folder_source()
            emb = embed(loaded, images, progress=self._set_progress)
            with self._lock:
                self._loaded, self._images, self._kept = loaded, images, emb.kept
                self._index = neighbour_index(emb.vectors)
            log.info("similar cases: %d images indexed (%s)", len(emb), "from cache" if emb.from_cache else "built")
            if not default_cache().persistent:  # told to the operator in the log, where they look
                log.warning("similar cases: the cache folder %s is not writable, so the index is cached in memory "
                            "and rebuilt at every start; set $CNNLENS_CACHE to a writable folder", cache_dir())
        except (ModelUnavailable, SourceError, ValueError, OSError) as err:
            with self._lock:
                self._problem = str(err)
            log.warning("similar cases unavailable: %s", err)
        finally:
            self._ready.set()

    def _set_progress(self, fraction: float) -> None:
        with self._lock:
            self._progress = fraction

    def status(self) -> str:
        """A sentence on the index: ready, being built (with progress) or unavailable (with the reason)."""
        with self._lock:
            if self._index is not None and self._images is not None:
                return (f"Nearest of {self._index.n_samples_fit_:,} training X-rays in {self.model_name}'s "
                        "embedding space (caption: label · cosine distance).")
            if self._problem is not None:
                return f"Similar cases are unavailable: {self._problem}"
            return f"The similar-cases index is being built ({self._progress:.0%}); try again in a moment."

    def query(self, array: np.ndarray, k: int = 6) -> list[Neighbour]:
        """The k nearest indexed images to an image in [0, 1]; empty while the index is not ready."""
        with self._lock:
            loaded, images, kept, index = self._loaded, self._images, self._kept, self._index
        if index is None or loaded is None or images is None or kept is None:
            return []
        vector, _ = embed_array(loaded, array)
        distances, positions = nearest(index, vector, k)
        out = []
        for distance, position in zip(distances, positions, strict=True):
            i = int(kept[position])
            try:
                thumb = thumbnail(images.image(i), THUMBNAIL)
            except ImageError:  # the file changed since indexing: skip it rather than fail the request
                continue
            out.append(Neighbour(images.items[i], images.class_names[images.labels[i]], float(distance), thumb))
        return out
