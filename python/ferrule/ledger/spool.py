"""The ledger's local spool: where rows wait, on disk, while the shared database is unreachable.

Each writer (one per worker process) owns one folder under ``<data_dir>/ledger-spool/``, held by
an exclusive ``flock`` on its ``lock`` file for the writer's life. Rows are appended to segment
files (``000000000001.jsonl``, ...): a header line naming the columns, then one JSON array per
row; every ``append`` is one ``write`` followed by ``fsync``, so a batch the writer counted as
spooled survives a crash of the process or the host. Segments are replayed oldest first and
deleted only after the database committed every row in them; a crash between the commit and
the delete replays the segment again, which the database's unique key makes harmless (the
spool gives at-least-once, the database's ``ON CONFLICT DO NOTHING`` makes it exactly once).

The spool is bounded (``max_bytes``): past that, ``append`` refuses and the writer counts the
rows as dropped; a full disk is the same. A folder whose lock nobody holds belongs to a writer
that is gone (a restarted worker, a crashed replica): ``orphans()`` lets a live writer adopt it
and replay its rows, so a restart loses nothing either."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

__all__ = ["SPOOL_DIR", "Spool", "SpoolFull", "read_segment"]

log = logging.getLogger("ferrule.ledger")

SPOOL_DIR: Final = "ledger-spool"
_LOCK: Final = "lock"
_SUFFIX: Final = ".jsonl"
_SEGMENT_BYTES: Final = 4 * 1024 * 1024  # a new segment past this: a replayed one is deleted


class SpoolFull(Exception):
    """The spool cannot take these rows (its bound, or the disk): the caller drops them."""


class Spool:
    """One writer's spool folder: append rows, replay them in order, forget replayed ones."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        columns: Sequence[str],
        *,
        max_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = _SEGMENT_BYTES,
        owner: str | None = None,
    ) -> None:
        """Create and lock a new folder under ``root``. Raises OSError when it cannot."""
        self.root = Path(root)
        self.columns = list(columns)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        name = owner or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.dir = self.root / name
        self.dir.mkdir()
        self._lock_fd = _lock(self.dir)
        if self._lock_fd is None:  # pragma: no cover - a fresh unique folder
            raise OSError(f"spool folder {self.dir} is locked by another process")
        self._seq = 0
        self._segments: list[Path] = []  # closed or open, oldest first
        self._segment_rows: dict[Path, int] = {}
        self._file: Any = None  # the open segment being appended to
        self._file_bytes = 0
        self._bytes = 0  # bytes in all segments
        self._rows = 0  # rows waiting
        _fsync_dir(self.root)

    # -- writing -------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        """Rows waiting in this spool."""
        return self._rows

    @property
    def bytes(self) -> int:
        return self._bytes

    def append(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append rows (in ``columns`` order) durably: written and fsynced before returning.
        Raises SpoolFull (nothing of the batch kept) when the bound or the disk refuses."""
        if not rows:
            return
        data = b"".join(orjson.dumps(list(r)) + b"\n" for r in rows)
        if self._bytes + len(data) > self.max_bytes:
            raise SpoolFull(f"the spool holds {self._bytes} bytes (max_bytes {self.max_bytes})")
        try:
            if self._file is None or self._file_bytes >= self.segment_bytes:
                self._open_segment()
            f = self._file
            start = f.tell()
            try:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                # Cut the partial batch off: what was counted as spooled must be whole lines.
                with contextlib.suppress(OSError):
                    f.truncate(start)
                    f.seek(start)
                raise
        except OSError as exc:
            raise SpoolFull(f"cannot write the spool {self.dir}: {exc}") from exc
        self._file_bytes += len(data)
        self._bytes += len(data)
        self._rows += len(rows)
        self._segment_rows[self._segments[-1]] += len(rows)

    def _open_segment(self) -> None:
        self._close_segment()
        self._seq += 1
        path = self.dir / f"{self._seq:012d}{_SUFFIX}"
        f = open(path, "xb")  # noqa: SIM115 - kept open across appends
        header = orjson.dumps({"columns": self.columns}) + b"\n"
        f.write(header)
        f.flush()
        os.fsync(f.fileno())
        _fsync_dir(self.dir)
        self._file = f
        self._file_bytes = len(header)
        self._bytes += len(header)
        self._segments.append(path)
        self._segment_rows[path] = 0

    def _close_segment(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    # -- replaying -----------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """The segments waiting, oldest first. Closes the open one, so the next append starts a
        new segment and a replayed segment is never appended to again."""
        self._close_segment()
        return list(self._segments)

    def forget(self, segment: Path) -> None:
        """The database committed every row of ``segment`` (the oldest): delete it."""
        if not self._segments or self._segments[0] != segment:
            raise ValueError(f"{segment} is not the oldest segment")
        self._close_segment()  # never delete the file being appended to
        size = segment.stat().st_size if segment.exists() else 0
        rows = self._segment_rows.pop(segment, 0)
        segment.unlink(missing_ok=True)
        self._segments.pop(0)
        self._bytes = max(0, self._bytes - size)
        self._rows = max(0, self._rows - rows)

    def close(self) -> None:
        """Close the files and release the lock; remove the folder when nothing waits in it
        (otherwise it stays, for the next writer to adopt)."""
        self._close_segment()
        if not self._segments:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    # -- other writers' leftovers --------------------------------------------------------------

    def has_orphans(self) -> bool:
        """True when another folder exists (maybe a dead writer's, maybe a live one's)."""
        try:
            return any(p.is_dir() and p != self.dir for p in self.root.iterdir())
        except OSError:
            return False

    def orphans(self) -> Iterator[tuple[Path, list[Path]]]:
        """Folders of writers that are gone, each locked while the caller replays it: yields
        (folder, its segments oldest first); the folder is removed when the caller asks for
        the next one (or ends the loop) having forgotten every segment (``unlink``)."""
        try:
            names = sorted(p for p in self.root.iterdir() if p.is_dir() and p != self.dir)
        except OSError:
            return
        for folder in names:
            fd = _lock(folder)
            if fd is None:
                continue  # a live writer's
            try:
                segments = sorted(folder.glob(f"*{_SUFFIX}"))
                yield folder, segments
                if not any(folder.glob(f"*{_SUFFIX}")):
                    shutil.rmtree(folder, ignore_errors=True)
            finally:
                os.close(fd)


def read_segment(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a segment as {column: value}. A torn last line (a crash while appending,
    before the fsync returned: the batch was never counted as spooled) is skipped."""
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        columns: list[str] | None = None
        for line in f:
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                if line.endswith(b"\n"):
                    log.warning("ledger spool %s: skipping an unreadable line", path)
                continue
            if columns is None:
                if not isinstance(value, dict) or not isinstance(value.get("columns"), list):
                    log.warning("ledger spool %s: no header; segment skipped", path)
                    return
                columns = [str(c) for c in value["columns"]]
                continue
            if isinstance(value, list) and len(value) == len(columns):
                yield dict(zip(columns, value, strict=True))


def _lock(folder: Path) -> int | None:
    """An fd holding an exclusive lock on ``folder/lock``; None when another process holds it."""
    try:
        fd = os.open(folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _fsync_dir(path: Path) -> None:
    """Make a created or removed file's name durable (the file's own fsync does not)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
