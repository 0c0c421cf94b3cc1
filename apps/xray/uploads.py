"""Uploaded files: read them once, then remove them from Gradio's upload folder shortly after the request.

Gradio stores an upload under a folder named by the file's hash, so two visitors sending the same X-ray at
once share one path; deleting it the instant one request finishes could pull it from under the other.
So each use (re)arms a short grace period, and a background sweep deletes files whose grace has passed,
unless the file was uploaded again in the meantime (Gradio then renames a new file into place: another
inode), in which case it gets a fresh grace period for that upload's request.

Only files a visitor uploaded are ever touched: inside Gradio's upload folder, recorded by Gradio's ``/upload`` route
(``Blocks.upload_file_set``), and not among the files the app put there itself when it was built (the examples'
thumbnails, in its components' ``temp_files`` when the janitor is bound). A client that names an example's path
(published in ``/config``) instead of uploading gets its prediction, and the example stays.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from gradio.context import LocalContext
from gradio.utils import get_upload_folder

from core.io import MAX_BYTES

GRACE_SECONDS = 60.0
SWEEP_SECONDS = 10.0
UNCLAIMED_SECONDS = 600.0  # an upload no request has read by then is deleted (its request was refused or lost)


class UploadError(ValueError):
    """An upload that cannot be read; the message is human."""


def _mtime(path: Path) -> float:
    """When the entry was last modified (infinitely recent when it is gone)."""
    try:
        return path.lstat().st_mtime
    except OSError:
        return float("inf")


def _inode(file: Path) -> int:
    """The file's inode number, 0 when it does not exist."""
    try:
        return file.stat().st_ino
    except OSError:
        return 0


