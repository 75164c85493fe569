"""Signatures of the simulated upstream's thinking blocks, checked when they come back.

Anthropic's ``signature`` (and a ``redacted_thinking`` block's ``data``) is opaque: the API checks
it when a block is sent back, and a forged, edited or truncated block is a 400. On the models with
*preserved thinking* (Claude Fable 5.1 and later, the 5.5 models) it is also bound to its prefix:
the top-level ``system``, the ``tools`` and every message before the block. If any of that changed
since the block was made, the block is "bound to a different conversation" (400, or dropped when
``thinking.block_binding.prefix_mismatch_behavior`` is ``"drop_block"``).
Source: https://platform.claude.com/docs/en/build-with-claude/preserved-thinking

The mock signs each block with an HMAC over the model, the block's text as sent and a digest of
its prefix, so it can tell all three cases apart. The prefix is compared as content, not bytes:
``cache_control`` markers (which move every turn) are left out, a string ``content`` or ``system``
equals its one text block, and consecutive same-role messages count as one turn (the API combines
them), so only a real change to what the model saw fails the check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Signed", "Turn", "prefix_digest", "sign", "turns_of", "verify"]

# A fixed key: the mock only has to recognise its own signatures, not keep a secret.
_KEY = b"ferrule-mock-thinking-signature-v1"
_THINKING, _REDACTED = 1, 2
_TAG, _DIGEST, _MAC = 8, 16, 16
_LENGTH = 1 + _TAG + 2 * _DIGEST + _MAC

Turn = tuple[str, list[dict[str, Any]]]
"""A role and its content blocks, consecutive messages of one role combined."""


@dataclass(frozen=True)
class Signed:
    """What a valid signature says about its block."""

    kind: int
    model_tag: bytes
    prefix: bytes


def _plain(block: Any) -> Any:
    if isinstance(block, dict):
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, list):
        return [_plain(b) for b in content]
    return []


def turns_of(messages: Any) -> list[Turn]:
    """The conversation as the API reads it: consecutive same-role messages combined."""
    turns: list[Turn] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role"))
        blocks = _blocks(message.get("content"))
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    return turns


def prefix_digest(body: dict[str, Any], turns: Sequence[Turn], role: str, before: int) -> bytes:
    """The digest of what precedes a block: ``system``, ``tools``, ``turns`` and the first
    ``before`` blocks of the block's own turn (whose role is ``role``)."""
    current: list[Any] = []
    if turns and turns[-1][0] == role:
        *turns, (_, blocks) = turns
        current = blocks[:before]
    prefix = {
        "system": _blocks(body.get("system")),
        "tools": [_plain(t) for t in body.get("tools") or []],
        "turns": [[r, b] for r, b in turns],
        "current": [role, current],
    }
    return hashlib.sha256(orjson.dumps(prefix, option=orjson.OPT_SORT_KEYS)).digest()[:_DIGEST]


def _model_tag(model: str) -> bytes:
    return hashlib.sha256(model.encode()).digest()[:_TAG]


def _text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:_DIGEST]


def sign(model: str, text: str | None, prefix: bytes) -> str:
    """The ``signature`` of a thinking block whose text (as sent) is ``text``, or the ``data`` of
    a redacted_thinking block (``text`` None)."""
    kind = _REDACTED if text is None else _THINKING
    payload = bytes([kind]) + _model_tag(model) + _text_digest(text or "") + prefix[:_DIGEST]
    mac = hmac.new(_KEY, payload, hashlib.sha256).digest()[:_MAC]
    return base64.b64encode(payload + mac).decode()


def verify(signature: Any, text: str | None) -> Signed | None:
    """What a signature made by :func:`sign` says, or None when it is not one (forged,
    truncated, or its block's text was edited)."""
    if not isinstance(signature, str):
        return None
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _LENGTH:
        return None
    payload, mac = raw[:-_MAC], raw[-_MAC:]
    if not hmac.compare_digest(mac, hmac.new(_KEY, payload, hashlib.sha256).digest()[:_MAC]):
        return None
    kind = payload[0]
    if kind != (_REDACTED if text is None else _THINKING):
        return None
    digest = payload[1 + _TAG : 1 + _TAG + _DIGEST]
    if kind == _THINKING and not hmac.compare_digest(digest, _text_digest(text or "")):
        return None
    return Signed(kind=kind, model_tag=payload[1 : 1 + _TAG], prefix=payload[1 + _TAG + _DIGEST :])
