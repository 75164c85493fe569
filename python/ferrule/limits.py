"""Bounds on what a request may carry, checked before any work is done on it.

- identifiers that Ferrule stores or counts (the model goes into the ledger, ``/stats`` and the
  metrics) are printable and short; ``metadata.user_id`` (and OpenAI's ``user``) too;
- at most :data:`MAX_MESSAGES` messages, Anthropic's own limit per request, so no request makes
  Ferrule work on more than the API would accept;
- integers Ferrule does arithmetic with (``max_tokens``) stay far from any 64-bit edge;
- nesting at most ``jsonbody.MAX_DEPTH`` levels deep in what Ferrule forwards or re-encodes.

Every breach is a 400 naming the field, raised as a ``ProxyError`` (each route renders it in its
own error format)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ProxyError
from .jsonbody import MAX_DEPTH, too_deep

__all__ = [
    "MAX_ID_CHARS",
    "MAX_MESSAGES",
    "MAX_TOKENS",
    "check_anthropic_body",
    "check_depth",
    "check_identifier",
    "required_identifier",
    "shallow_enough",
]

MAX_ID_CHARS = 256
MAX_MESSAGES = 100_000
MAX_TOKENS = 2**31 - 1


def _bad(message: str, param: str | None) -> ProxyError:
    return ProxyError(400, message, type="invalid_request_error", param=param)


def check_identifier(value: Any, name: str, *, required: bool = False) -> None:
    """``value`` is a non-empty printable string of at most :data:`MAX_ID_CHARS` characters
    (or absent, unless ``required``)."""
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        raise _bad(f"'{name}' is required and must be a string", name)
    if len(value) > MAX_ID_CHARS:
        raise _bad(f"'{name}' is longer than {MAX_ID_CHARS} characters", name)
    if not value.isprintable():
        raise _bad(f"'{name}' must not contain control or other non-printable characters", name)


def required_identifier(value: Any, name: str) -> str:
    """``value`` checked by :func:`check_identifier`, which it must be."""
    check_identifier(value, name, required=True)
    return str(value)


def shallow_enough(value: Any, raw: bytes | str | None = None, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests at most ``limit`` levels. ``raw``, the JSON it was parsed from,
    makes the common case free: fewer opening brackets than the limit cannot nest deeper."""
    if raw is not None:
        if isinstance(raw, str):
            if raw.count("[") + raw.count("{") <= limit:
                return True
        elif raw.count(b"[") + raw.count(b"{") <= limit:
            return True
    return not too_deep(value, limit)


def check_depth(value: Any, name: str | None, raw: bytes | str | None = None) -> None:
    """A 400 when ``value`` (the field ``name``, or the whole body when None) nests too deep."""
    if not shallow_enough(value, raw):
        what = f"'{name}'" if name else "the request body"
        raise _bad(f"{what} is nested more than {MAX_DEPTH} levels deep", name)


def check_anthropic_body(body: Mapping[str, Any], raw: bytes) -> None:
    """The bounds of an Anthropic Messages request (``/v1/messages`` and ``count_tokens``).
    Only what Ferrule itself depends on: everything else is for the API to judge."""
    check_identifier(body.get("model"), "model")
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        check_identifier(metadata.get("user_id"), "metadata.user_id")
    messages = body.get("messages")
    if isinstance(messages, list) and len(messages) > MAX_MESSAGES:
        raise _bad(
            f"'messages' holds {len(messages)} messages; the limit is {MAX_MESSAGES:,}", "messages"
        )
    # The whole body may be re-encoded (breakpoints, compression, the cache key).
    check_depth(body, None, raw)
