"""Cancel-safe time limits.

``asyncio.wait_for`` on Python 3.11 can swallow a cancellation that arrives just as the awaited
operation completes (the task is left "cancelling" but keeps running). The fake sleeps and times
out constantly, so that race was real: a stopped server waited for an ``infinite`` scenario to run
out. These helpers use ``asyncio.wait``, which never hides the caller's cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_within", "wait_future"]

T = TypeVar("T")
MAX_WAIT = 1e6  # "forever" (math.inf) is clamped here; hard limits end it long before


async def _finish(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" noise


async def run_within(coro: Coroutine[Any, Any, T], seconds: float) -> T:
    """Run ``coro`` for at most ``seconds``; on expiry cancel it and raise ``TimeoutError``."""
    task = asyncio.get_running_loop().create_task(coro)
    try:
        done, _ = await asyncio.wait([task], timeout=min(max(seconds, 0.0), MAX_WAIT))
    except asyncio.CancelledError:
        await _finish(task)
        raise
    if not done:
        await _finish(task)
        raise TimeoutError
    return task.result()


async def wait_future(fut: asyncio.Future[Any], seconds: float) -> bool:
    """Wait until ``fut`` is done or ``seconds`` pass; ``True`` when it is done."""
    if fut.done():
        return True
    if seconds > 0:
        await asyncio.wait([fut], timeout=min(seconds, MAX_WAIT))
    return fut.done()
