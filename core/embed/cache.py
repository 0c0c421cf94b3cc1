"""On-disk cache of named numpy arrays, keyed by content hashes, so a rerun of the explorer is instant.

Each entry is one ``.npz`` file (``np.savez``, no pickles) under ``<root>/<kind>/<key>.npz`` that also stores
its own key; a file that fails to load or carries another key is deleted and recomputed, never trusted.
Writes go to a temporary file renamed into place, so a crash or a concurrent run never leaves half a file.
When the folder is not writable the cache keeps entries in memory and warns once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

CACHE_ENV = "CNNLENS_CACHE"
MEMORY_ENTRIES = 64  # in-memory fallback keeps this many entries (oldest dropped first)
_KEY_FIELD = "__key__"
log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


def cache_dir() -> Path:
    """``$CNNLENS_CACHE`` if set, else ``~/.cache/cnnlens``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnnlens"


def digest(*parts: object) -> str:
    """A short stable hash of strings, numbers, tuples and arrays (arrays by dtype, shape and bytes)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"nd{part.dtype.str}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, (bytes, bytearray)):
            h.update(b"b" + bytes(part))
        else:
            h.update(repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


def weights_digest(model: nn.Module) -> str:
    """Hash of a model's parameters and buffers: two models share it only if they compute the same thing."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # any dtype, bf16 too
    return h.hexdigest()[:32]


class ArrayCache:
    """Named-array entries on disk (or in memory when the folder cannot be written)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root: Path | None = Path(root) if root is not None else cache_dir()
        self._memory: OrderedDict[tuple[str, str], Arrays] = OrderedDict()
        self._lock = threading.Lock()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as err:
            self._fall_back(err)

    @property
    def persistent(self) -> bool:
        """True when entries survive the process (written to disk)."""
        return self.root is not None

    def _fall_back(self, err: OSError) -> None:
        warnings.warn(f"Cache folder {self.root} is not writable ({err.strerror or err}); results are cached in "
                      f"memory for this session only. Set ${CACHE_ENV} to a writable folder.", stacklevel=3)
        self.root = None

    def path(self, kind: str, key: str) -> Path | None:
        """Where an entry lives on disk (None in memory mode)."""
        return None if self.root is None else self.root / kind / f"{key}.npz"

    def load(self, kind: str, key: str) -> Arrays | None:
        """The arrays stored under (kind, key), or None; a corrupt or mismatched file is deleted."""
        path = self.path(kind, key)
        if path is None:
            with self._lock:
                return self._memory.get((kind, key))
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            if str(arrays.pop(_KEY_FIELD)) != key:
                raise ValueError("entry stored under another key")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("Discarding unreadable cache entry %s (%s); it will be rebuilt.", path, err)
            path.unlink(missing_ok=True)
            return None
        return arrays

    def save(self, kind: str, key: str, arrays: Arrays) -> None:
        """Store arrays atomically under (kind, key)."""
        path = self.path(kind, key)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}-", suffix=".tmp")
                try:
                    with os.fdopen(fd, "wb") as handle:
                        np.savez(handle, **arrays, **{_KEY_FIELD: np.asarray(key)})
                    os.replace(tmp, path)
                finally:
                    Path(tmp).unlink(missing_ok=True)
                return
            except OSError as err:
                self._fall_back(err)
        with self._lock:
            self._memory[(kind, key)] = arrays
            while len(self._memory) > MEMORY_ENTRIES:
                self._memory.popitem(last=False)

    def fetch(self, kind: str, key: str, compute: Callable[[], Arrays]) -> tuple[Arrays, bool]:
        """Stored arrays if present (``hit`` True), else ``compute()`` stored and returned (``hit`` False)."""
        arrays = self.load(kind, key)
        if arrays is not None:
            return arrays, True
        arrays = compute()
        self.save(kind, key, arrays)
        return arrays, False

    def entries(self, kind: str) -> Iterable[Path]:
        """Files of one kind on disk (for tests and housekeeping)."""
        return [] if self.root is None else sorted((self.root / kind).glob("*.npz"))


_DEFAULTS: dict[Path, ArrayCache] = {}
_DEFAULTS_LOCK = threading.Lock()


def default_cache() -> ArrayCache:
    """The cache at :func:`cache_dir`, one instance per folder so a memory fallback lasts the process."""
    root = cache_dir()
    with _DEFAULTS_LOCK:
        if root not in _DEFAULTS:
            _DEFAULTS[root] = ArrayCache(root)
        return _DEFAULTS[root]
