"""CPU time of the Responses stream encoder, native and Python, on one 56-event agent turn fed
one event per call (``stream_corpus.agent_turn``) with the real sealer. Process CPU time, best of
3 x 10 x 100 runs: steadier than wall time on a shared machine. Run from the repository root:

    PYTHONPATH=python:benches .venv/bin/python benches/responses_speed.py
"""

from __future__ import annotations

import functools
import time
import timeit
from types import ModuleType

from ferrule import _native, _pure
from ferrule.seal import Sealer
from stream_corpus import agent_turn
from test_bench_kernels import RESPONSES_TR


def main() -> None:
    pieces = agent_turn()
    sealer = Sealer(["bench"])

    def run(mod: ModuleType) -> None:
        enc = mod.ResponsesStreamEncoder(
            RESPONSES_TR, response_id="resp_bench", created_at=1, sealer=sealer, tenant="t"
        )
        for piece in pieces:
            enc.feed(piece)
        enc.finish()
        assert enc.outcome == "complete"

    best: dict[str, float] = {}
    for mod in (_native, _pure) * 3:
        runs = timeit.repeat(
            functools.partial(run, mod), number=100, repeat=10, timer=time.process_time
        )
        best[mod.__name__] = min(best.get(mod.__name__, 1.0), min(runs) / 100)
    size = sum(map(len, pieces))
    for name, t in best.items():
        print(
            f"{name}: {t * 1e6:.0f} us CPU per stream, {1 / t:.0f} streams/s, "
            f"{size / t / 1e6:.1f} MB/s, {len(pieces) / t / 1e3:.0f}k events/s"
        )
    print(f"native speed-up: {best['ferrule._pure'] / best['ferrule._native']:.1f}x")


if __name__ == "__main__":
    main()
