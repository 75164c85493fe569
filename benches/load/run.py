"""End-to-end load benchmark of issue 8: Ferrule against an nginx byte pipe, a Granian + aiohttp
byte pipe, the LiteLLM proxy and the TensorZero gateway, on the same load, in one go, on
127.0.0.1 only.

    .venv/bin/python -m benches.load --profile quick   # a few seconds: CI smoke test
    .venv/bin/python -m benches.load --profile full    # about 20 minutes, by hand

What runs (every process is started here and stopped by its PID):

* the fake Anthropic upstream (``loadgen upstream``, Rust, one thread) pinned to the load core,
  serving the byte payloads of benches/upstream_clients/fast_upstream.py; it is measured on its
  own first (and its CPU share is recorded in every run) to show it is never the bottleneck;
* each target in turn, pinned to the proxy core: nginx, the Granian + aiohttp pipe, Ferrule
  native, Ferrule Python, LiteLLM and TensorZero (full profile, or ``--litellm`` /
  ``--tensorzero``; each skipped with a note when it cannot be installed), then Ferrule native
  with 1 and 2 workers unpinned (scaling);
* the closed-loop load generator (``loadgen gen``, Rust, one thread, pinned to the load core)
  for every load point; it reads the CPU time and RSS of the target's processes from /proc at
  the edges of the measured window, so every figure covers the same window;
* py-spy on Ferrule native's worker under two load points (flame graphs in results/).

Load points: ``ns``/``st`` = non-stream / stream (56 SSE events), ``2k``/``100k`` = prompt size,
``cN`` = N concurrent clients; ``paced-N`` = N concurrent streams of 50 deltas 20 ms apart;
``gone-N`` = N clients that give up after 100 ms (the fake upstream records which requests
still arrived after their client had gone).

With two cores the proxy gets core 0 and the load side (load generator + upstream) core 1.
Exit status: 0, or 1 when a target failed to start or a load point got no answer at all.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benches.upstream_clients.run import Proc, cpu_ticks, free_port, machine_busy

from . import bodies, report, targets

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LOADGEN_DIR = HERE / "loadgen"
LOADGEN = LOADGEN_DIR / "target" / "release" / "ferrule-loadgen"
RESULTS = HERE / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HARD_LIMIT_S = 40 * 60


def portable(path: str | Path) -> str:
    """``path`` as the results record it: relative to the repository, ``~/`` for the home
    folder, ``$TMPDIR/`` for the temp folder, so that no machine's own layout goes into files
    that are committed."""
    p = Path(path)
    if p.is_relative_to(REPO):
        return str(p.relative_to(REPO))
    for base, name in ((Path(tempfile.gettempdir()), "$TMPDIR"), (Path.home(), "~")):
        if p.is_relative_to(base):
            rest = p.relative_to(base)
            return name if rest == Path(".") else f"{name}/{rest}"
    return str(p)


def portable_text(text: str, *paths: str | Path) -> str:
    """``text`` with each of ``paths`` (and anything under them) spelled by :func:`portable`."""
    for path in sorted({str(p) for p in paths}, key=len, reverse=True):
        short = portable(path)
        text = text.replace(path + "/", "" if short == "." else short + "/")
        text = text.replace(path, short)
    return text


@dataclass(frozen=True)
class Point:
    name: str
    body: str  # key of bodies.write_all
    conns: int
    warmup: float
    duration: float
    stream: bool = False
    paced: bool = False
    abandon_ms: int = 0
    ramp: float | None = None


def full_points() -> list[Point]:
    return [
        Point("ns-2k-c1", "ns-2k", 1, 2, 5),
        Point("ns-2k-c32", "ns-2k", 32, 2, 8),
        Point("ns-2k-c256", "ns-2k", 256, 2, 5),
        Point("st-2k-c1", "st-2k", 1, 2, 5, stream=True),
        Point("st-2k-c32", "st-2k", 32, 2, 8, stream=True),
        Point("st-2k-c256", "st-2k", 256, 2, 5, stream=True),
        Point("ns-100k-c32", "ns-100k", 32, 2, 6),
        Point("st-100k-c32", "st-100k", 32, 2, 6, stream=True),
        Point("paced-256", "paced", 256, 2.5, 6, stream=True, paced=True, ramp=1.0),
        Point("paced-1000", "paced", 1000, 3, 6, stream=True, paced=True, ramp=1.5),
        Point("gone-256", "ns-2k", 256, 1, 5, abandon_ms=100),
    ]


def quick_points(full_set: bool) -> list[Point]:
    pts = [
        Point("ns-2k-c32", "ns-2k", 32, 0.3, 1),
        Point("st-2k-c32", "st-2k", 32, 0.3, 1, stream=True),
    ]
    if full_set:
        pts += [
            Point("paced-64", "paced", 64, 1.1, 1.5, stream=True, paced=True, ramp=0.1),
            Point("gone-64", "ns-2k", 64, 0.3, 1, abandon_ms=100),
        ]
    return pts


SCALING_POINTS = ("ns-2k-c32", "st-2k-c32", "ns-2k-c256")
PROFILE_POINTS = ("ns-2k-c32", "st-2k-c32")
KEYS_POINTS = ("ns-2k-c32", "st-2k-c32")


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def log(msg: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[2K")
    print(msg, flush=True)


def build_loadgen() -> None:
    if not shutil.which("cargo"):
        if LOADGEN.exists():
            return
        raise SystemExit("benches/load needs cargo (a Rust toolchain) to build its load generator")
    subprocess.run(
        [
            "cargo",
            "build",
            "--release",
            "--quiet",
            "--manifest-path",
            str(LOADGEN_DIR / "Cargo.toml"),
        ],
        check=True,
        timeout=900,
    )


def http_json(
    port: int, method: str, path: str, body: bytes | None = None, key: str = targets.API_KEY
) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data[:300]!r}")
        return json.loads(data) if data else None
    finally:
        conn.close()


def point_flags(point: Point) -> list[str]:
    """The load generator's options for what ``point`` sends: streams, pacing, ramp, abandon."""
    flags = ["--stream"] if point.stream else []
    if point.paced:
        flags += ["--paced-tokens", str(bodies.PACED_TOKENS)]
    if point.ramp is not None:
        flags += ["--ramp", str(point.ramp)]
    if point.abandon_ms:
        flags += ["--abandon-ms", str(point.abandon_ms)]
    return flags


