"""Large request bodies: prepared off the event loop, within a memory budget, without pauses.

A request body of at least ``large_body_bytes`` (256 KiB by default) is parsed, validated,
translated, compressed, keyed and serialized in a worker thread (``asyncio.to_thread``), each
step short enough that the event loop gets the GIL back within milliseconds (see
``ferrule.jsonbody``).

Memory: a parsed request takes several times its size as Python objects (docs/reliability.md
gives the measured factors: ~2x for text, up to ~20x for a body of a million tiny blocks), and
it stays alive until the answer is over. So each worker holds at most ``large_body_budget``
bytes of large bodies at once, counted from the Content-Length before a byte is read; a request
that does not fit waits its turn (first come, first served) up to ``body_timeout``, then gets a
503 with ``retry-after``.

The garbage collector: a parsed request of a million JSON values is a million Python objects,
and every full collection walks all of them while holding the GIL (~100 ms for a 30 MiB request
of 800,000 blocks). While a large body is being prepared, full collections are put off; when it
is ready, its objects are moved out of the collector's sight (``gc.freeze``), and given back
(``gc.unfreeze``) once no large request is in flight, or at the latest after
:data:`FREEZE_AT_MOST` seconds, so that garbage with reference cycles is never kept for long.
Objects with no cycle (the request itself) are freed by reference counting either way; when
the request is over, they are emptied a slice at a time in a thread (``jsonbody.dismantle``)
rather than freed in one ~100 ms go on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import time
from collections.abc import Callable
from typing import Any, TypeVar

from . import jsonbody
from .errors import ProxyError

__all__ = ["FREEZE_AT_MOST", "LargeBodies", "Ticket", "parse_large", "prepare"]

T = TypeVar("T")

FREEZE_AT_MOST = 60.0
"""Seconds objects may stay frozen while large requests keep arriving."""
_NO_FULL_COLLECTION = 1_000_000_000  # a gen-2 threshold never reached


class LargeBodies:
    """The per-worker gate (one per App; used from the event loop thread only)."""

    def __init__(self, threshold: int, budget: int, wait: float) -> None:
        self.threshold = threshold
        self.budget = budget
        self.wait = wait
        self.used = 0  # bytes of large bodies in flight
        self._queue: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._preparing = 0
        self._saved_threshold: tuple[int, int, int] | None = None
        self._frozen = 0
        self._frozen_since = 0.0

    async def enter(self, size: int) -> Ticket:
        """Reserve ``size`` bytes of the budget (a body larger than the whole budget takes all
        of it), waiting in line; a 503 when that takes longer than ``wait``."""
        size = min(size, self.budget)
        if self._queue or self.used + size > self.budget:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (size, turn)
            self._queue.append(entry)
            try:
                await asyncio.wait_for(asyncio.shield(turn), self.wait)
            except asyncio.TimeoutError:
                if turn.done():  # granted just as the wait ran out: keep it
                    pass
                else:
                    self._queue.remove(entry)
                    self._grant()
                    raise ProxyError(
                        503,
                        f"Ferrule is busy with other large requests (at most {self.budget} bytes "
                        "of them per worker, large_body_budget); retry shortly",
                        type="overloaded_error",
                        code="large_body_budget",
                        headers=[(b"retry-after", b"1")],
                    ) from None
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self.used -= size  # granted, but the request went away meanwhile
                else:
                    self._queue.remove(entry)
                self._grant()
                raise
        else:
            self.used += size
        self._preparing += 1
        if self._preparing == 1:
            t0, t1, t2 = gc.get_threshold()
            self._saved_threshold = (t0, t1, t2)
            gc.set_threshold(t0, t1, _NO_FULL_COLLECTION)
        return Ticket(self, size)

    def _grant(self) -> None:
        """Let the requests at the head of the line in, as far as the budget allows."""
        while self._queue and self.used + self._queue[0][0] <= self.budget:
            size, turn = self._queue.popleft()
            if not turn.done():
                self.used += size
                turn.set_result(None)

    def _prepared(self) -> None:
        self._preparing -= 1
        # What is alive now (the prepared request above all) is left out of full collections.
        gc.freeze()
        if not self._frozen:
            self._frozen_since = time.monotonic()
        self._frozen += 1
        if self._preparing == 0 and self._saved_threshold is not None:
            gc.set_threshold(*self._saved_threshold)
            self._saved_threshold = None

    def _closed(self, size: int) -> None:
        self.used -= size
        self._grant()
        self._frozen -= 1
        if self._frozen == 0 or time.monotonic() - self._frozen_since > FREEZE_AT_MOST:
            gc.unfreeze()
            self._frozen_since = time.monotonic()

    @property
    def frozen(self) -> int:
        """Requests whose objects are frozen right now (for tests)."""
        return self._frozen


class Ticket:
    """One large request's share of the budget: ``prepared()`` once its upstream payload is
    built, ``close()`` when the request is over (both idempotent). ``kept``: the request's large
    objects (the parsed body, its translation), emptied a slice at a time in a thread when the
    request is over (``jsonbody.dismantle``)."""

    __slots__ = ("_gate", "_open", "_preparing", "kept", "size")

    def __init__(self, gate: LargeBodies, size: int) -> None:
        self._gate = gate
        self.size = size
        self._preparing = True
        self._open = True
        self.kept: list[Any] = []

    def prepared(self) -> None:
        if self._preparing:
            self._preparing = False
            self._gate._prepared()

    def close(self) -> None:
        self.prepared()
        if self._open:
            self._open = False
            self._gate._closed(self.size)


async def prepare(large: bool, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``fn(*args, **kwargs)``: inline for a small request (a hop to a thread costs more than
    the work), in a worker thread for a large one."""
    if large:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


def parse_large(raw: bytes) -> Any:
    """A large body parsed in bounded steps (run it in a thread). Invalid JSON, or nesting
    deeper than ``jsonbody.MAX_DEPTH`` in a part too large for one step, is a 400."""
    try:
        return jsonbody.loads(raw)
    except jsonbody.JsonError as exc:
        raise ProxyError(400, f"the request body is not valid JSON: {exc}") from None
    except jsonbody.TooDeep as exc:
        raise ProxyError(400, f"the request body is nested too deeply: {exc}") from None
