"""Key operations shared by ``ferrule keys`` and the admin API: parsing what a person typed,
creating and rotating keys (the only places a key exists in clear), and announcing changes to
the other workers through Redis."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from ..ledger import ledger_path
from .model import BUDGET_PERIODS, VirtualKey
from .store import DEFAULT_GRACE, KeyInfo, KeyProblem, KeyStore, SQLiteKeyStore, new_key

__all__ = [
    "CHANNEL",
    "announce",
    "create_key",
    "limits_from_json",
    "open_key_store",
    "parse_duration",
    "parse_models",
    "rotate_key",
]

log = logging.getLogger("ferrule.keys")

CHANNEL = "ferrule:keys:changed"  # Redis pub/sub: a key changed (the message names nothing)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.I)
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def open_key_store(data_dir: str | os.PathLike[str], database_url: str = "") -> KeyStore:
    """The shared PostgreSQL store when ``database_url`` is set (replicas on several hosts see
    one set of keys), else SQLite in ``data_dir``'s ledger file."""
    if database_url:
        from .store_pg import PostgresKeyStore  # psycopg is the optional `postgres` extra

        return PostgresKeyStore(database_url)
    return SQLiteKeyStore(ledger_path(data_dir))


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``30d``, ``2w`` or plain seconds, as seconds."""
    m = _DURATION.match(text)
    if not m:
        raise KeyProblem(f"{text!r} is not a duration (like 90s, 30m, 12h, 30d, 2w)")
    seconds = float(m.group(1)) * _UNIT[m.group(2).lower()]
    if not math.isfinite(seconds) or seconds > 100 * 365 * 86400:
        raise KeyProblem(f"{text!r} is too long a duration")
    return seconds


def parse_models(value: str | list[Any] | tuple[Any, ...]) -> tuple[str, ...]:
    """A comma list (or JSON list) of model names or fnmatch globs."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise KeyProblem("models must be strings (model names or globs)")
        if item.strip():
            out.append(item.strip())
    return tuple(out)


def create_key(
    store: KeyStore,
    name: str,
    *,
    budget_usd: float | None = None,
    budget_period: str = "total",
    rpm: int | None = None,
    tpm: int | None = None,
    max_parallel: int | None = None,
    models: tuple[str, ...] = (),
    expires_in: float | None = None,
) -> tuple[KeyInfo, str]:
    """A new key named ``name``; returns its record and the key (shown once, never stored)."""
    key, digest = new_key()
    now = time.time()
    record = VirtualKey(
        name=name,
        digest=digest,
        budget_usd=budget_usd,
        budget_period=budget_period,
        rpm=rpm,
        tpm=tpm,
        max_parallel=max_parallel,
        models=models,
        expires_at=now + expires_in if expires_in is not None else None,
        created_at=now,
    )
    store.create(record)
    info = store.get(name)
    assert info is not None
    return info, key


def rotate_key(store: KeyStore, name: str, grace: float = DEFAULT_GRACE) -> tuple[KeyInfo, str]:
    key, digest = new_key()
    return store.rotate(name, digest, grace), key


def limits_from_json(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """The admin API's JSON fields as ``create_key`` keywords (``creating``) or ``update``
    changes; ``null`` clears a limit. ``expires_in`` (seconds or a duration string) or
    ``expires_at`` (Unix seconds)."""
    allowed = {
        "budget_usd",
        "budget_period",
        "rpm",
        "tpm",
        "max_parallel",
        "models",
        "expires_in",
        "expires_at",
    }
    if creating:
        allowed.add("name")
    unknown = set(body) - allowed
    if unknown:
        raise KeyProblem(f"unknown field(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    if "budget_usd" in body:
        out["budget_usd"] = _number(body["budget_usd"], "budget_usd")
    if "budget_period" in body:
        period = body["budget_period"]
        if period not in BUDGET_PERIODS:
            raise KeyProblem(f"budget_period must be one of {', '.join(BUDGET_PERIODS)}")
        out["budget_period"] = period
    for field in ("rpm", "tpm", "max_parallel"):
        if field in body:
            value = body[field]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise KeyProblem(f"{field} must be a whole number or null")
            out[field] = value
    if "models" in body:
        models = body["models"]
        if models is None:
            models = []
        if not isinstance(models, str | list):
            raise KeyProblem("models must be a list of model names or globs")
        out["models"] = parse_models(models)
    if "expires_in" in body and "expires_at" in body:
        raise KeyProblem("give expires_in or expires_at, not both")
    if "expires_in" in body:
        value = body["expires_in"]
        seconds = None if value is None else _seconds(value, "expires_in")
        if creating:
            out["expires_in"] = seconds
        else:
            out["expires_at"] = None if seconds is None else time.time() + seconds
    if "expires_at" in body:
        at = _number(body["expires_at"], "expires_at")
        if creating:
            out["expires_in"] = None if at is None else at - time.time()
        else:
            out["expires_at"] = at
    return out


def _number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KeyProblem(f"{field} must be a number or null")
    return float(value)


def _seconds(value: Any, field: str) -> float:
    if isinstance(value, str):
        return parse_duration(value)
    number = _number(value, field)
    if number is None or number < 0:
        raise KeyProblem(f"{field} must be 0 or more seconds")
    return number


def announce(redis_url: str) -> None:
    """Tell every worker on every host that a key changed (their caches drop it at once). Only
    an acceleration: workers also poll the store's change counter twice a second, so a Redis
    that is down costs at most that delay."""
    if not redis_url:
        return
    try:
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.publish(CHANNEL, b"1")
        finally:
            client.close()
    except Exception as exc:  # never fail a key change for its announcement
        log.warning(
            "key change not announced on Redis (%s): workers see it within 1 s",
            type(exc).__name__,
        )
