"""The per-request arithmetic of a worker's allowance (``ferrule.quota.allowance``) and the
rate-limit headers it answers with.

In keys mode nearly every request of a key with large limits is admitted from its worker's
allowance and settled into it: the only quota work on the path of the request. Issue 15 bounds
what keys cost (10% more CPU per request than passthrough), and this work, a dozen small Python
calls, cost three times as much inside a loaded server as in a loop, so it is a kernel: one
call admits a request and returns its headers, one settles it.

An ``AllowanceMeter`` holds a grant (requests, tokens, parallel slots, nano-dollars; None for a
limit the key does not have) and counts what its requests took. The buckets' state after the
grant was taken (``rpm`` and ``tpm``: the limit, what would pass then, microseconds until full)
gives the headers' view: what would pass now is that plus what is left here.

Header formats: OpenAI's ``x-ratelimit-*`` (resets as Go durations such as ``12ms``) and
Anthropic's ``anthropic-ratelimit-*`` (resets as RFC 3339 times, whole seconds rounded up), as
``ferrule.quota.engine`` documents with its sources.
"""

from __future__ import annotations

import datetime as dt
import math

__all__ = ["AllowanceMeter", "duration_text", "rate_headers", "rfc3339"]

_MICRO = 1_000_000

_O_REQ = (b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
          b"x-ratelimit-reset-requests")  # fmt: skip
_O_TOK = (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens",
          b"x-ratelimit-reset-tokens")  # fmt: skip
_A_REQ = (b"anthropic-ratelimit-requests-limit", b"anthropic-ratelimit-requests-remaining",
          b"anthropic-ratelimit-requests-reset")  # fmt: skip
_A_TOK = (b"anthropic-ratelimit-tokens-limit", b"anthropic-ratelimit-tokens-remaining",
          b"anthropic-ratelimit-tokens-reset")  # fmt: skip

Bucket = tuple[int, int, float]  # a limit, what would pass after the grant, us until full


class AllowanceMeter:
    """What an allowance granted and what its requests took (see the module)."""

    __slots__ = (
        "_budget_nano", "_requests", "_rpm", "_slots", "_taken_s", "_tokens", "_tpm", "_until",
        "exhausted", "in_flight", "requests", "reserved_in_flight", "returned", "spent",
        "tokens_in_flight", "tokens_used",
    )  # fmt: skip

    def __init__(
        self,
        requests: int | None,
        tokens: int | None,
        slots: int | None,
        budget_nano: int | None,
        rpm: Bucket | None,
        tpm: Bucket | None,
        taken_s: float,
        until: float,
    ) -> None:
        self._requests = requests
        self._tokens = tokens
        self._slots = slots
        self._budget_nano = budget_nano
        self._rpm = rpm
        self._tpm = tpm
        self._taken_s = taken_s  # the store's clock when it was taken
        self._until = until  # monotonic: nothing is admitted from it after this
        self.requests = 0  # admitted from it
        self.tokens_in_flight = 0  # TPM estimates of its requests in flight
        self.tokens_used = 0  # usage of its requests settled
        self.in_flight = 0
        self.reserved_in_flight = 0  # budget reservations of its requests in flight
        self.spent = 0  # exact costs of its requests settled, nano-dollars
        self.exhausted = False  # a request did not fit: to be given back
        self.returned = False  # given back: admits and settles nothing more

    def take(self, tokens: int, reserve_nano: int, now_mono: float) -> bool:
        """Admit a request (its TPM estimate and budget reservation); False when it does not
        fit (the meter is then exhausted), is over, or was given back."""
        if self.returned or now_mono >= self._until:
            return False
        if (
            (self._requests is not None and self.requests >= self._requests)
            or (
                self._tokens is not None
                and self.tokens_in_flight + self.tokens_used + tokens > self._tokens
            )
            or (self._slots is not None and self.in_flight >= self._slots)
            or (
                self._budget_nano is not None
                and self.reserved_in_flight + self.spent + reserve_nano > self._budget_nano
            )
        ):
            self.exhausted = True
            return False
        self.requests += 1
        self.tokens_in_flight += tokens
        self.in_flight += 1
        self.reserved_in_flight += reserve_nano
        return True

    def view(self, now_s: float) -> tuple[int, float, int, float]:
        """Each bucket as the headers show it at ``now_s``: what would pass now and
        microseconds until it is full (zeros for a limit the key does not have)."""
        rl, rr = _view(self._rpm, _left(self._requests, self.requests), self._taken_s, now_s)
        left = _left(self._tokens, self.tokens_in_flight + self.tokens_used)
        tl, tr = _view(self._tpm, left, self._taken_s, now_s)
        return rl, rr, tl, tr

    def admit(
        self, tokens: int, reserve_nano: int, now_mono: float, now_s: float, anthropic: bool
    ) -> list[tuple[bytes, bytes]] | None:
        """``take``, then the request's rate-limit headers in its route's convention; None
        when it did not fit."""
        if not self.take(tokens, reserve_nano, now_mono):
            return None
        rl, rr, tl, tr = self.view(now_s)
        rpm, tpm = self._rpm, self._tpm
        return rate_headers(
            anthropic,
            rpm[0] if rpm is not None else None,
            tpm[0] if tpm is not None else None,
            now_s,
            rl,
            rr,
            tl,
            tr,
        )

    def settle(self, reserved_nano: int, tokens: int, used: int, cost_nano: int) -> bool:
        """Settle a request admitted from it (its reservation, TPM estimate, tokens used and
        exact cost); False when it was given back already (the request then settles in the
        store like any other)."""
        if self.returned:
            return False
        self.in_flight -= 1
        self.reserved_in_flight -= reserved_nano
        self.tokens_in_flight -= tokens
        self.tokens_used += used
        self.spent += cost_nano
        return True

    def unused(self) -> tuple[int, int, int, int]:
        """What giving it back returns: requests, tokens (negative: more were used than taken,
        to be charged), slots, budget reservation (what its requests in flight keep stays
        held); 0 for a limit the key does not have."""
        return (
            self._requests - self.requests if self._requests is not None else 0,
            self._tokens - self.tokens_in_flight - self.tokens_used
            if self._tokens is not None
            else 0,
            self._slots - self.in_flight if self._slots is not None else 0,
            self._budget_nano - self.reserved_in_flight if self._budget_nano is not None else 0,
        )


