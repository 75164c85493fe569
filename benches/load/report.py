"""Tables, target checks, hot spots, the plot and the RESULTS.md section of the load benchmark."""

from __future__ import annotations

import collections
import contextlib
import os
import platform
import re
from pathlib import Path
from typing import Any

MAIN_TARGETS = (
    "nginx", "pipe", "ferrule-native", "ferrule-keys", "ferrule-python", "litellm", "tensorzero",
)  # fmt: skip
SCALING = ("ferrule-native-1w-unpinned", "ferrule-native-2w-unpinned")
LABELS = {
    "nginx": "nginx pipe",
    "pipe": "Granian+aiohttp pipe",
    "ferrule-native": "Ferrule native",
    "ferrule-keys": "Ferrule native, keys + limits",
    "ferrule-python": "Ferrule Python",
    "litellm": "LiteLLM",
    "tensorzero": "TensorZero",
}
Run = dict[str, Any]


def _ms(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def progress_line(step: int, r: Run) -> str:
    lat, ttft = r.get("latency_ms") or {}, r.get("ttft_ms") or {}
    extra = ""
    if r.get("pace"):
        p = r["pace"]
        extra = f"  pace min {p['rate_min']:.1f}/s, {p['below_90pct_of_nominal']} slow"
    if r.get("abandon_ms"):
        extra = (
            f"  gave up {r.get('gone_clients', 0)}, sent upstream after close "
            f"{r.get('gone_after_close', 0)}"
        )
    return (
        f"[{step:3d}] {r['target']:<30.30} {r['point']:<12} {r.get('rps', 0):>8,.0f} req/s"
        f"  p50 {_ms(lat.get('p50'))} p99 {_ms(lat.get('p99'))} ms"
        f"  ttft {_ms(ttft.get('p50'))} ms  cpu {r.get('proxy_cpu_ms_per_req', 0):.3f} ms/req"
        f" ({r.get('proxy_util', 0):.0%})  rss {r.get('proxy_rss_peak_kb', 0) / 1024:.0f} MB"
        f"  err {r.get('errors', 0)}  other load {r.get('foreign_util', 0):.2f}{extra}"
    )


# -- machine and software ------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0.0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem_gib": round(mem, 1),
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("ferrule", "granian", "aiohttp", "uvloop", "orjson"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "-"
    return out


# -- py-spy --------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "python/ferrule/", "lib/python3"):
        i = path.find(marker)
        if i >= 0:
            rest = path[i + len(marker) :]
            return ("ferrule/" + rest) if marker == "python/ferrule/" else rest
    return path


def hot_spots(raw: str, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares of py-spy's collapsed stacks (``--format raw``)."""
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        seen = set()
        for i, fr in enumerate(frames):
            m = _FRAME.match(fr.strip())
            func, file, ln = (m["func"], _short(m["file"]), m["line"]) if m else (fr, "", None)
            if i == len(frames) - 1:
                self_c[f"{func} ({file}:{ln})" if ln else f"{func} ({file})"] += n
            key = f"{func} ({file})"
            if key not in seen:
                seen.add(key)
                incl[key] += n
    pct = (lambda c: round(100 * c / total, 1)) if total else (lambda c: 0.0)
    return {
        "samples": total,
        "self": [[k, pct(v)] for k, v in self_c.most_common(top)],
        "inclusive": [
            [k, pct(v)]
            for k, v in incl.most_common(200)
            if "ferrule/" in k or "aiohttp/" in k or "logging/" in k or "orjson" in k
        ][:top],
    }


# -- lookups and checks --------------------------------------------------------------------


def _index(runs: list[Run]) -> dict[tuple[str, str], Run]:
    return {(r["target"], r["point"]): r for r in runs}


def _lat(r: Run | None, key: str, q: str) -> float | None:
    if r is None:
        return None
    d = r.get(key) or {}
    v = d.get(q)
    return float(v) if v is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _rps(r: Run | None) -> float | None:
    return None if r is None else float(r["rps"])


def _percore(r: Run | None) -> float | None:
    """Requests per CPU-second of the proxy's processes (the noise-proof throughput)."""
    if r is None or not r.get("proxy_cpu_ms_per_req"):
        return None
    return float(1000.0 / r["proxy_cpu_ms_per_req"])


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def checks(runs: list[Run]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each target of the issue that this run can judge."""
    ix = _index(runs)
    out: list[tuple[str, str, bool | None]] = []

    def g(t: str, p: str) -> Run | None:
        return ix.get((t, p))

    for point, floor, what in (
        ("ns-2k-c32", 0.6, "Non-stream 2 KB, 32 clients: Ferrule native >= 60% of the pipe"),
        ("st-2k-c32", 0.6, "Stream (56 events), 32 clients: Ferrule native >= 60% of the pipe"),
        (
            "ns-100k-c32",
            0.4,
            "100 KB prompts (lossless compression on), 32 clients: >= 40% of the pipe",
        ),
    ):
        f, p = g("ferrule-native", point), g("pipe", point)
        if f is None or p is None:
            continue
        rps = _ratio(f.get("rps"), p.get("rps"))
        core = _ratio(_percore(f), _percore(p))
        met = None if core is None else core >= floor
        out.append(
            (
                what,
                f"per core {_fmt_ratio(core)} ({_percore(f) or 0:,.0f} vs {_percore(p) or 0:,.0f} "
                f"req per CPU-s); req/s {_fmt_ratio(rps)} ({f['rps']:,.0f} vs {p['rps']:,.0f})",
                met,
            )
        )
    f, n = g("ferrule-native", "ns-2k-c1"), g("nginx", "ns-2k-c1")
    fs, ns = g("ferrule-native", "st-2k-c1"), g("nginx", "st-2k-c1")
    if f and n and fs and ns:
        d1 = (_lat(f, "latency_ms", "p50") or 0) - (_lat(n, "latency_ms", "p50") or 0)
        d2 = (_lat(fs, "ttfb_ms", "p50") or 0) - (_lat(ns, "ttfb_ms", "p50") or 0)
        out.append(
            (
                "One client: p50 added latency <= 0.5 ms over nginx (non-stream; stream TTFB)",
                f"non-stream +{d1:.2f} ms ({_lat(f, 'latency_ms', 'p50'):.2f} vs "
                f"{_lat(n, 'latency_ms', 'p50'):.2f}); stream first byte +{d2:.2f} ms "
                f"({_lat(fs, 'ttfb_ms', 'p50'):.2f} vs {_lat(ns, 'ttfb_ms', 'p50'):.2f})",
                d1 <= 0.5 and d2 <= 0.5,
            )
        )
    f, n = g("ferrule-native", "paced-256"), g("nginx", "paced-256")
    if f and n and f.get("pace") and n.get("ttft_ms"):
        slow = f["pace"]["below_90pct_of_nominal"]
        util = f["proxy_util"]
        d50 = _lat(f, "ttft_ms", "p50")
        d99 = _lat(f, "ttft_ms", "p99")
        n50, n99 = _lat(n, "ttft_ms", "p50"), _lat(n, "ttft_ms", "p99")
        assert d50 is not None and d99 is not None and n50 is not None and n99 is not None
        met = slow == 0 and util <= 0.5 and d50 - n50 <= 25 and d99 - n99 <= 50 and f["errors"] == 0
        out.append(
            (
                "256 paced streams: pacing kept, proxy <= half a core, TTFT within 25/50 ms "
                "(p50/p99) of nginx, no errors",
                f"{f['pace']['streams']} streams, slowest {f['pace']['rate_min']:.1f} tokens/s, "
                f"{slow} below 45/s; proxy {util:.0%} of a core; TTFT p50 {d50:.1f} vs {n50:.1f} "
                f"ms (+{d50 - n50:.1f}), p99 {d99:.1f} vs {n99:.1f} ms (+{d99 - n99:.1f}); "
                f"errors {f['errors']}",
                met,
            )
        )
    f = g("ferrule-native", "paced-1000")
    if f:
        per = rss_per_stream(f)
        out.append(
            (
                "1,000 paced streams complete; RSS per open stream",
                f"{f['ok']} streams in the window, errors {f['errors']}, slowest "
                f"{(f.get('pace') or {}).get('rate_min', 0):.1f} tokens/s; RSS "
                f"{f['rss_idle_kb'] / 1024:.0f} -> {f['proxy_rss_peak_kb'] / 1024:.0f} MB "
                f"with {f['in_flight_mean']:.0f} open: {per:.1f} KiB per open stream",
                f["errors"] == 0 and f["ok"] > 0,
            )
        )
    gone = [r for r in runs if r.get("abandon_ms") and r["target"] in MAIN_TARGETS]
    if gone:
        parts = [
            f"{LABELS.get(r['target'], r['target'])} {r['gone_after_close']} "
            f"(>10 ms after: {r['gone_after_close_10ms']}; of {r['gone_clients']} gone)"
            for r in gone
        ]
        mine = [r for r in gone if r["target"].startswith("ferrule")]
        out.append(
            (
                "No upstream request for a client that has gone (256 clients giving up at 100 ms)",
                "; ".join(parts),
                all(r["gone_after_close"] == 0 for r in mine) if mine else None,
            )
        )
    for point in ("ns-2k-c32", "st-2k-c32"):
        k, f = g("ferrule-keys", point), g("ferrule-native", point)
        if k is None or f is None or not k.get("proxy_cpu_ms_per_req"):
            continue
        extra = k["proxy_cpu_ms_per_req"] / f["proxy_cpu_ms_per_req"] - 1
        out.append(
            (
                f"Keys mode with every limit on costs <= 10% more CPU per request ({point})",
                f"{k['proxy_cpu_ms_per_req'] * 1000:.0f} vs {f['proxy_cpu_ms_per_req'] * 1000:.0f}"
                f" us per request ({extra:+.1%}); errors {k['errors']}",
                extra <= 0.10 and k["errors"] == 0,
            )
        )
    f, p = g("ferrule-native", "st-2k-c32"), g("ferrule-python", "st-2k-c32")
    if f and p:
        rps = _ratio(f.get("rps"), p.get("rps"))
        core = _ratio(_percore(f), _percore(p))
        out.append(
            (
                "Native >= 1.5x Python streams/s end to end (stream, 32 clients)",
                f"per core {_fmt_ratio(core)}x; streams/s {_fmt_ratio(rps)}x "
                f"({f['rps']:,.0f} vs {p['rps']:,.0f})",
                None if core is None else core >= 1.5,
            )
        )
    return out


def rss_per_stream(r: Run) -> float:
    open_streams = max(r.get("in_flight_mean", 0.0), 1.0)
    return float((r["proxy_rss_peak_kb"] - r["rss_idle_kb"]) / open_streams)


# -- markdown ------------------------------------------------------------------------------


def markdown(data: dict[str, Any]) -> str:
    meta, runs = data["meta"], data["runs"]
    ix = _index(runs)
    m = meta["machine"]
    v = meta["versions"]
    tinfo = meta["targets"]
    lines = [
        "## Load benchmark",
        "",
        "End to end, on one machine, the same load for every target (issue 8): the closed-loop "
        "load generator and the fake Anthropic upstream are `benches/load/loadgen` (Rust, one "
        "thread each), the targets are started and stopped by `benches/load/run.py`.",
        "",
        f"- **Date:** {meta['date_utc']} (UTC)",
        f"- **Machine:** `nproc` = {m['nproc']}, `{m['cpu']}`, {m['mem_gib']} GiB, Linux "
        f"{m['kernel']}; shared with other sessions' tests (the 'other load' column).",
        f"- **Command:** `{meta['command']}` (profile `{meta['profile']}`).",
        f"- **Software:** Python {meta['python']}, ferrule {v.get('ferrule')}, granian "
        f"{v.get('granian')}, aiohttp {v.get('aiohttp')}, uvloop {v.get('uvloop')}, "
        + ", ".join(
            f"{n} {tinfo[n]['version']}"
            for n in ("nginx", "litellm", "tensorzero")
            if tinfo.get(n, {}).get("version")
        )
        + ".",
        f"- **Cores:** proxy on core {meta['cores']['proxy']}, load generator and upstream on "
        f"core {meta['cores']['load']} (`taskset`).",
        f"- **Raw figures:** `{meta.get('raw', '-')}`; plot `{meta.get('plot', '-')}`.",
        f"- **Ferrule measured:** commit `{meta.get('git', {}).get('commit', '-')}`"
        + (
            f" plus uncommitted changes to {', '.join(meta['git']['dirty'])}"
            if meta.get("git", {}).get("dirty")
            else ""
        )
        + "."
        + (
            f" HEAD was `{meta['git_at_end']['commit']}` when the run ended."
            if meta.get("git_at_end") and meta["git_at_end"] != meta.get("git")
            else ""
        ),
    ]
    for note in meta["notes"]:
        lines.append(f"- Note: {note}")
    for fail in meta["failures"]:
        lines.append(f"- **Failure:** {fail}")
    lines.append("")
    # the upstream on its own
    ups = [r for r in runs if r["target"].startswith("upstream")]
    if ups:
        lines += [
            "**The fake upstream alone** (its busy share is also recorded in every run below):",
            "",
            "| load generator | point | req/s | p50 ms | p99 ms | upstream CPU ms/req | upstream busy | load gen busy |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ups:
            lines.append(
                f"| {r['target'].split('(')[1].rstrip(')')} | {r['point']} | {r['rps']:,.0f} "
                f"| {_ms(_lat(r, 'latency_ms', 'p50'), 2)} | {_ms(_lat(r, 'latency_ms', 'p99'), 2)} "
                f"| {r['proxy_cpu_ms_per_req']:.3f} | {r['proxy_util']:.0%} | {r['loadgen_util']:.0%} |"
            )
        lines.append("")
    others = [r for r in runs if not r["target"].startswith("upstream") and r.get("ok")]
    if others:
        top = max(others, key=lambda r: r["upstream_util"])
        lines += [
            f"The upstream was busy at most {top['upstream_util']:.0%} of a core in any run "
            f"({top['target']} {top['point']}), the load generator at most "
            f"{max(r['loadgen_util'] for r in others):.0%}.",
            "",
        ]
    # main table
    points = list(dict.fromkeys(r["point"] for r in runs if r["target"] in MAIN_TARGETS))
    lines += [
        "**Every target and load point.** TTFB = first body byte; TTFT = first token; CPU = "
        "utime+stime of the target's processes over the window, per request (the figure to "
        "trust here); per core = requests per CPU-second; x nginx and x pipe compare req/s and "
        "(after the slash) per-core throughput with the same load point of the same run.",
        "",
        "| point | target | req/s | p50 ms | p99 ms | TTFB p50 ms | TTFT p50 / p99 ms | CPU ms/req "
        "| per core | proxy busy | peak RSS MB | errors | x nginx | x pipe | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pt in points:
        for t in MAIN_TARGETS:
            r = ix.get((t, pt))
            if r is None:
                continue
            ng, pp = ix.get(("nginx", pt)), ix.get(("pipe", pt))
            xn = f"{_fmt_ratio(_ratio(r['rps'], _rps(ng)))} / {_fmt_ratio(_ratio(_percore(r), _percore(ng)))}"
            xp = f"{_fmt_ratio(_ratio(r['rps'], _rps(pp)))} / {_fmt_ratio(_ratio(_percore(r), _percore(pp)))}"
            ttft = (
                f"{_ms(_lat(r, 'ttft_ms', 'p50'))} / {_ms(_lat(r, 'ttft_ms', 'p99'))}"
                if r.get("ttft_ms")
                else "-"
            )
            errs = r["errors"]
            cpu = f"{r['proxy_cpu_ms_per_req']:.3f}"
            percore = f"{_percore(r) or 0:,.0f}"
            if r.get("abandon_ms"):
                errs = f"{errs} (+{r.get('abandoned_window', 0)} gave up)"
            if not r.get("ok"):  # nothing answered: no per-request figure, no ratio
                cpu = percore = xn = xp = "-"
            lines.append(
                f"| {pt} | {LABELS[t]} | {r['rps']:,.0f} | {_ms(_lat(r, 'latency_ms', 'p50'), 2)} "
                f"| {_ms(_lat(r, 'latency_ms', 'p99'), 2)} | {_ms(_lat(r, 'ttfb_ms', 'p50'), 2)} "
                f"| {ttft} | {cpu} | {percore} "
                f"| {r['proxy_util']:.0%} | {r['proxy_rss_peak_kb'] / 1024:.0f} | {errs} | {xn} "
                f"| {xp} | {r['foreign_util']:.2f} |"
            )
    lines.append("")
    # paced streams
    paced = [r for r in runs if r.get("paced") and r["target"] in MAIN_TARGETS]
    if paced:
        lines += [
            "**Token-paced streams** (50 deltas 20 ms apart, 50 tokens/s): rate = tokens/s "
            "from the first token to the end of each stream.",
            "",
            "| point | target | streams | slowest / p1 / p50 tokens/s | below 45/s | longest gap p99 ms "
            "| TTFT p50 / p99 ms | proxy busy | upstream / load gen busy | RSS idle -> peak MB "
            "| KiB per open stream | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in paced:
            p = r.get("pace") or {}
            gap = (p.get("max_gap_ms") or {}).get("p99")
            lines.append(
                f"| {r['point']} | {LABELS[r['target']]} | {r['ok']:,} "
                f"| {p.get('rate_min', 0):.1f} / {p.get('rate_p1', 0):.1f} / {p.get('rate_p50', 0):.1f} "
                f"| {p.get('below_90pct_of_nominal', '-')} | {_ms(gap)} "
                f"| {_ms(_lat(r, 'ttft_ms', 'p50'))} / {_ms(_lat(r, 'ttft_ms', 'p99'))} "
                f"| {r['proxy_util']:.0%} | {r['upstream_util']:.0%} / {r['loadgen_util']:.0%} "
                f"| {r['rss_idle_kb'] / 1024:.0f} -> "
                f"{r['proxy_rss_peak_kb'] / 1024:.0f} | {rss_per_stream(r):.1f} | {r['errors']} |"
            )
        lines.append("")
    gone = [r for r in runs if r.get("abandon_ms") and r["target"] in MAIN_TARGETS]
    if gone:
        lines += [
            "**Clients that give up** (256 clients, each closes its connection when its answer "
            "has not come within 100 ms, then sends a new request; the upstream records every "
            "request's id and arrival time, the load generator every give-up time, same clock):",
            "",
            "| target | requests answered | clients gone | of those, reached the upstream "
            "| ... after the client had closed | ... more than 10 ms after |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in gone:
            lines.append(
                f"| {LABELS[r['target']]} | {r['ok']:,} | {r['gone_clients']:,} "
                f"| {r['gone_sent_upstream']:,} | **{r['gone_after_close']:,}** "
                f"| {r['gone_after_close_10ms']:,} |"
            )
        lines.append("")
    big = [r for r in runs if r["point"].endswith("100k-c32") and r["target"] in MAIN_TARGETS]
    if big:
        lines += [
            "**100 KB prompts**: bytes the upstream received per request (what compression "
            "removed) next to the client's request size.",
            "",
            "| point | target | client bytes/request | upstream bytes/request |",
            "|---|---|---:|---:|",
        ]
        for r in big:
            lines.append(
                f"| {r['point']} | {LABELS[r['target']]} | {r.get('client_body_bytes', '-')} "
                f"| {r['upstream_body_bytes_per_req']:,.0f} |"
            )
        lines.append("")
    sc = [r for r in runs if r["target"] in SCALING]
    if sc:
        lines += [
            "**Scaling, Ferrule native, 1 vs 2 Granian workers** (nothing pinned: proxy, load "
            "generator and upstream share both cores):",
            "",
            "| point | workers | req/s | p50 ms | p99 ms | CPU ms/req | proxy busy (cores) | 2 / 1 workers |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for pt in dict.fromkeys(r["point"] for r in sc):
            one = ix.get((SCALING[0], pt))
            for w, t in ((1, SCALING[0]), (2, SCALING[1])):
                r = ix.get((t, pt))
                if r is None:
                    continue
                rel = _fmt_ratio(_ratio(r["rps"], _rps(one))) if w == 2 else ""
                lines.append(
                    f"| {pt} | {w} | {r['rps']:,.0f} | {_ms(_lat(r, 'latency_ms', 'p50'), 2)} "
                    f"| {_ms(_lat(r, 'latency_ms', 'p99'), 2)} | {r['proxy_cpu_ms_per_req']:.3f} "
                    f"| {r['proxy_util']:.2f} | {rel} |"
                )
        lines.append("")
    ck = checks(runs)
    if ck:
        lines += ["**Targets of issue 8** (per core = from CPU time, the figure that holds on a "
                  "shared machine):", ""]  # fmt: skip
        for what, measured, met in ck:
            mark = "met" if met else ("not met" if met is not None else "n/a")
            lines.append(f"- {what}: **{mark}**. {measured}.")
        lines.append("")
    if meta.get("profiles"):
        lines += [
            "**Profile** (py-spy on Ferrule native's worker process, `--gil`: samples of the "
            "thread holding the GIL, i.e. the Python work; Granian's Rust I/O threads and native "
            "code running without the GIL do not appear there, the `-threads` graphs show every "
            "thread, idle ones included, as py-spy cannot tell them apart here):",
            "",
        ]
        for name, prof in meta["profiles"].items():
            hot = prof.get("gil_hot") or {}
            secs = hot.get("seconds") or 1
            busy = hot.get("samples", 0) / (200 * secs)
            lines.append(
                f"- {name}: `{prof.get('gil_flamegraph', '-')}` (GIL held in {busy:.0%} of "
                f"the samples), `{prof.get('threads_flamegraph', '-')}`. Inclusive: "
                + "; ".join(
                    f"`{k}` {p}%"
                    for k, p in hot.get("inclusive", [])[:14]
                    if "cli.py" not in k and "serve.py" not in k
                )
                + ". Self: "
                + "; ".join(f"`{k}` {p}%" for k, p in hot.get("self", [])[:8])
                + "."
            )
        lines.append("")
    return "\n".join(lines)


def append_results(path: Path, md: str) -> None:
    """Append the section at the end of RESULTS.md (read right before, others append too)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    sep = "" if text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    path.write_text(text + sep + md.rstrip("\n") + "\n")


# -- plot ----------------------------------------------------------------------------------


def plot(data: dict[str, Any], png: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = [r for r in data["runs"] if r["target"] in MAIN_TARGETS]
    ix = _index(runs)
    points = list(dict.fromkeys(r["point"] for r in runs))
    present = [t for t in MAIN_TARGETS if any(r["target"] == t for r in runs)]
    if not present:
        return False
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.1 * len(points) + 3), 8), sharex=True)
    width = 0.8 / max(len(present), 1)
    for k, t in enumerate(present):
        xs = [i + (k - (len(present) - 1) / 2) * width for i in range(len(points))]
        rps = [ix[(t, p)]["rps"] if (t, p) in ix else 0 for p in points]
        p99 = [(_lat(ix.get((t, p)), "latency_ms", "p99") or 0) for p in points]
        axes[0].bar(xs, rps, width, label=LABELS[t])
        axes[1].bar(xs, p99, width, label=LABELS[t])
    axes[0].set_yscale("log")
    axes[0].set_ylabel("requests (streams) / s")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("p99 latency, ms (whole response)")
    axes[1].set_xticks(range(len(points)))
    axes[1].set_xticklabels(points, rotation=30, ha="right")
    axes[0].legend(fontsize=8, ncol=len(present))
    axes[0].set_title(
        f"benches/load {data['meta']['profile']} {data['meta']['date_utc']}: throughput and p99, "
        "proxy on one core"
    )
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True
