"""``python -m tests.faults --port P``: the fake as its own process, for multi-worker proxies
whose workers must all reach one upstream (and one set of records).

Control it over HTTP: ``POST /_faults/push`` (a JSON list of scenario specs such as
``[529, {"kind": "ok", "n": 3}]``), ``POST /_faults/default``, ``GET /_faults/records``,
``POST /_faults/reset``, ``GET /_faults/health``. SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from .scenarios import ok, scenario_from_json
from .server import FaultServer, FaultState


async def _main(args: argparse.Namespace) -> int:
    default = scenario_from_json(json.loads(args.default)) if args.default else ok()
    server = FaultServer(
        FaultState(default),
        host=args.host,
        port=args.port,
        hard_limit_s=args.hard_limit,
        idle_timeout_s=args.idle_timeout,
    )
    port = await server.start()
    print(f"faults: listening on http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    leftover = await server.stop()
    print(f"faults: stopped ({leftover} tasks left)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--default", help='default scenario as JSON, e.g. \'{"kind": "ok"}\'')
    parser.add_argument("--hard-limit", type=float, default=120.0, help="max seconds per scenario")
    parser.add_argument("--idle-timeout", type=float, default=30.0, help="keep-alive idle seconds")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
