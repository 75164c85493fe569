"""What a busy SQLite file looks like, and the WAL switch that must wait one out.

Several processes share Ferrule's SQLite files (the workers of one ``ferrule serve``, the CLI,
replicas on one host). A lock held by another connection is retried; a broken disk is not.

``PRAGMA journal_mode=WAL`` on a new file needs the exclusive lock. When two processes switch it
at the same moment, both hold the shared lock and want the exclusive one; SQLite answers one of
them SQLITE_BUSY at once, without calling the busy handler, because waiting could deadlock
(https://www.sqlite.org/c3ref/busy_handler.html). So the switch is retried here until a
deadline. WAL is a property of the file: once one process has switched it, the others read
"wal" and have nothing to do.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Final

__all__ = ["is_busy", "use_wal"]

_BUSY_CODES: Final = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (primary codes; extended ones share them)


def is_busy(exc: sqlite3.Error) -> bool:
    """True when ``exc`` says another connection holds the lock (retry), not that the disk is
    broken. ``sqlite_errorcode`` is Python 3.11+; 3.10 only has the message."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES
    text = str(exc)
    return "database is locked" in text or "database table is locked" in text


def use_wal(conn: sqlite3.Connection, *, deadline_s: float = 10.0) -> str:
    """Put ``conn``'s database in WAL mode and return the journal mode it has then ("memory"
    for an in-memory database, which has no WAL). A contended switch is retried for up to
    ``deadline_s`` seconds (0: not at all, for a caller on the event loop, which retries
    later); then the sqlite3.OperationalError is raised."""
    give_up = time.monotonic() + deadline_s
    pause = 0.002
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return "wal"
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() + pause > give_up:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
