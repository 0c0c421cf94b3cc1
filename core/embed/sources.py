"""Where the explorer's images come from: a class-folder tree, a zip of one, MedMNIST, or scikit-learn's digits.

Every source becomes an :class:`ImageSet`: labels, display names, patient groups (so cross-validation never
puts one patient on both sides) and a per-image identity from which a fingerprint is hashed for the cache
(paths with sizes and modification times, the bytes of uploaded files, or the arrays themselves).
Pixels are decoded on demand through ``core.io.load_image``, so a 5,000-image folder costs no memory.
"""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from core.data import IMAGE_SUFFIXES, data_dir, index_folder, patient_id
from core.embed.cache import cache_dir, digest
from core.io import ImageError, load_image

ZIP_MAX_MEMBERS = 20_000
ZIP_MAX_MEMBER_BYTES = 32 * 2**20  # one radiograph as PNG is a few MiB; DICOMs rarely exceed this
ZIP_MAX_TOTAL_BYTES = 1024 * 2**20  # uncompressed total: guards against zip bombs
ZIP_MAX_RATIO = 200  # compression ratio above which a member is treated as a bomb (images barely compress)


class SourceError(ValueError):
    """A data source that cannot be used; ``str(err)`` says why and what to do."""


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Labelled images with names, patient groups and identities; pixels load lazily.

    ``store`` holds, per image, a file path or the file's bytes (decoded by ``core.io.load_image``), or is one
    N x H x W (x 3) integer array whose values are divided by ``scale``.
    """

    name: str
    class_names: tuple[str, ...]
    labels: np.ndarray
    items: tuple[str, ...]
    groups: tuple[str, ...]
    keys: tuple[str, ...]
    store: tuple[Path | bytes, ...] | np.ndarray
    scale: float = 255.0
    notes: tuple[str, ...] = field(default=())
    folder: Path | None = None  # the class-folder tree the images were listed from, if any

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as float32 in [0, 1] (H x W or H x W x 3); raises ImageError for a bad file."""
        entry = self.store[i]
        if isinstance(entry, np.ndarray):
            return entry.astype(np.float32) / self.scale
        return load_image(entry).array

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        """The images at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=int)
        store = self.store[idx] if isinstance(self.store, np.ndarray) else tuple(self.store[i] for i in idx)
        pick = lambda seq: tuple(seq[i] for i in idx)  # noqa: E731
        return ImageSet(self.name, self.class_names, self.labels[idx], pick(self.items), pick(self.groups),
                        pick(self.keys), store, self.scale, self.notes, self.folder)

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the class names, labels and every image's identity: changes when the data does."""
        return digest("imageset-v1", self.class_names, self.labels.astype(np.int64), self.keys)

    def label_names(self) -> list[str]:
        """Class name of every image."""
        return [self.class_names[i] for i in self.labels]


# ---------------------------------------------------------------- folder


def folder_source(root: Path | str | None = None) -> ImageSet:
    """Images under ``root/<class>/`` (default: ``core.data.data_dir()``, the chest X-ray training folder)."""
    folder = Path(root).expanduser() if root else data_dir()
    if folder is None:
        raise SourceError("No image folder found: set $CNNLENS_DATA to a folder with one subfolder per class, "
                          "upload a zip, or use the built-in digits.")
    try:
        index = index_folder(folder)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as err:
        raise SourceError(str(err)) from err
    keys = []
    for path in index.paths:
        info = path.stat()
        keys.append(f"{path}|{info.st_size}|{info.st_mtime_ns}")
    items = tuple(f"{p.parent.name}/{p.name}" for p in index.paths)
    return ImageSet(f"folder {folder}", index.class_names, index.labels, items,
                    tuple(patient_id(p) for p in index.paths), tuple(keys), index.paths, folder=folder)


# ---------------------------------------------------------------- zip upload


