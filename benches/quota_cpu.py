"""What virtual keys with every limit on cost in CPU per request, next to passthrough (issue 15:
at most +10%), measured so that a shared machine's drift cannot decide the answer.

    .venv/bin/python -m benches.quota_cpu [--rounds 8] [--seconds 3] [--warmup 15]
                                          [--points ns-2k-c32,st-2k-c32] [--engines]

``--engines`` runs the same harness on another pair: passthrough with the aiohttp upstream
engine against the native one (issue 12).

Two ``ferrule serve`` processes run side by side, both pinned to core 0 (the idle one costs
nothing): ``ferrule-native`` (passthrough) and ``ferrule-keys`` (``FERRULE_AUTH=keys``, a
virtual key with RPM, TPM, parallel and a monthly budget, all far above the load, so each
request is admitted and settled in the SQLite quota store and none is refused). The fake
upstream and the closed-loop load generator of ``benches/load`` run on core 1. Each round
loads one target then the other for ``--seconds`` (alternating which goes first), so both see
the same machine; the figure is the median over rounds of keys' CPU per request divided by
passthrough's from the same round. CPU is utime + stime of each server's processes over the
measured window (``ferrule-loadgen gen --cpu-pids``). Each target is warmed up first: a fresh
worker's CPU per request falls by a third over its first seconds of load (1354 -> 759 us in
five rounds), more than the difference measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benches.load import bodies, targets
from benches.load.run import LOADGEN, build_loadgen, http_json, wait_ready
from benches.upstream_clients.run import Proc, free_port

POINTS = {
    "ns-2k-c32": ("ns-2k", 32, False),
    "st-2k-c32": ("st-2k", 32, True),
    "ns-2k-c1": ("ns-2k", 1, False),
}


def _argv(
    t: targets.Target, proc: Proc, up: Proc, files: dict[str, Path], point: str, seconds: float,
    id_base: int = 0,
) -> list[str]:  # fmt: skip
    body, conns, stream = POINTS[point]
    argv = [
        "taskset", "-c", "1", str(LOADGEN), "gen",
        "--url", f"http://127.0.0.1:{t.port}/v1/chat/completions",
        "--connections", str(conns), "--warmup", "0.5", "--duration", str(seconds),
        "--body", str(files[body]), "--header", f"authorization: Bearer {t.api_key}",
        "--token-marker", bodies.TOKEN_MARKER,
        "--cpu-pids", ",".join(map(str, proc.tree())),
        "--upstream-pids", ",".join(map(str, up.tree())),
        "--id-base", str(id_base), "--timeout", "30", "--grace", "20",
    ]  # fmt: skip
    return [*argv, "--stream"] if stream else argv


def start_upstream(tmp: Path) -> tuple[dict[str, Path], int, Proc]:
    """The bodies written under ``tmp``, and the fake upstream on core 1, answering."""
    files = bodies.write_all(tmp / "bodies")
    up_port = free_port()
    up = Proc(
        "upstream",
        ["taskset", "-c", "1", str(LOADGEN), "upstream", "--port", str(up_port),
         "--payloads", str(files["payloads"])],
        targets._base_env(), targets.REPO, tmp / "upstream.log",
    )  # fmt: skip
    end = time.monotonic() + 10
    while True:
        try:
            http_json(up_port, "GET", "/__stats")
            break
        except OSError:
            if time.monotonic() > end:
                raise SystemExit("the fake upstream did not start") from None
            time.sleep(0.05)
    return files, up_port, up


def start_pair(
    pair: Sequence[targets.Target], procs: list[Proc], tmp: Path, up: Proc,
    files: dict[str, Path], warmup: float,
) -> None:  # fmt: skip
    """Start each server on core 0 (appended to ``procs`` at once, for the caller to stop),
    wait until it answers, then load each alone for ``warmup`` seconds: a fresh worker's CPU
    per request falls for its first ~20 s of load."""
    for t in pair:
        proc = t.start(tmp, "0")
        procs.append(proc)
        wait_ready(t, proc, files["ns-2k"].read_bytes())
    for t, proc in zip(pair, procs, strict=True):
        _together([_argv(t, proc, up, files, "ns-2k-c32", warmup)], warmup)


def _together(argvs: list[list[str]], seconds: float) -> list[float]:
    """Run the load generators at once; each one's target's CPU ms per request."""
    gens = [subprocess.Popen(a, stdout=subprocess.PIPE, text=True) for a in argvs]
    out = []
    for g in gens:
        stdout, _ = g.communicate(timeout=seconds + 90)
        res = json.loads(stdout)
        if res.get("errors") or g.returncode:
            raise SystemExit(f"load generator: {res.get('errors')} errors, exit {g.returncode}")
        out.append(float(res["proxy_cpu_ms_per_req"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--points", default="ns-2k-c32,st-2k-c32")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds of load per target first")
    ap.add_argument(
        "--no-limits", action="store_true", help="a key without limits: the keys' own cost"
    )
    ap.add_argument(
        "--engines",
        action="store_true",
        help="instead: passthrough with the aiohttp upstream engine against the native one "
        "(FERRULE_UPSTREAM_ENGINE; issue 12)",
    )
    args = ap.parse_args()
    build_loadgen()
    tmp = Path(tempfile.mkdtemp(prefix="ferrule-quota-cpu-"))
    files, up_port, up = start_upstream(tmp)
    if args.engines:
        pair = [
            targets.ferrule(tmp, up_port, "rust", name="ferrule-aiohttp-engine"),
            targets.ferrule(tmp, up_port, "rust", name="ferrule-native-engine"),
        ]
        pair[0].env["FERRULE_UPSTREAM_ENGINE"] = "aiohttp"
        pair[1].env["FERRULE_UPSTREAM_ENGINE"] = "native"
        labels = ("aiohttp engine", "native engine")
    else:
        pair = [
            targets.ferrule(tmp, up_port, "rust"),
            targets.ferrule(tmp, up_port, "rust", keys=True, limits=not args.no_limits),
        ]
        labels = ("passthrough", "keys")
    procs: list[Proc] = []
    try:
        start_pair(pair, procs, tmp, up, files, args.warmup)
        for point in args.points.split(","):
            ratios: list[float] = []
            cpu: dict[str, list[float]] = {t.name: [] for t in pair}
            for i in range(args.rounds):
                # both at once, on the same core: whatever else the machine does, both see it
                argvs = [
                    _argv(t, proc, up, files, point, args.seconds, id_base=j * 10**9)
                    for j, (t, proc) in enumerate(zip(pair, procs, strict=True))
                ]
                got = _together(argvs, args.seconds)
                for t, ms in zip(pair, got, strict=True):
                    cpu[t.name].append(ms * 1000)
                ratios.append(got[1] / got[0])
                print(f"{point} round {i + 1}: {labels[0]} {got[0] * 1000:.0f} us, {labels[1]} "
                      f"{got[1] * 1000:.0f} us ({got[1] / got[0] - 1:+.1%})", flush=True)  # fmt: skip
            med = statistics.median(ratios)
            print(
                f"{point}: median {labels[0]} {statistics.median(cpu[pair[0].name]):.0f} us, "
                f"{labels[1]} {statistics.median(cpu[pair[1].name]):.0f} us CPU per request; median "
                f"ratio {med - 1:+.1%} (rounds: {', '.join(f'{r - 1:+.0%}' for r in ratios)})"
            )
    finally:
        for proc in procs:
            proc.stop()
        up.stop()


if __name__ == "__main__":
    sys.exit(main())
