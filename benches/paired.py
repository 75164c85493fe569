"""One change's cost in CPU per request (and one client's latency), measured side by side:
A = Ferrule's Python at a git revision, B = the working tree (issue 12).

    .venv/bin/python -m benches.paired --base REV [--rounds 8] [--seconds 3] [--warmup 10]
                                       [--points ns-2k-c32,st-2k-c32] [--latency-rounds 0]
                                       [--base-so PATH] [--b-env K=V ...]

A runs ``git archive REV python/ferrule`` with the built extension copied in (``--base-so``, by
default the working tree's ``python/ferrule/_native.abi3.so``): a change to the Rust side is
measured by building REV's extension first and giving it here. ``--b-env`` sets environment
variables for B only (an A/B of a setting: give ``--base HEAD``).

The harness is ``benches.quota_cpu``'s: both servers pinned to core 0, the fake upstream and the
load generator on core 1; each round loads both at once, so a shared machine's drift falls on
both; the figure is the median over rounds of B's CPU per request divided by A's.
``--latency-rounds N`` adds the one-client point, where both at once would make each other's
latency: A and B take turns, N rounds of 2 s each, and the p50 of each is reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from benches.load import targets
from benches.load.run import build_loadgen
from benches.quota_cpu import POINTS, _argv, _together, start_pair, start_upstream
from benches.upstream_clients.run import Proc

POINTS.setdefault("ns-100k-c32", ("ns-100k", 32, False))


def _checkout(rev: str, so: Path, into: Path) -> Path:
    """REV's ``python/ferrule`` under ``into``, with the extension ``so``: the PYTHONPATH of A."""
    archive = subprocess.run(
        ["git", "archive", rev, "python/ferrule"], cwd=targets.REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    shutil.copy(so, into / "python" / "ferrule" / so.name)
    return into / "python"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="the git revision A runs")
    ap.add_argument("--base-so", default=str(targets.REPO / "python/ferrule/_native.abi3.so"))
    ap.add_argument("--b-env", action="append", default=[], metavar="K=V")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of load per target first")
    ap.add_argument("--points", default="ns-2k-c32,st-2k-c32")
    ap.add_argument("--latency-rounds", type=int, default=0)
    args = ap.parse_args()
    build_loadgen()
    tmp = Path(tempfile.mkdtemp(prefix="ferrule-paired-"))
    a_path = _checkout(args.base, Path(args.base_so), tmp)
    files, up_port, up = start_upstream(tmp)
    a = targets.ferrule(tmp, up_port, "rust", name="A")
    a.env["PYTHONPATH"] = str(a_path)  # before the editable install's path
    b = targets.ferrule(tmp, up_port, "rust", name="B")
    b.env.update(kv.split("=", 1) for kv in args.b_env)
    pair = (a, b)
    procs: list[Proc] = []
    print(f"A = {args.base} ({a_path}), B = the working tree {' '.join(args.b_env)}", flush=True)
    try:
        start_pair(pair, procs, tmp, up, files, args.warmup)
        for point in args.points.split(","):
            ratios: list[float] = []
            cpu: tuple[list[float], list[float]] = ([], [])
            for i in range(args.rounds):
                argvs = [
                    _argv(t, proc, up, files, point, args.seconds, id_base=(j + 1) * 10**9 + i * 10**7)
                    for j, (t, proc) in enumerate(zip(pair, procs, strict=True))
                ]  # fmt: skip
                got = _together(argvs, args.seconds)
                for j in (0, 1):
                    cpu[j].append(got[j] * 1000)
                ratios.append(got[1] / got[0])
            rounds = ", ".join(f"{r - 1:+.0%}" for r in ratios)
            print(
                f"{point}: A {statistics.median(cpu[0]):.0f} us, B {statistics.median(cpu[1]):.0f}"
                f" us, B/A median {statistics.median(ratios) - 1:+.1%} ({rounds})",
                flush=True,
            )
        p50: tuple[list[float], list[float]] = ([], [])
        for i in range(args.latency_rounds):
            for j, (t, proc) in enumerate(zip(pair, procs, strict=True)):
                argv = _argv(t, proc, up, files, "ns-2k-c1", 2, id_base=(j + 3) * 10**9 + i * 10**7)
                out = json.loads(subprocess.run(argv, capture_output=True, text=True).stdout)
                p50[j].append(float(out["latency_ms"]["p50"]))
        if args.latency_rounds:
            print(
                f"ns-2k-c1 p50: A {statistics.median(p50[0]):.3f} ms, "
                f"B {statistics.median(p50[1]):.3f} ms (rounds A {p50[0]}, B {p50[1]})",
                flush=True,
            )
    finally:
        for proc in procs:
            proc.stop()
        up.stop()


if __name__ == "__main__":
    main()
