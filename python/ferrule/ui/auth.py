"""Sign-in to the dashboard: the admin key, once, for a sealed session cookie.

The cookie holds a token sealed with the server key (``ferrule.seal``, AES-GCM): its expiry,
a CSRF token and a fingerprint of the admin key's digest, so a changed admin key ends every
session, and nothing in it can be read or changed by its holder. Every worker holding the
same server key opens it, so a session works whichever worker a request reaches. The CSRF
token travels in the page's ``x-csrf-token`` header (or a ``csrf`` form field) on every write
and must equal the one sealed in the cookie."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson

from ..seal import Sealer, SealError

__all__ = ["COOKIE", "Session", "admin_key_matches", "new_session", "open_session"]

COOKIE = "ferrule_ui"
_CONTEXT = b"ferrule-ui-session-v1"


@dataclass(frozen=True)
class Session:
    expires: float
    csrf: str


def _fingerprint(admin_sha256: str) -> str:
    return hashlib.sha256(b"ferrule-ui\x00" + admin_sha256.encode()).hexdigest()[:16]


def admin_key_matches(given: str, admin_sha256: str) -> bool:
    digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).hexdigest()
    return bool(admin_sha256) and hmac.compare_digest(digest, admin_sha256)


def new_session(sealer: Sealer, admin_sha256: str, ttl: float) -> tuple[str, Session]:
    session = Session(expires=time.time() + ttl, csrf=secrets.token_urlsafe(24))
    body = {"exp": session.expires, "csrf": session.csrf, "adm": _fingerprint(admin_sha256)}
    return sealer.seal(orjson.dumps(body), _CONTEXT), session


def open_session(sealer: Sealer, token: str, admin_sha256: str) -> Session | None:
    """The session a cookie value carries, or None (forged, changed, expired, or made under
    another admin key)."""
    if not token or len(token) > 1024:
        return None
    try:
        body = orjson.loads(sealer.open(token, _CONTEXT))
        expires = float(body["exp"])
        csrf = str(body["csrf"])
        fingerprint = str(body["adm"])
    except (SealError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if expires <= time.time() or not hmac.compare_digest(fingerprint, _fingerprint(admin_sha256)):
        return None
    return Session(expires=expires, csrf=csrf)


def csrf_ok(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), session.csrf.encode())