def wait_ready(t: targets.Target, proc: Proc, probe: bytes) -> None:
    end = time.monotonic() + t.ready_timeout
    last: Exception | None = None
    while time.monotonic() < end:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{t.name} exited with code {proc.popen.returncode}")
        if not t.port_known():
            last = RuntimeError(f"no port in {t.port_file}")
            time.sleep(0.25)
            continue
        try:
            if t.health:
                health = http_json(t.port, "GET", t.health)
                if t.expect_backend and health.get("backend") != t.expect_backend:
                    raise SystemExit(f"{t.name}: backend is {health.get('backend')!r}")
            http_json(t.port, "POST", t.path, probe, t.api_key)
            return
        except (OSError, RuntimeError, http.client.HTTPException, ValueError) as exc:
            last = exc
        time.sleep(0.25)
    raise RuntimeError(f"{t.name} not ready in {t.ready_timeout:.0f} s: {last}")


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{pid}/statm") as f:
            total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    return total


def settle(up_port: int, max_wait: float) -> None:
    """Wait (bounded) until no paced stream is left running upstream."""
    end = time.monotonic() + max_wait
    while time.monotonic() < end:
        if http_json(up_port, "GET", "/__stats")["paced_active"] == 0:
            return
        time.sleep(0.1)


def wait_quiet(limit: float, max_wait: float) -> float:
    """Wait (bounded) until the shared machine is idle apart from us; the last reading."""
    if max_wait <= 0:
        return -1.0
    end = time.monotonic() + max_wait
    busy = machine_busy(0.3)
    while busy > limit and time.monotonic() < end:
        busy = machine_busy(0.5)
    return busy


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.profile == "quick"
        self.stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.tmp = Path(tempfile.mkdtemp(prefix=f"ferrule-load-{self.stamp}-"))
        self.logdir = self.tmp / "logs"
        self.logdir.mkdir()
        self.files = bodies.write_all(self.tmp / "bodies")
        self.model_files: dict[str, dict[str, Path]] = {bodies.MODEL: self.files}
        self.deadline = Deadline(HARD_LIMIT_S)
        two = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
        self.proxy_core: str | None = "0" if two else None
        self.load_core: str | None = "1" if two else None
        self.runs: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.id_base = 0
        self.step = 0
        self.up_port = free_port()
        self.upstream: Proc | None = None
        self.target_info: dict[str, dict[str, Any]] = {}
        self.profiles: dict[str, Any] = {}
        self.git_at_start = git_state()  # the code the targets run (others commit meanwhile)

    def body_files(self, model: str) -> dict[str, Path]:
        """The request bodies naming ``model`` (written on first use; the same sizes)."""
        if model not in self.model_files:
            folder = self.tmp / f"bodies-{len(self.model_files)}"
            self.model_files[model] = bodies.write_all(folder, model=model)
        return self.model_files[model]

    # -- processes -------------------------------------------------------------------------

    def pin(self, core: str | None) -> list[str]:
        return ["taskset", "-c", core] if core else []

    def start_upstream(self) -> None:
        argv = [
            *self.pin(self.load_core), str(LOADGEN), "upstream", "--port", str(self.up_port),
            "--payloads", str(self.files["payloads"]),
        ]  # fmt: skip
        self.upstream = Proc("upstream", argv, dict(os.environ), REPO, self.logdir / "upstream.log")
        end = time.monotonic() + 10
        while True:
            try:
                http_json(self.up_port, "GET", "/__stats")
                return
            except OSError:
                if time.monotonic() > end or self.upstream.popen.poll() is not None:
                    raise RuntimeError("the fake upstream did not start") from None
                time.sleep(0.05)

    # -- one load point ---------------------------------------------------------------------

    def loadgen(
        self,
        port: int,
        point: Point,
        proxy_pids: list[int],
        label: str,
        core: str | None,
        gone_out: Path | None = None,
        extra_s: float = 0.0,
        api_key: str = targets.API_KEY,
        path: str = targets.CHAT_PATH,
        model: str = bodies.MODEL,
    ) -> subprocess.Popen[str]:
        assert self.upstream is not None
        duration = point.duration + extra_s
        argv = [
            *self.pin(core), str(LOADGEN), "gen",
            "--url", f"http://127.0.0.1:{port}{path}",
            "--connections", str(point.conns), "--warmup", str(point.warmup),
            "--duration", str(duration), "--body", str(self.body_files(model)[point.body]),
            "--header", f"authorization: Bearer {api_key}", "--token-marker", bodies.TOKEN_MARKER,
            "--cpu-pids", ",".join(map(str, proxy_pids)),
            "--upstream-pids", ",".join(map(str, self.upstream.tree())),
            "--id-base", str(self.id_base), "--label", label,
            "--timeout", "30", "--grace", "20",
        ]  # fmt: skip
        self.id_base += 10_000_000
        argv += point_flags(point)
        if gone_out is not None:
            argv += ["--gone-out", str(gone_out)]
        if sys.stderr.isatty():
            argv.append("--progress")
        return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    def run_point(
        self,
        name: str,
        port: int,
        point: Point,
        proc: Proc | None,
        core: str | None,
        required: bool = True,
        api_key: str = targets.API_KEY,
        path: str = targets.CHAT_PATH,
        model: str = bodies.MODEL,
    ) -> dict[str, Any]:
        self.step += 1
        pids = proc.tree() if proc else []
        if proc is None and self.upstream is not None:
            pids = self.upstream.tree()  # measuring the upstream itself
        if self.upstream is not None:
            settle(self.up_port, 5)
        foreign_before = wait_quiet(0.3, 0 if self.quick else 2)
        rss_idle = rss_kb(pids)
        gone_file = self.tmp / f"gone-{name}-{point.name}.json" if point.abandon_ms else None
        if gone_file is not None:
            http_json(self.up_port, "GET", "/__record/start")
        s0 = http_json(self.up_port, "GET", "/__stats")
        label = f"[{self.step}] {name} {point.name}"
        lg = self.loadgen(port, point, pids, label, core, gone_file, api_key=api_key, path=path,
                          model=model)  # fmt: skip
        limit = point.warmup + point.duration + 20 + 30
        try:
            out, _ = lg.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            lg.kill()
            out, _ = lg.communicate()
        s1 = http_json(self.up_port, "GET", "/__stats")
        res: dict[str, Any] = {"target": name, "point": point.name, **asdict(point)}
        try:
            res |= json.loads(out)
        except json.JSONDecodeError:
            res |= {"ok": 0, "errors": -1, "loadgen_failed": True, "rps": 0.0}
            self.failures.append(f"{name} {point.name}: the load generator failed")
        res["rss_idle_kb"] = rss_idle
        res["client_body_bytes"] = self.body_files(model)[point.body].stat().st_size
        res["machine_busy_before"] = foreign_before
        res["upstream_requests"] = s1["requests"] - s0["requests"]
        res["upstream_body_bytes_per_req"] = (s1["body_bytes"] - s0["body_bytes"]) / max(
            res["upstream_requests"], 1
        )
        res["upstream_paced_aborted"] = s1["paced_aborted"] - s0["paced_aborted"]
        busy = sum(res.get("cores_busy", []))
        res["foreign_util"] = max(
            0.0,
            busy
            - res.get("proxy_util", 0)
            - (res.get("upstream_util", 0) if proc is not None else 0)
            - res.get("loadgen_util", 0),
        )
        if gone_file is not None:
            res |= self.gone_stats(gone_file)
        problems = self.failures if required else self.notes
        if proc is not None and proc.popen.poll() is not None:
            problems.append(f"{name} died during {point.name}")
        if res.get("ok", 0) == 0 and not point.abandon_ms:
            problems.append(f"{name} {point.name}: no request succeeded")
        self.runs.append(res)
        log(report.progress_line(self.step, res))
        return res

    def gone_stats(self, gone_file: Path) -> dict[str, Any]:
        arrivals = {int(i): int(ns) for i, ns in http_json(self.up_port, "GET", "/__record/dump")}
        gone = json.loads(gone_file.read_text()) if gone_file.exists() else []
        after = [arrivals[i] - ns for i, ns in gone if i in arrivals and arrivals[i] > ns]
        sent = sum(1 for i, _ in gone if i in arrivals)
        return {
            "gone_clients": len(gone),
            "gone_sent_upstream": sent,  # abandoned requests that reached the upstream at all
            "gone_after_close": len(after),  # ... and arrived after the client had closed
            "gone_after_close_10ms": sum(1 for d in after if d > 10_000_000),
            "gone_after_close_max_ms": max(after) / 1e6 if after else 0.0,
        }

    # -- targets ----------------------------------------------------------------------------

    def run_target(
        self, t: targets.Target, points: list[Point], core: str | None, load_core: str | None,
        required: bool = True, profile: bool = False,
    ) -> None:  # fmt: skip
        if self.deadline.left() < 60:
            self.notes.append(f"{t.name}: skipped, the run's time limit was near")
            return
        info: dict[str, Any] = {
            "description": t.description,
            "version": t.version,
            "notes": t.notes,
            "cores": core,
        }
        self.target_info[t.name] = info
        proc = t.start(self.logdir, core)
        try:
            try:
                wait_ready(t, proc, self.body_files(t.model)["ns-2k"].read_bytes())
            except (RuntimeError, OSError) as exc:
                msg = f"{t.name} failed to start: {exc} (log: {proc.log_path})"
                info["failed"] = msg
                (self.failures if required else self.notes).append(msg)
                log(msg)
                return
            info["rss_after_start_kb"] = rss_kb(proc.tree())
            for point in points:
                if self.deadline.left() < point.warmup + point.duration + 30:
                    self.notes.append(f"{t.name} {point.name}: skipped (time limit)")
                    continue
                self.run_point(t.name, t.port, point, proc, load_core, required, t.api_key,
                               t.path, t.model)  # fmt: skip
            if profile:
                for name in PROFILE_POINTS:
                    pt = next((p for p in points if p.name == name), None)
                    if pt is not None:
                        self.profile(t, proc, pt)
        finally:
            if self.upstream is not None:
                with contextlib.suppress(OSError):
                    settle(self.up_port, 5)
            proc.stop()
            errors = proc.log_path.read_text(errors="replace").count("Traceback")
            info["log_tracebacks"] = errors

    def profile(self, t: targets.Target, proc: Proc, point: Point) -> None:
        """py-spy on the busiest process of the target under ``point``: SVG + collapsed stacks."""
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            self.notes.append("py-spy not installed in the venv: no flame graphs")
            return
        seconds = 2 if self.quick else 6
        pids = proc.tree()
        lg = self.loadgen(t.port, point, pids, f"profile {point.name}", self.load_core,
                          extra_s=4 * seconds + 8, api_key=t.api_key, path=t.path,
                          model=t.model)  # fmt: skip
        time.sleep(point.warmup + 0.5)
        before = {p: cpu_ticks([p]) for p in pids}
        time.sleep(1.0)
        busiest = max(pids, key=lambda p: cpu_ticks([p]) - before[p])
        out: dict[str, Any] = {"pid_profiled": busiest}
        stem = RESULTS if not self.quick else self.tmp
        # --gil: only the thread holding the GIL, i.e. the Python work (py-spy cannot tell idle
        # threads from busy ones on this kernel, so without it the thread pool's idle workers
        # fill the graph); "threads": every thread, idle ones included, which shows the work
        # done outside the GIL (native code in to_thread workers).
        for kind, fmt, ext, extra in (
            ("gil", "flamegraph", "svg", ["--gil"]),
            ("gil", "raw", "txt", ["--gil"]),
            ("threads", "flamegraph", "svg", []),
            ("threads", "raw", "txt", []),
        ):
            suffix = "" if kind == "gil" else "-threads"
            # the SVGs are kept with the results; the collapsed stacks (large) in the temp folder
            path = (
                stem if ext == "svg" else self.tmp
            ) / f"flame-{t.name}-{point.name}{suffix}.{ext}"
            argv = [
                *self.pin(self.load_core), str(spy), "record", "--pid", str(busiest),
                "--duration", str(seconds), "--rate", "200", "--nonblocking",
                "--format", fmt, "--output", str(path), *extra,
            ]  # fmt: skip
            r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
            if r.returncode != 0:
                self.notes.append(f"py-spy failed: {r.stderr.strip()[-300:]}")
                break
            if ext == "svg":  # its title is the command line, absolute paths and all
                here = (REPO, Path(tempfile.gettempdir()), Path.home())
                title = path.read_text()
                if not spy.is_relative_to(REPO):
                    title = title.replace(str(spy), "py-spy")
                path.write_text(portable_text(title, *here))
            out[f"{kind}_{fmt}"] = portable(path)
            if fmt == "raw":
                out[f"{kind}_hot"] = report.hot_spots(path.read_text())
                out[f"{kind}_hot"]["seconds"] = seconds
        lg.kill() if lg.poll() is None else None
        lg.communicate()
        self.profiles[f"{t.name} {point.name}"] = out
        log(f"  profiled {t.name} {point.name}: {out.get('gil_flamegraph', '-')}")

    # -- the whole run ----------------------------------------------------------------------

    def main(self) -> int:
        a = self.args
        quick = self.quick
        build_loadgen()
        self.start_upstream()
        only = set(a.targets.split(",")) if a.targets else None

        def wanted(name: str) -> bool:
            return only is None or name in only

        try:
            pts = quick_points(False) if quick else full_points()
            if a.points:
                keep = set(a.points.split(","))
                pts = [p for p in pts if p.name in keep]
            # 1. the fake upstream on its own, loaded from the other core and from its own
            if wanted("upstream"):
                direct = [
                    p
                    for p in pts
                    if p.name in ("ns-2k-c32", "st-2k-c32", "paced-256", "paced-1000")
                ]
                for p in direct:
                    self.run_point("upstream (load gen on core 1)", self.up_port, p, None,
                                   self.load_core)  # fmt: skip
                if not quick:
                    for p in direct[:2]:
                        self.run_point("upstream (load gen on core 0)", self.up_port, p, None,
                                       self.proxy_core)  # fmt: skip
            tmp, up = self.tmp, self.up_port
            quick_full = quick_points(True)
            # 2. the targets
            ng = targets.nginx(tmp, up)
            if ng is None:
                self.failures.append("nginx is not installed (apt-get install nginx-light)")
            elif wanted("nginx"):
                self.run_target(ng, pts, self.proxy_core, self.load_core)
            if wanted("pipe"):
                self.run_target(targets.pipe(tmp, up), pts, self.proxy_core, self.load_core)
            if wanted("ferrule-native"):
                self.run_target(
                    targets.ferrule(tmp, up, "rust"),
                    quick_full if quick and not a.points else pts,
                    self.proxy_core,
                    self.load_core,
                    profile=not quick and not a.no_profile,
                )
            if wanted("ferrule-keys"):
                # the cost of virtual keys with every limit on, next to ferrule-native
                keys_pts = [p for p in pts if p.name in KEYS_POINTS] if not a.points else pts
                self.run_target(targets.ferrule(tmp, up, "rust", keys=True), keys_pts,
                                self.proxy_core, self.load_core)  # fmt: skip
            if wanted("ferrule-python"):
                self.run_target(targets.ferrule(tmp, up, "python"), pts, self.proxy_core,
                                self.load_core)  # fmt: skip
            if (a.litellm or not quick) and wanted("litellm"):
                self.comparison("LiteLLM", "litellm", "litellm[proxy]", targets.litellm_install,
                                targets.litellm, pts)  # fmt: skip
            if (a.tensorzero or not quick) and wanted("tensorzero"):
                self.comparison("TensorZero", "tensorzero", "tensorzero",
                                targets.tensorzero_install, targets.tensorzero, pts)  # fmt: skip
            # 3. scaling: Ferrule native, 1 then 2 workers, nothing pinned
            if not quick and not a.no_scaling and wanted("scaling"):
                scale_pts = [p for p in pts if p.name in SCALING_POINTS]
                self.unpin_upstream(True)
                try:
                    for w in (1, 2):
                        t = targets.ferrule(tmp, up, "rust", workers=w,
                                            name=f"ferrule-native-{w}w-unpinned")  # fmt: skip
                        self.run_target(t, scale_pts, None, None)
                finally:
                    self.unpin_upstream(False)
        finally:
            if self.upstream is not None:
                self.upstream.stop()
        return self.finish()

    def comparison(
        self,
        label: str,
        name: str,
        requirement: str,
        install: Callable[[Path, Path], tuple[Path | None, str]],
        make: Callable[[Path, int, Path], targets.Target],
        pts: list[Point],
    ) -> None:
        """A third-party target installed at benchmark time into its own venv under the cache
        folder (never a dependency of Ferrule); skipped with a note when it cannot be installed."""
        cache = Path(self.args.cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        venv = cache / f"{name}-venv"
        log(f"{label}: installing {requirement} into {venv} if missing")
        exe, how = install(cache, self.logdir / f"{name}-install.log")
        if exe is None:
            self.notes.append(f"{label} skipped: {how}")
            log(f"{label} skipped: {how}")
            return
        self.notes.append(f"{label}: {how} ({portable(venv)})")
        self.run_target(make(self.tmp, self.up_port, exe), pts, self.proxy_core, self.load_core,
                        required=False)  # fmt: skip

    def unpin_upstream(self, unpin: bool) -> None:
        if self.upstream is None or self.load_core is None:
            return
        cores = "0-1" if unpin else self.load_core
        for pid in self.upstream.tree():
            subprocess.run(["taskset", "-a", "-p", "-c", cores, str(pid)], capture_output=True)

    def finish(self) -> int:
        a = self.args
        meta: dict[str, Any] = {
            "date_utc": self.stamp,
            "profile": a.profile,
            "command": " ".join([".venv/bin/python -m benches.load", *sys.argv[1:]]),
            "machine": report.machine(),
            "python": platform.python_version(),
            "versions": report.versions(),
            "targets": self.target_info,
            "cores": {"proxy": self.proxy_core, "load": self.load_core},
            "failures": self.failures,
            "notes": self.notes,
            "profiles": self.profiles,
            "tmp": portable(self.tmp),
            "git": self.git_at_start,
            "git_at_end": git_state(),
        }
        data: dict[str, Any] = {"meta": meta, "runs": self.runs}
        out_dir = Path(a.out) if a.out else (self.tmp if self.quick else RESULTS)
        out_dir.mkdir(parents=True, exist_ok=True)
        raw = out_dir / f"{self.stamp}-{a.profile}.json"
        meta["raw"] = portable(raw)
        # whatever else carries a path (a note, a failure's log): no machine's layout in files
        # that may be committed
        here = (REPO, Path(tempfile.gettempdir()), Path.home())
        raw.write_text(portable_text(json.dumps(data, indent=1), *here))  # first, come what may
        png = out_dir / f"{self.stamp}-{a.profile}.png"
        if report.plot(data, png):
            meta["plot"] = portable(png)
        else:
            self.notes.append("matplotlib not importable: no plot")
        raw.write_text(portable_text(json.dumps(data, indent=1), *here))
        md = portable_text(report.markdown(data), *here)
        (out_dir / f"{self.stamp}-{a.profile}.md").write_text(md)
        print()
        print(md)
        if not self.quick and not a.no_results_md:
            report.append_results(REPO / "benches" / "RESULTS.md", md)
            print("appended to benches/RESULTS.md")
        print(f"raw results: {raw}\nlogs: {self.logdir}")
        if self.failures:
            print("FAILED:\n  " + "\n  ".join(self.failures), file=sys.stderr)
            return 1
        return 0


def git_state() -> dict[str, Any]:
    """The commit measured, and the product files that differed from it (others edit too)."""

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return r.stdout.rstrip()

    status = git("status", "--porcelain", "--", "python", "rust", "Cargo.toml")
    dirty = [line[3:] for line in status.splitlines() if len(line) > 3]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "dirty": dirty}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benches.load", description=__doc__.split("\n")[0] if __doc__ else None
    )
    ap.add_argument("--profile", choices=("quick", "full"), default="quick")
    ap.add_argument("--targets", help="comma list: upstream,nginx,pipe,ferrule-native,"
                    "ferrule-keys,ferrule-python,litellm,tensorzero,scaling (default: all of the "
                    "profile)")  # fmt: skip
    ap.add_argument("--points", help="comma list of load point names (default: the profile's)")
    ap.add_argument("--litellm", action="store_true", help="include LiteLLM in the quick profile")
    ap.add_argument(
        "--tensorzero", action="store_true", help="include TensorZero in the quick profile"
    )
    ap.add_argument("--no-profile", action="store_true", help="no py-spy flame graphs")
    ap.add_argument("--no-scaling", action="store_true", help="no 1 vs 2 worker runs")
    ap.add_argument("--no-results-md", action="store_true", help="do not append to RESULTS.md")
    ap.add_argument("--out", help="folder for the JSON/PNG/MD results (default: results/, "
                    "or the temp folder for the quick profile)")  # fmt: skip
    ap.add_argument(
        "--cache-dir",
        default=str(
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ferrule-bench"
        ),
        help="where the venvs of LiteLLM and TensorZero are kept between runs",
    )
    ap.add_argument("--report", metavar="JSON", help="only render a saved run's tables and plot")
    args = ap.parse_args(argv)
    if args.report:
        path = Path(args.report)
        data = json.loads(path.read_text())
        report.plot(data, path.with_suffix(".png"))
        md = report.markdown(data)
        path.with_suffix(".md").write_text(md)
        print(md)
        return 0
    return Bench(args).main()


if __name__ == "__main__":
    sys.exit(main())
