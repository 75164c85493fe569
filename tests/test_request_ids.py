"""Request ids: ``req_`` and 32 hex digits, never repeated within a worker nor across forked
workers (a per-process random prefix, re-drawn at fork, and a counter)."""

from __future__ import annotations

import multiprocessing
import re

from ferrule.routes.common import _new_request_id

ID = re.compile(r"^req_[0-9a-f]{32}$")


def _ids(n: int) -> list[str]:
    return [_new_request_id() for _ in range(n)]


def test_ids_are_well_formed_and_unique_across_forked_workers() -> None:
    mine = _ids(1000)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        theirs = pool.map(_ids, [1000, 1000])
    every = mine + theirs[0] + theirs[1]
    assert all(ID.match(i) for i in every)
    assert len(set(every)) == len(every)
    # a forked worker draws its own prefix (a pool worker may run both batches: 2 or 3 in all)
    assert mine[0][4:24] not in {i[4:24] for i in theirs[0] + theirs[1]}
