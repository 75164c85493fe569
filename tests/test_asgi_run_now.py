"""``asgi.run_now``: a send runs as far as it can at once; the rest is awaited in the task."""

from __future__ import annotations

import asyncio

import pytest

from ferrule.asgi import run_now


def test_a_send_that_does_not_wait_finishes_at_once() -> None:
    done: list[str] = []

    async def send() -> None:
        done.append("sent")

    assert run_now(send()) is None
    assert done == ["sent"]


def test_a_send_that_waits_is_finished_by_awaiting_the_rest() -> None:
    order: list[str] = []

    async def main() -> None:
        gate = asyncio.get_running_loop().create_future()

        async def send() -> None:
            order.append("before")
            got = await gate
            order.append(f"after {got}")
            await asyncio.sleep(0)  # a bare yield inside, too
            order.append("end")

        rest = run_now(send())
        assert rest is not None and order == ["before"]
        asyncio.get_running_loop().call_later(0.05, gate.set_result, 7)
        await rest
        assert order == ["before", "after 7", "end"]

    asyncio.run(main())


def test_cancelling_the_rest_closes_the_send() -> None:
    closed: list[bool] = []

    async def main() -> None:
        async def send() -> None:
            try:
                await asyncio.sleep(10)
            finally:
                closed.append(True)

        rest = run_now(send())
        assert rest is not None
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert closed == [True]


def test_an_error_in_the_send_is_raised_by_the_call_or_the_rest() -> None:
    async def fails_at_once() -> None:
        raise ConnectionError("gone")

    with pytest.raises(ConnectionError):
        run_now(fails_at_once())

    async def main() -> None:
        async def fails_later() -> None:
            await asyncio.sleep(0.01)
            raise ConnectionError("gone later")

        rest = run_now(fails_later())
        assert rest is not None
        with pytest.raises(ConnectionError, match="later"):
            await rest

    asyncio.run(main())
