"""Issue 12, "the upstream engine by measurement": aiohttp against a native (hyper) client, and
Granian's ASGI against its RSGI interface, each as a byte pipe, under the load of benches/load.

    .venv/bin/python -m benches.upstream_clients.engines [--reps 3] [--out DIR]

Needs the prototype extension in the venv (its own crate, not the product's):
``VIRTUAL_ENV=$PWD/.venv .venv/bin/maturin develop --release --uv -m benches/upstream_native/Cargo.toml``

Targets, each ``granian --workers 1 --loop uvloop`` pinned to core 0 (the load generator and
the fake upstream of benches/load on core 1), one shared upstream client per worker, pool 1,024:

* ``asgi-aiohttp``: benches/upstream_clients/pipe.py, ``PIPE_ENGINE=aiohttp`` (the issue's
  "Granian + aiohttp byte pipe", what Ferrule's upstream.py does);
* ``asgi-native``: the same pipe.py, ``PIPE_ENGINE=native`` (native_client.py);
* ``rsgi-aiohttp`` / ``rsgi-native``: pipe_rsgi.py under ``--interface rsgi``;
* ``asgi-none`` / ``rsgi-none``: the same two pipes answering from memory (no upstream call):
  what the server interface alone costs;
* ``nginx``: the ``proxy_pass`` byte pipe, for scale.

Load points of benches/load: ``ns-2k-c32`` and ``st-2k-c32`` (2 s warm-up, 8 s measured) and
``paced-256`` (256 streams of 50 deltas 20 ms apart; a floor target has no pacing); add
``--points ...,ns-100k-c32`` for 100 KB request bodies. The
targets are interleaved, ``--reps`` rounds. CPU per request is utime + stime of the target's
process tree (all threads, so the tokio thread of the native client counts) over the measured
window, read from /proc by the load generator. Raw runs go to ``--out`` as JSON; the table
(medians, with min-max of CPU) is printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from benches.load import report, run, targets
from benches.upstream_clients.run import free_port

PIPE_DIR = targets.PIPE_DIR
NAMES = (
    "nginx",
    "asgi-none",
    "rsgi-none",
    "asgi-aiohttp",
    "asgi-native",
    "rsgi-aiohttp",
    "rsgi-native",
)
POINTS = ("ns-2k-c32", "st-2k-c32", "paced-256")
DESCRIPTIONS = {
    "nginx": "nginx `proxy_pass` byte pipe",
    "asgi-none": "Granian ASGI, no upstream call (floor)",
    "rsgi-none": "Granian RSGI, no upstream call (floor)",
    "asgi-aiohttp": "Granian ASGI + aiohttp (today's pipe)",
    "asgi-native": "Granian ASGI + native hyper client",
    "rsgi-aiohttp": "Granian RSGI + aiohttp",
    "rsgi-native": "Granian RSGI + native hyper client",
}


def granian_pipe(name: str, up_port: int) -> targets.Target:
    interface, engine = name.split("-")
    port = free_port()
    env = targets._base_env() | {
        "PIPE_ENGINE": engine,
        "UPSTREAM_URL": f"http://127.0.0.1:{up_port}",
        "PIPE_POOL": "1024",
        "PYTHONPATH": str(PIPE_DIR),
    }
    module = "pipe:app" if interface == "asgi" else "pipe_rsgi:app"
    granian = str(Path(sys.executable).with_name("granian"))
    argv = [
        granian, "--interface", interface, "--workers", "1", "--loop", "uvloop",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", module,
    ]  # fmt: skip
    return targets.Target(name, DESCRIPTIONS[name], argv, env, port, cwd=PIPE_DIR)


def _cell(rs: list[dict[str, Any]], point: str) -> list[str]:
    if not rs:
        return ["-", "-", "-"]
    cpu = [1000 * r["proxy_cpu_ms_per_req"] for r in rs]
    out = [f"**{statistics.median(cpu):,.0f}** ({min(cpu):,.0f}-{max(cpu):,.0f})"]
    out.append(f"{statistics.median(r['rps'] for r in rs):,.0f}")
    key = "latency_ms" if point.startswith("ns") else "ttft_ms"
    vals = [r[key]["p50"] for r in rs if r.get(key)]
    out.append(f"{statistics.median(vals):.2f}" if vals else "-")
    return out


def summarize(runs: list[dict[str, Any]], points: list[str]) -> str:
    heads = {
        "ns-2k-c32": ("non-stream 2 KB c32: CPU µs/req", "req/s", "p50 ms"),
        "st-2k-c32": ("stream 56 ev c32: CPU µs/stream", "streams/s", "TTFT p50 ms"),
        "paced-256": ("256 paced streams: CPU µs/stream", "streams/s", "TTFT p50 ms"),
        "ns-100k-c32": ("non-stream 100 KB c32: CPU µs/req", "req/s", "p50 ms"),
    }
    cols = [h for p in points for h in heads[p]]
    lines = [
        "| target | " + " | ".join(cols) + " | errors |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for name in NAMES:
        mine = [r for r in runs if r["target"] == name]
        if not mine:
            continue
        cells = [DESCRIPTIONS[name]]
        for point in points:
            cells += _cell([r for r in mine if r["point"] == point], point)
        cells.append(str(sum(max(r.get("errors", 0), 0) for r in mine)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.upstream_clients.engines")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--targets", default=",".join(NAMES))
    ap.add_argument("--points", default=",".join(POINTS))
    ap.add_argument("--out", default=str(PIPE_DIR / "results"))
    a = ap.parse_args(argv)
    names = [n for n in a.targets.split(",") if n]
    bench_args = argparse.Namespace(profile="full", targets=None, points=None, litellm=False,
                                    no_profile=True, no_scaling=True, no_results_md=True,
                                    out=None, cache_dir="")  # fmt: skip
    b = run.Bench(bench_args)
    wanted = [p for p in a.points.split(",") if p]
    points = [p for p in run.full_points() if p.name in wanted]
    run.build_loadgen()
    b.start_upstream()
    try:
        for rep in range(a.reps):
            run.log(f"-- round {rep + 1} of {a.reps}")
            for name in names:
                if name == "nginx":
                    t = targets.nginx(b.tmp, b.up_port)
                    if t is None:
                        run.log("nginx not installed: skipped")
                        continue
                else:
                    t = granian_pipe(name, b.up_port)
                # nothing to pace without an upstream call
                pts = [p for p in points if not (p.paced and name.endswith("-none"))]
                b.run_target(t, pts, b.proxy_core, b.load_core)
    finally:
        assert b.upstream is not None
        b.upstream.stop()
    meta = {
        "date_utc": b.stamp,
        "command": " ".join(["python -m benches.upstream_clients.engines", *sys.argv[1:]]),
        "machine": report.machine(),
        "versions": report.versions(),
        "cores": {"proxy": b.proxy_core, "load": b.load_core},
        "failures": b.failures,
        "targets": b.target_info,
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"{b.stamp}-engines.json"
    raw.write_text(json.dumps({"meta": meta, "runs": b.runs}, indent=1))
    print()
    print(summarize(b.runs, [p.name for p in points]))
    print(f"\nraw: {raw}\nlogs: {b.logdir}")
    if b.failures:
        print("FAILED:\n  " + "\n  ".join(b.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
