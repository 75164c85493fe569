"""The ledger's SQLite file: where it lives, its schema, and opening it.

WAL mode lets every Granian worker write to the same file while ``ferrule stats`` reads it.
``synchronous=NORMAL``: a committed batch survives a process crash (it is in the WAL); a power
cut may lose the last few batches, which the issue allows ("at most the last batch, seconds")."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..sqlite_busy import use_wal

__all__ = [
    "COLUMNS",
    "LEDGER_FILE",
    "SCHEMA_VERSION",
    "LedgerError",
    "default_data_dir",
    "ledger_path",
    "open_db",
    "open_readonly",
    "resolve_data_dir",
]

LEDGER_FILE = "ledger.sqlite3"
SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 5.0

# (column, type). The order is the INSERT order (see writer.row).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "REAL NOT NULL"),  # request start, Unix seconds (UTC)
    ("request_id", "TEXT NOT NULL"),
    ("upstream_request_id", "TEXT"),
    ("tenant", "TEXT"),  # hash of the key
    ("route", "TEXT NOT NULL"),
    ("model", "TEXT NOT NULL"),
    ("stream", "INTEGER NOT NULL"),
    ("status", "INTEGER NOT NULL"),
    ("input_tokens", "INTEGER NOT NULL"),  # uncached
    ("cache_write_5m_tokens", "INTEGER NOT NULL"),
    ("cache_write_1h_tokens", "INTEGER NOT NULL"),
    ("cache_read_tokens", "INTEGER NOT NULL"),
    ("output_tokens", "INTEGER NOT NULL"),
    ("compression_removed_tokens", "INTEGER NOT NULL"),
    ("response_cache", "TEXT NOT NULL"),  # hit | miss | bypass | ''
    ("response_cache_hit", "INTEGER NOT NULL"),
    ("attempts", "INTEGER NOT NULL"),
    ("ttfb_ms", "REAL"),
    ("latency_ms", "REAL NOT NULL"),
    ("backend", "TEXT NOT NULL"),
    ("outcome", "TEXT NOT NULL"),
    ("error_type", "TEXT"),
    ("usage_estimated", "INTEGER NOT NULL"),
    ("cost_usd", "REAL"),  # NULL: unpriced model
    ("saved_caching_tokens", "INTEGER NOT NULL"),
    ("saved_caching_usd", "REAL"),
    ("cache_write_premium_usd", "REAL"),
    ("saved_compression_tokens", "INTEGER NOT NULL"),
    ("saved_compression_usd", "REAL"),
    ("saved_response_cache_tokens", "INTEGER NOT NULL"),
    ("saved_response_cache_usd", "REAL"),
    # Schema 2: who asked (a virtual key's name in keys mode, never the key) and which member of
    # the upstream key pool answered (its configured name, never the key).
    ("key_name", "TEXT"),
    ("upstream_key", "TEXT"),
)

# Schema version N is reached by running _MIGRATIONS[N-1] on version N-1; add, never edit.
_V1_COLUMNS = COLUMNS[: len(COLUMNS) - 2]
_MIGRATIONS: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, "
    + ", ".join(f"{name} {kind}" for name, kind in _V1_COLUMNS)
    + ");\nCREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);",
    "ALTER TABLE requests ADD COLUMN key_name TEXT;\n"
    "ALTER TABLE requests ADD COLUMN upstream_key TEXT;\n"
    "CREATE INDEX IF NOT EXISTS requests_key_ts ON requests (key_name, ts);",
)


class LedgerError(Exception):
    """The ledger cannot be used (newer schema, not a database, ...)."""


def default_data_dir() -> Path:
    """``$FERRULE_DATA_DIR``, else ``$XDG_DATA_HOME/ferrule``, else ``~/.local/share/ferrule``."""
    explicit = os.environ.get("FERRULE_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "ferrule"


def resolve_data_dir(explicit: str | None = None, config_path: str | None = None) -> Path:
    """The data folder: ``explicit`` (a --data-dir flag), else the config's ``data_dir`` when
    the config has that setting, else ``default_data_dir()`` (which honours FERRULE_DATA_DIR).
    Raises ``ferrule.config.ConfigError`` for a broken config file."""
    if explicit:
        return Path(explicit).expanduser()
    if config_path or os.environ.get("FERRULE_CONFIG"):
        from ..config import load

        configured = getattr(load(config_path=config_path), "data_dir", None)
        if configured:
            return Path(str(configured)).expanduser()
    return default_data_dir()


def ledger_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()) / LEDGER_FILE


def open_db(path: str | os.PathLike[str], *, timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open (creating the folder, file and schema if missing) for writing. Raises sqlite3.Error,
    OSError or LedgerError; the writer catches them all."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; the writer opens its own BEGIN.
    conn = sqlite3.connect(os.fspath(path), timeout=timeout, isolation_level=None)
    try:
        use_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    version = _version(conn)
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise LedgerError(
            f"the ledger has schema version {version}; this Ferrule knows {SCHEMA_VERSION}: "
            "upgrade Ferrule or point it at another data folder"
        )
    # IMMEDIATE: two workers starting together must not both migrate; the second waits for
    # the lock (busy timeout), then sees the new version.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(conn)
        for step in _MIGRATIONS[version:SCHEMA_VERSION]:
            for statement in step.split(";\n"):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def open_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection | None:
    """Open an existing ledger for queries; None when there is no ledger yet. Never creates it."""
    p = Path(path)
    if not p.exists():
        return None
    conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        version = _version(conn)
    except BaseException:
        conn.close()
        raise
    if version > SCHEMA_VERSION:
        conn.close()
        raise LedgerError(f"the ledger {p} has schema version {version}, newer than this Ferrule")
    if version < 1:
        conn.close()
        return None  # created but never written (no schema yet)
    return conn