def zip_source(data: bytes, name: str = "upload.zip") -> ImageSet:
    """Images from a zip of a class-folder tree, read in memory: nothing is extracted to disk.

    Unsafe members (absolute paths, ``..``, symlinks), oversized or bomb-like members and files that are not
    readable images are skipped and counted in ``notes``; archives that would expand beyond
    ``ZIP_MAX_TOTAL_BYTES`` or hold more than ``ZIP_MAX_MEMBERS`` files are refused.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise SourceError(f"{name} is not a readable zip archive ({err}).") from err
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > ZIP_MAX_MEMBERS:
            raise SourceError(f"{name} holds {len(members):,} files; the limit is {ZIP_MAX_MEMBERS:,}.")
        if sum(m.file_size for m in members) > ZIP_MAX_TOTAL_BYTES:
            raise SourceError(f"{name} would expand to more than {ZIP_MAX_TOTAL_BYTES // 2**20} MiB; "
                              "upload a smaller archive.")
        skipped: Counter[str] = Counter()
        candidates: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
        for member in members:
            reason, parts = _member_problem(member)
            if reason:
                skipped[reason] += 1
            elif parts is not None:
                candidates.append((parts, member))
        prefix = _common_folder([parts[:-1] for parts, _ in candidates])
        found: list[tuple[str, str, bytes]] = []  # (class, item, bytes)
        total = 0
        for parts, member in candidates:
            if len(parts) - 1 <= len(prefix):
                skipped["not inside a class folder"] += 1
                continue
            try:
                with archive.open(member) as handle:
                    payload = handle.read(ZIP_MAX_MEMBER_BYTES + 1)
            except (RuntimeError, NotImplementedError, zipfile.BadZipFile, OSError, EOFError):
                skipped["encrypted or corrupt in the archive"] += 1
                continue
            total += len(payload)
            if len(payload) > ZIP_MAX_MEMBER_BYTES or total > ZIP_MAX_TOTAL_BYTES:
                skipped["too large"] += 1
                continue
            try:
                load_image(payload)
            except ImageError:
                skipped["not a readable image"] += 1
                continue
            found.append((parts[len(prefix)], "/".join(parts[len(prefix):]), payload))
    notes = _skip_notes(skipped)
    if not found:
        raise SourceError(f"{name} has no readable images in class folders. {' '.join(notes)}".strip())
    found.sort(key=lambda f: (f[0], f[1]))
    class_names = tuple(sorted({cls for cls, _, _ in found}))
    labels = np.asarray([class_names.index(cls) for cls, _, _ in found], dtype=np.int64)
    items = tuple(item for _, item, _ in found)
    keys = tuple(hashlib.sha1(payload).hexdigest() for _, _, payload in found)
    return ImageSet(f"zip {name}", class_names, labels, items, tuple(patient_id(i.rsplit("/", 1)[-1]) for i in items),
                    keys, tuple(payload for _, _, payload in found), notes=tuple(notes))


def _member_problem(member: zipfile.ZipInfo) -> tuple[str | None, tuple[str, ...] | None]:
    """(reason to skip, None) or (None, path parts); (None, None) for silently ignored OS clutter."""
    raw = member.filename.replace("\\", "/")
    parts = PurePosixPath(raw).parts
    if raw.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts:
        return "unsafe path (absolute or containing ..)", None
    if stat.S_ISLNK(member.external_attr >> 16):
        return "symbolic link", None
    if parts[0] == "__MACOSX" or parts[-1].startswith("."):
        return None, None
    if PurePosixPath(raw).suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image file type", None
    if member.file_size > ZIP_MAX_MEMBER_BYTES:
        return "too large", None
    if member.compress_size and member.file_size / member.compress_size > ZIP_MAX_RATIO:
        return "suspicious compression ratio (zip bomb?)", None
    return None, tuple(p for p in parts if p not in ("", "."))


def _common_folder(folders: list[tuple[str, ...]]) -> tuple[str, ...]:
    """Longest folder prefix shared by all files that still leaves every file inside a class folder."""
    if not folders:
        return ()
    prefix = folders[0]
    for f in folders[1:]:
        n = 0
        while n < min(len(prefix), len(f)) and prefix[n] == f[n]:
            n += 1
        prefix = prefix[:n]
    while prefix and any(f == prefix for f in folders):
        prefix = prefix[:-1]  # a wrapper folder that is itself the only class folder stays a class
    return prefix


def _skip_notes(skipped: Counter[str]) -> list[str]:
    if not skipped:
        return []
    detail = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    return [f"Skipped {sum(skipped.values())} file(s): {detail}."]


# ---------------------------------------------------------------- MedMNIST


def medmnist_flags() -> dict[str, str]:
    """2-D single-label MedMNIST datasets: flag -> one-line description."""
    from medmnist import INFO

    return {flag: info["description"].split(". ")[0] for flag, info in INFO.items()
            if not flag.endswith("3d") and info["task"] != "multi-label, binary-class"}


def medmnist_source(flag: str = "pneumoniamnist", split: str = "test", size: int = 28,
                    root: Path | str | None = None, download: bool = True) -> ImageSet:
    """A MedMNIST split via the ``medmnist`` package, downloaded once into ``root`` (default: cache folder)."""
    import medmnist

    if flag not in medmnist_flags():
        raise SourceError(f"Unknown or unsupported MedMNIST dataset {flag!r}; choose one of "
                          f"{', '.join(medmnist_flags())}.")
    info = medmnist.INFO[flag]
    folder = Path(root) if root else cache_dir() / "medmnist"
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
    if not file.is_file() and not download:
        raise SourceError(f"{file.name} is not in {folder}; allow the download or copy the file there.")
    try:
        dataset = getattr(medmnist, info["python_class"])(split=split, root=str(folder), size=size,
                                                          download=not file.is_file())
    except (RuntimeError, OSError, KeyError, ValueError, AssertionError) as err:
        url = info["url" if size == 28 else f"url_{size}"].split("?")[0]
        raise SourceError(f"MedMNIST {flag} ({size} px) is not on this machine and could not be downloaded "
                          f"(no internet?). Connect once, or download {url} into {folder}.") from err
    images = np.asarray(dataset.imgs)
    labels = np.asarray(dataset.labels).reshape(len(images), -1)[:, 0].astype(np.int64)
    class_names = tuple(info["label"][str(i)] for i in range(len(info["label"])))
    data_id = digest("medmnist", flag, size, split, images, labels)
    n = len(images)
    return ImageSet(f"MedMNIST {flag} {split} ({size} px)", class_names, labels,
                    tuple(f"{flag}/{split}/{i:05d}" for i in range(n)), tuple(str(i) for i in range(n)),
                    tuple(f"{data_id}:{i}" for i in range(n)), images, 255.0,
                    (f"MedMNIST v2 {flag} (Yang et al. 2023), {info['license']}.",))


# ---------------------------------------------------------------- scikit-learn digits


def digits_source() -> ImageSet:
    """scikit-learn's bundled 1,797 handwritten digits (8 x 8, values 0-16): works offline, no download.

    Item names say whether the image was in the digits CNN's training half (``train/``) or held out.
    """
    from sklearn.datasets import load_digits

    from core.embed.digits import digits_train_indices

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    train = set(digits_train_indices(labels).tolist())
    n = len(images)
    items = tuple(f"{'train' if i in train else 'held-out'}/{i:04d}" for i in range(n))
    data_id = digest("digits", images, labels)
    return ImageSet("scikit-learn digits", tuple(str(c) for c in bunch.target_names), labels, items,
                    tuple(str(i) for i in range(n)), tuple(f"{data_id}:{i}" for i in range(n)), images, 16.0,
                    ("UCI optical recognition of handwritten digits, as bundled with scikit-learn.",))


# ---------------------------------------------------------------- subsampling and display


def subsample(images: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """A seeded, class-stratified random subset of ``n`` images (all of them when ``n`` >= the set's size)."""
    if n >= len(images):
        return images
    if n < 1:
        raise ValueError(f"subsample size must be at least 1, got {n}")
    positions = np.arange(len(images))
    try:
        chosen, _ = train_test_split(positions, train_size=n, stratify=images.labels, random_state=seed)
    except ValueError:  # a class too small to stratify, or n below the number of classes
        chosen = np.random.default_rng(seed).choice(positions, size=n, replace=False)
    return images.subset(np.sort(chosen))


def thumbnail(array: np.ndarray, size: int = 128) -> np.ndarray:
    """A uint8 copy for display whose longer side is ``size``: nearest-neighbour when enlarging tiny images."""
    img = Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8))
    scale = size / max(img.size)
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    out = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)
    return np.asarray(out)
