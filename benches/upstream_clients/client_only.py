"""Client-only check, without Granian: the CPU each upstream client spends per request.

32 coroutines on one uvloop loop each send POSTs in a row to the fake upstream for a fixed time,
through the same client set-up as ``pipe.py`` (``PIPE_POOL`` limits), reading the whole body
(JSON) or iterating the stream the way the pipe does. Prints one JSON line per engine and mode:
requests/s and CPU ms per request of this process (``resource.getrusage``).

Usage: ``taskset -c 0 python client_only.py --upstream http://127.0.0.1:8089 [--seconds 5]``
(run.py calls it with the upstream it started, pinned to the other core).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

HERE = str(Path(__file__).resolve().parent)
BODY_JSON = b'{"model":"m","max_tokens":8,"stream":false,"messages":[' + b" " * 1990 + b"]}"
BODY_STREAM = BODY_JSON.replace(b'"stream":false', b'"stream":true')


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def one_engine(engine: str, upstream: str, mode: str, seconds: float, conc: int) -> Any:
    os.environ["PIPE_ENGINE"] = engine
    os.environ["UPSTREAM_URL"] = upstream
    sys.path.insert(0, HERE)
    pipe = importlib.reload(importlib.import_module("pipe"))
    client: Any
    if engine == "aiohttp":
        client = pipe._aiohttp_session()
    elif engine == "native":
        client = pipe.native_client.NativeClient(pipe.TARGET, pipe.POOL)
    else:
        client = pipe._httpx_client()
    body = BODY_STREAM if mode == "stream" else BODY_JSON
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    count = 0
    chunks = 0
    stop = 0.0

    async def worker() -> None:
        nonlocal count, chunks
        while time.monotonic() < stop:
            if engine == "native":
                answer = await client.post(body, [(b"anthropic-version", b"2023-06-01")])
                chunks_it = answer.chunks
                if mode == "stream" and chunks_it is not None:
                    try:
                        async for _ in chunks_it:
                            chunks += 1
                    finally:
                        answer.close()
            elif engine == "aiohttp":
                async with client.post(pipe.TARGET, data=body, headers=headers) as r:
                    if mode == "stream":
                        async for _ in r.content.iter_any():
                            chunks += 1
                    else:
                        await r.read()
            else:
                req = client.build_request("POST", pipe.TARGET, content=body, headers=headers)
                r = await client.send(req, stream=True)
                try:
                    if mode == "stream":
                        async for _ in r.aiter_raw():
                            chunks += 1
                    else:
                        await r.aread()
                finally:
                    await r.aclose()
            count += 1

    try:
        stop = time.monotonic() + 1.0  # warm the pool up
        await asyncio.gather(*(worker() for _ in range(conc)))
        count = chunks = 0
        c0, t0 = cpu_s(), time.monotonic()
        stop = t0 + seconds
        await asyncio.gather(*(worker() for _ in range(conc)))
        c1, t1 = cpu_s(), time.monotonic()
    finally:
        if engine in ("aiohttp", "native"):
            await client.close()
        else:
            await client.aclose()
    return {
        "engine": engine,
        "mode": mode,
        "rps": count / (t1 - t0),
        "cpu_ms_per_req": 1000 * (c1 - c0) / max(count, 1),
        "cpu_util": (c1 - c0) / (t1 - t0),
        "chunks_per_req": chunks / max(count, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", default="http://127.0.0.1:8089")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--engines", default="httpx,httpx-aiohttp,aiohttp")  # or native (issue 12)
    a = ap.parse_args()
    import uvloop

    for engine in a.engines.split(","):
        for mode in ("json", "stream"):
            res = uvloop.run(one_engine(engine, a.upstream, mode, a.seconds, a.concurrency))
            print("CLIENT_ONLY " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
