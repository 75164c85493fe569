"""Authenticated encryption for what Ferrule must get back exactly as it gave it.

Thinking blocks kept between tool turns, reasoning items and compaction items handed to
Responses clients carry Anthropic's signatures and a conversation's content: at rest and in a
client's hands they are sealed with AES-256-GCM under a server key. The tenant (a hash of the
caller's key) is the associated data, so an item sealed for one caller does not open for another,
and a changed byte does not open at all.

Keys (``secret_key`` / ``FERRULE_SECRET_KEY``): one or more secrets separated by commas. The first
seals; every one opens, so a key is rotated by putting the new one first and dropping the old one
once the items sealed with it have expired. With no secret configured, one is generated into the
data folder (``secret.key``, mode 0600) the first time a worker needs it, and every worker and
restart of that host reads the same file.

A sealed token is text: ``fs1.`` + URL-safe base64 of (4-byte key id, 12-byte nonce, ciphertext
and tag). The key id is the start of a hash of the key, only to pick the key that opens it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SECRET_FILE", "SealError", "Sealer", "load_sealer"]

SECRET_FILE = "secret.key"
_PREFIX = "fs1."
_DOMAIN = b"ferrule-seal-v1\x00"
_KID = 4
_NONCE = 12


class SealError(ValueError):
    """A token that does not open: forged, changed, foreign, or sealed with a retired key."""


def _derive(secret: str) -> bytes:
    # Any operator string becomes a 256-bit key; the domain keeps it apart from other uses.
    return hashlib.sha256(_DOMAIN + secret.strip().encode()).digest()


class Sealer:
    __slots__ = ("_by_kid", "_kid", "_seal")

    def __init__(self, secrets_: list[str]) -> None:
        keys = [_derive(s) for s in secrets_ if s.strip()]
        if not keys:
            raise ValueError("at least one secret is needed")
        self._by_kid: dict[bytes, AESGCM] = {}
        for key in keys:
            self._by_kid.setdefault(hashlib.sha256(key).digest()[:_KID], AESGCM(key))
        self._kid = hashlib.sha256(keys[0]).digest()[:_KID]
        self._seal = self._by_kid[self._kid]

    def seal(self, plaintext: bytes, context: bytes) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._kid + nonce + self._seal.encrypt(nonce, plaintext, context)
        return _PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, token: str, context: bytes) -> bytes:
        """The plaintext, or SealError (never a more specific reason: nothing for a forger)."""
        if not isinstance(token, str) or not token.startswith(_PREFIX):
            raise SealError("not a Ferrule-sealed item")
        body = token[len(_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            raise SealError("not a Ferrule-sealed item") from None
        if len(raw) < _KID + _NONCE + 16:
            raise SealError("not a Ferrule-sealed item")
        aead = self._by_kid.get(raw[:_KID])
        if aead is None:
            raise SealError("sealed with a key this server does not hold")
        try:
            return aead.decrypt(raw[_KID : _KID + _NONCE], raw[_KID + _NONCE :], context)
        except InvalidTag:
            raise SealError("the item was changed or belongs to another caller") from None


def _generated_secret(data_dir: Path) -> str:
    """The host's generated secret: created once (O_EXCL, so concurrent workers agree)."""
    path = data_dir / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text("ascii").strip()
        if text:
            return text
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another worker won the race: wait (briefly) for its write to land and use it.
        for _ in range(100):
            text = path.read_text("ascii").strip()
            if text:
                return text
            time.sleep(0.01)
        raise
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def load_sealer(secret_key: str, data_dir: Path) -> Sealer:
    """The sealer for a config: its comma-separated secrets, or the host's generated one."""
    given = [s for s in secret_key.split(",") if s.strip()] if secret_key else []
    return Sealer(given or [_generated_secret(data_dir)])