class UploadJanitor:
    """Reads uploaded files and deletes them ``grace`` seconds after their last use."""

    def __init__(self, root: Path | None = None, grace: float = GRACE_SECONDS) -> None:
        self.root = Path(root or get_upload_folder()).resolve()
        self.grace = grace
        self._due: dict[Path, tuple[float, int]] = {}  # file -> (deadline, inode it had when scheduled)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._blocks: object | None = None
        self._own: frozenset[str] = frozenset()  # files the app itself put in the folder before serving

    def bind(self, blocks: object) -> None:
        """Judge uploads by this built Blocks' records: its ``upload_file_set``, and the files its components hold
        now (example thumbnails, initial values), which are never deleted even if an identical upload lands on one
        of their paths (Gradio names both by content). The app binds its own before it serves; unbound, the Blocks
        of the Gradio request being served is used, without that protection."""
        self._blocks = blocks
        sets = getattr(blocks, "temp_file_sets", None) or []
        uploads = getattr(blocks, "upload_file_set", None)
        own = {str(f) for files in sets if files is not uploads for f in files}
        self._own = frozenset(own | {str(Path(f).resolve()) for f in own})

    def take(self, path: str | Path) -> bytes:
        """The file's bytes (at most core.io's limit); schedules its deletion when it is a visitor's upload."""
        file = Path(path).resolve()
        if self.is_upload(path):
            self._schedule(file)
        try:
            size = file.stat().st_size
            if size > MAX_BYTES:
                raise UploadError(f"The file is larger than {MAX_BYTES // 2**20} MiB.")
            return file.read_bytes()
        except FileNotFoundError as err:
            raise UploadError("The uploaded file is no longer on the server; upload it again.") from err
        except OSError as err:
            raise UploadError(f"The uploaded file could not be read ({type(err).__name__}).") from err

    def release(self, path: str | Path) -> None:
        """Schedule an upload for deletion without reading it (for files another loader opens by path)."""
        if self.is_upload(path):
            self._schedule(Path(path).resolve())

    def is_upload(self, path: str | Path) -> bool:
        """True for a file a visitor uploaded: inside Gradio's upload folder, recorded by its ``/upload`` route and
        not one of the app's own files (an example thumbnail uploaded again lands on its path). Outside any Gradio
        app (scripts, tests) every file in the folder counts as the caller's upload; inside one whose records
        cannot be read, none does."""
        file = Path(path).resolve()
        if not file.is_relative_to(self.root):
            return False  # never delete anything Gradio did not receive as an upload
        names = {str(path), str(file)}
        if names & self._own:
            return False
        blocks = self._blocks if self._blocks is not None else LocalContext.blocks.get(None)
        if blocks is None:
            return True
        uploads = getattr(blocks, "upload_file_set", None)
        if not isinstance(uploads, set):
            return False
        return any(name in uploads for name in names)  # membership only: Gradio adds to the set meanwhile

    def flush(self) -> int:
        """Delete every scheduled upload now (at shutdown)."""
        return self.sweep(now=float("inf"), force=True)

    def expire_unclaimed(self, max_age: float = UNCLAIMED_SECONDS) -> int:
        """Schedule for deletion every visitor's upload older than ``max_age`` seconds that no request has read:
        uploads whose request was refused at the queue (quota, full queue) or never sent never reach ``take``.
        Only with a bound Blocks (its ``upload_file_set`` lists them). Returns how many were scheduled."""
        uploads = getattr(self._blocks, "upload_file_set", None)
        if not isinstance(uploads, set):
            return 0
        cutoff, found = time.time() - max_age, 0
        for name in list(uploads):  # a copy: Gradio adds to the set meanwhile
            file = Path(name).resolve()
            with self._lock:
                known = file in self._due
            if not known and _mtime(file) <= cutoff and self.is_upload(name):
                self._schedule(file)
                found += 1
        return found

    def tidy(self, min_age: float = 0.0) -> int:
        """Remove what Gradio leaves behind in its upload folder: empty folders (one per file hash, emptied when
        their file is deleted) and empty ``tmp*`` files at the top (its multipart parser leaves one for each
        upload a gradio_client sends). Only entries untouched for ``min_age`` seconds, so an upload being received
        is never disturbed; everything at shutdown. Returns how many were removed."""
        removed, cutoff = 0, time.time() - min_age
        walked = sorted(os.walk(self.root), key=lambda entry: -len(Path(entry[0]).parts))  # deepest first
        stale = {folder for folder, _, _ in walked if _mtime(Path(folder)) <= cutoff}  # before removals touch them
        for folder, _, files in walked:
            path = Path(folder)
            if path == self.root:
                for name in files:
                    stray = path / name
                    try:
                        info = stray.lstat()
                    except OSError:
                        continue
                    if name.startswith("tmp") and info.st_size == 0 and info.st_mtime <= cutoff:
                        stray.unlink(missing_ok=True)
                        removed += 1
            elif folder in stale and not path.is_symlink() and not files:
                try:
                    path.rmdir()  # only succeeds when empty
                    removed += 1
                except OSError:
                    pass
        return removed

    def _schedule(self, file: Path) -> None:
        if not file.is_relative_to(self.root):
            return  # never delete anything Gradio did not receive as an upload
        with self._lock:
            self._due[file] = (time.monotonic() + self.grace, _inode(file))

    def sweep(self, now: float | None = None, force: bool = False) -> int:
        """Delete every upload whose grace period has passed (and its folder when empty), except those uploaded
        again since they were scheduled (unless ``force``); returns how many files were deleted."""
        clock = time.monotonic()
        now = clock if now is None else now
        deleted = 0
        with self._lock:
            expired = [(f, inode) for f, (due, inode) in self._due.items() if due <= now]
            for file, inode in expired:
                current = _inode(file)
                if current not in (inode, 0) and not force:  # uploaded again since: keep it for that request
                    self._due[file] = (clock + self.grace, current)
                    continue
                del self._due[file]
                file.unlink(missing_ok=True)
                deleted += current != 0
                try:
                    if file.parent != self.root:
                        file.parent.rmdir()  # only succeeds when empty
                except OSError:
                    pass
        return deleted

    def pending(self) -> int:
        """How many uploads are waiting for deletion."""
        with self._lock:
            return len(self._due)

    def start(self) -> None:
        """Sweep in a daemon thread every few seconds."""
        if self._thread is not None:
            return

        def loop() -> None:
            while True:
                time.sleep(min(SWEEP_SECONDS, self.grace))
                self.expire_unclaimed(max(self.grace, UNCLAIMED_SECONDS))
                self.sweep()
                self.tidy(min_age=self.grace)

        self._thread = threading.Thread(target=loop, name="upload-janitor", daemon=True)
        self._thread.start()