def _left(granted: int | None, taken: int) -> int:
    return granted - taken if granted is not None else 0


def _view(bucket: Bucket | None, left_here: int, taken_s: float, now_s: float) -> tuple[int, float]:
    if bucket is None:
        return 0, 0.0
    reset = (taken_s - now_s) * _MICRO + bucket[2]
    return bucket[1] + (left_here if left_here > 0 else 0), reset if reset > 0 else 0.0


def rate_headers(
    anthropic: bool,
    rpm_limit: int | None,
    tpm_limit: int | None,
    now_s: float,
    rpm_left: int,
    rpm_reset_us: float,
    tpm_left: int,
    tpm_reset_us: float,
) -> list[tuple[bytes, bytes]]:
    """A key's rate-limit headers from their numbers: per bucket (None: the key has no such
    limit) what would pass now and microseconds until it is full."""
    out: list[tuple[bytes, bytes]] = []
    for names, limit, left, reset in (
        (_A_REQ if anthropic else _O_REQ, rpm_limit, rpm_left, rpm_reset_us),
        (_A_TOK if anthropic else _O_TOK, tpm_limit, tpm_left, tpm_reset_us),
    ):
        if limit is None:
            continue
        if anthropic:
            when = rfc3339(now_s + reset / 1_000_000).encode()
        else:
            ms = math.ceil(reset / 1000)
            when = b"%dms" % ms if 0 <= ms < 1000 else duration_text(reset).encode()
        out += ((names[0], b"%d" % limit), (names[1], b"%d" % left), (names[2], when))
    return out


def duration_text(us: float) -> str:
    """OpenAI's reset format (a Go duration: ``12ms``, ``6.5s``, ``1m0s``)."""
    ms = max(0, math.ceil(us / 1000))
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:g}s"


def rfc3339(unix_s: float) -> str:
    """Anthropic's reset format (RFC 3339, UTC, whole seconds rounded up)."""
    t = dt.datetime.fromtimestamp(math.ceil(unix_s), dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
