"""Prometheus metrics, correct with several Granian workers.

Multi-process design (prometheus_client's multiprocess mode): every worker writes its samples
to memory-mapped files in one shared folder, ``PROMETHEUS_MULTIPROC_DIR``, and whichever worker
answers ``GET /metrics`` merges all the files. Counters and histograms of a worker that exited
stay in the sum (totals never go backwards when Granian respawns a worker); the gauges
(open streams, upstream pool) are ``livesum``: only live processes count, and files of dead
workers are pruned at scrape time because Granian has no child-exit hook to do it.

How ``ferrule serve`` must set it up (in the parent, before Granian starts the workers)::

    from ferrule import metrics
    path = metrics.prepare_multiprocess_dir()   # fresh folder, exported in os.environ
    try:
        server.serve()
    finally:
        metrics.cleanup_multiprocess_dir(path)

Then each worker builds one ``Metrics()`` (it sees the variable and uses the shared folder).
Without the variable (tests, an app run without ``ferrule serve``) it keeps an in-process
registry, which is correct for one process.

Labels stay low-cardinality: route and outcome come from fixed sets, the model label is the
undated model id and at most ``MAX_MODELS`` distinct ids per process (then ``other``), and the
route label is bounded too (``MAX_ROUTES``), and the
tenant label is off unless asked for (then a 12-character prefix of the key hash, at most
``MAX_TENANTS`` per process)."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
import threading
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from . import pricing
from .ledger.record import RequestRecord

__all__ = [
    "CONTENT_TYPE",
    "ENV",
    "Metrics",
    "cleanup_multiprocess_dir",
    "prepare_multiprocess_dir",
    "prune_dead_processes",
    "render_dir",
]

ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format, which every Prometheus version reads. NOTE: newer prometheus_client
# calls its output version 1.0.0 (the same bytes for names like ours), which Prometheus 2.x
# does not know.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
MAX_MODELS: Final = 32
MAX_ROUTES: Final = 16
MAX_ERROR_TYPES: Final = 32
MAX_TENANTS: Final = 200
OTHER: Final = "other"

# Seconds. LLM requests span from tens of milliseconds (a cache hit) to many minutes (a long
# stream), so the buckets go further than prometheus_client's defaults.
LATENCY_BUCKETS: Final = (
    0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"),
)  # fmt: skip
TTFB_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60, float("inf"),
)  # fmt: skip
TOKEN_KINDS: Final = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
_LABEL_OK = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_DEAD_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def prepare_multiprocess_dir(path: str | None = None) -> str:
    """Make an empty folder for the workers' metric files and export it as
    ``PROMETHEUS_MULTIPROC_DIR``; call in the parent before the workers start. ``path`` (or an
    already exported variable, e.g. from a start-up script) is emptied of old ``*.db`` files;
    otherwise a fresh temporary folder is made. Returns the folder."""
    path = path or os.environ.get(ENV) or None
    if path is None:
        path = tempfile.mkdtemp(prefix="ferrule-metrics-")
    else:
        os.makedirs(path, exist_ok=True)
        # Files from an earlier run would add its totals (and its dead pids' gauges) to ours.
        for old in glob.glob(os.path.join(path, "*.db")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(old)
    os.environ[ENV] = path
    return path


def cleanup_multiprocess_dir(path: str) -> None:
    """Remove the folder if ``prepare_multiprocess_dir`` made it (a temporary one)."""
    if os.path.basename(path).startswith("ferrule-metrics-"):
        shutil.rmtree(path, ignore_errors=True)


def prune_dead_processes(path: str) -> int:
    """Forget the live gauges of workers that are gone; returns how many pids were pruned."""
    pruned = 0
    for name in os.listdir(path):
        m = _DEAD_FILE.match(name)
        if m and not _alive(int(m.group(1))):
            multiprocess.mark_process_dead(int(m.group(1)), path)  # type: ignore[no-untyped-call]
            pruned += 1
    return pruned


def render_dir(path: str) -> bytes:
    """The merged exposition of every process's files in ``path`` (any process may call it;
    it creates no metric of its own)."""
    prune_dead_processes(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class Metrics:
    """One per process. Thread-safe (prometheus_client locks every value)."""

    def __init__(self, *, tenant_label: bool = False, multiprocess_dir: str | None = None) -> None:
        """``multiprocess_dir``: defaults to ``$PROMETHEUS_MULTIPROC_DIR``; when neither is set,
        a private in-process registry is used."""
        self.multiprocess_dir = multiprocess_dir or os.environ.get(ENV) or None
        self.tenant_label = tenant_label
        self._models: set[str] = set()
        self._routes: set[str] = set()
        self._error_types: set[str] = set()
        self._tenants: set[str] = set()
        self._lock = threading.Lock()
        registry: CollectorRegistry | None
        if self.multiprocess_dir:
            _ensure_multiprocess_values(self.multiprocess_dir)
            registry = None  # samples live in the files; render() collects them
        else:
            registry = CollectorRegistry(auto_describe=True)
        self._registry = registry

        tenant = ("tenant",) if tenant_label else ()
        self.requests = Counter(
            "ferrule_requests",
            "Client requests by route, model and HTTP status class",
            ("route", "model", "status_class", *tenant),
            registry=registry,
        )
        self.outcomes = Counter(
            "ferrule_request_outcomes",
            "How requests ended: complete, client_cancelled, upstream_error, truncated, error",
            ("route", "outcome"),
            registry=registry,
        )
        self.errors = Counter(
            "ferrule_errors",
            "Failed requests by error type",
            ("route", "type"),
            registry=registry,
        )
        self.latency = Histogram(
            "ferrule_request_duration_seconds",
            "Time from request start to the last byte sent",
            ("route", "stream"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttfb = Histogram(
            "ferrule_time_to_first_byte_seconds",
            "Time from request start to the first response byte sent",
            ("route", "stream"),
            buckets=TTFB_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "ferrule_tokens",
            "Billed tokens by kind (response-cache hits are not billed)",
            ("model", "kind", *tenant),
            registry=registry,
        )
        self.cost = Counter(
            "ferrule_cost_usd",
            "Billed cost in USD at list prices (priced models only)",
            ("model", *tenant),
            registry=registry,
        )
        self.unpriced = Counter(
            "ferrule_unpriced_requests",
            "Requests to a model with no price entry (cost unknown)",
            ("model",),
            registry=registry,
        )
        self.saved_tokens = Counter(
            "ferrule_saved_tokens",
            "Tokens saved by source: caching (read from the prompt cache), compression, "
            "response_cache",
            ("source",),
            registry=registry,
        )
        self.saved_usd = Counter(
            "ferrule_saved_usd",
            "USD saved by source (caching is gross; see ferrule_cache_write_premium_usd)",
            ("source",),
            registry=registry,
        )
        self.write_premium = Counter(
            "ferrule_cache_write_premium_usd",
            "USD paid above the input price for prompt-cache writes",
            (),
            registry=registry,
        )
        self.response_cache = Counter(
            "ferrule_response_cache",
            "Response cache lookups by result: hit, miss, bypass",
            ("result",),
            registry=registry,
        )
        self.retries = Counter(
            "ferrule_retries",
            "Upstream attempts beyond the first",
            ("route",),
            registry=registry,
        )
        self.open_streams = Gauge(
            "ferrule_open_streams",
            "Streaming responses in progress",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_in_use = Gauge(
            "ferrule_upstream_pool_in_use",
            "Upstream connections in use",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_size = Gauge(
            "ferrule_upstream_pool_size",
            "Upstream connection pool capacity",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.ledger_drops = Counter(
            "ferrule_ledger_dropped",
            "Ledger rows dropped: queue_full (disk slow), write_error (disk full, read-only)",
            ("reason",),
            registry=registry,
        )

    # -- recording ----------------------------------------------------------------------------

    def observe_request(
        self, record: RequestRecord, acct: pricing.Accounting | None = None
    ) -> None:
        """Count one finished request (called once, after its last byte or its cancellation)."""
        route = self._route(record.route)
        model = self._model(record.model)
        tenant = (self._tenant(record.tenant),) if self.tenant_label else ()
        self.requests.labels(route, model, _status_class(record.status), *tenant).inc()
        self.outcomes.labels(route, _label(record.outcome)).inc()
        if record.status >= 400 or record.outcome in ("upstream_error", "truncated", "error"):
            kind = record.error_type or (
                record.outcome if record.outcome != "complete" else f"http_{record.status}"
            )
            # error_type comes from the upstream's error body: bounded like the model label
            label = _label(kind)
            if label != OTHER:
                label = _bounded(self._lock, self._error_types, label, MAX_ERROR_TYPES)
            self.errors.labels(route, label).inc()
        stream = "true" if record.stream else "false"
        self.latency.labels(route, stream).observe(max(record.latency_ms, 0.0) / 1000)
        if record.ttfb_ms is not None:
            self.ttfb.labels(route, stream).observe(max(record.ttfb_ms, 0.0) / 1000)
        if record.attempts > 1:
            self.retries.labels(route).inc(record.attempts - 1)
        if record.cache_status in ("hit", "miss", "bypass"):
            self.response_cache.labels(record.cache_status).inc()

        if acct is None:
            acct = pricing.account(
                record.model,
                record,
                compression_removed_tokens=record.compression_removed_tokens,
                response_cache_hit=record.response_cache_hit,
                when=record.ts,
            )
        if not record.response_cache_hit:
            counts = (
                record.input_tokens,
                record.cache_write_5m_tokens,
                record.cache_write_1h_tokens,
                record.cache_read_tokens,
                record.output_tokens,
            )
            for kind, n in zip(TOKEN_KINDS, counts, strict=True):
                if n > 0:
                    self.tokens.labels(model, kind, *tenant).inc(n)
        if acct.cost is None:
            self.unpriced.labels(model).inc()
        elif acct.cost.total_usd > 0:
            self.cost.labels(model, *tenant).inc(acct.cost.total_usd)
        s = acct.savings
        for source, tokens, usd in (
            ("caching", s.caching_tokens, s.caching_usd),
            ("compression", s.compression_tokens, s.compression_usd),
            ("response_cache", s.response_cache_tokens, s.response_cache_usd),
        ):
            if tokens > 0:
                self.saved_tokens.labels(source).inc(tokens)
            if usd:
                self.saved_usd.labels(source).inc(usd)
        if s.cache_write_premium_usd:
            self.write_premium.inc(s.cache_write_premium_usd)

    def stream_opened(self) -> None:
        self.open_streams.inc()

    def stream_closed(self) -> None:
        self.open_streams.dec()

    def set_upstream_pool(self, in_use: int, size: int) -> None:
        """This worker's upstream connections in use and its pool capacity."""
        self.pool_in_use.set(in_use)
        self.pool_size.set(size)

    def ledger_dropped(self, reason: str, n: int = 1) -> None:
        """``LedgerWriter(on_drop=metrics.ledger_dropped)``."""
        self.ledger_drops.labels(_label(reason)).inc(n)

    # -- exposition ---------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every worker (or of this process), and its
        content type."""
        if self._registry is not None:
            return generate_latest(self._registry), CONTENT_TYPE
        assert self.multiprocess_dir is not None
        return render_dir(self.multiprocess_dir), CONTENT_TYPE

    # -- label hygiene ------------------------------------------------------------------------

    def _model(self, model: str) -> str:
        name = pricing.canonical_model(model)
        if not _LABEL_OK.match(name):
            return OTHER
        return _bounded(self._lock, self._models, name, MAX_MODELS)

    def _route(self, route: str) -> str:
        # The app passes fixed route names; bounded anyway, in case a raw path slips in.
        label = _label(route)
        return label if label == OTHER else _bounded(self._lock, self._routes, label, MAX_ROUTES)

    def _tenant(self, tenant: str | None) -> str:
        if not tenant:
            return "none"
        return _bounded(self._lock, self._tenants, tenant[:12].lower(), MAX_TENANTS)


def _bounded(lock: threading.Lock, seen: set[str], value: str, limit: int) -> str:
    if value in seen:
        return value
    with lock:
        if len(seen) >= limit:
            return OTHER
        seen.add(value)
    return value


def _label(value: str) -> str:
    """A value from a fixed set in practice; anything odd collapses to ``other``."""
    v = value.lower()
    return v if _LABEL_OK.match(v) or (v.startswith("/") and len(v) <= 64) else OTHER


def _status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


def _ensure_multiprocess_values(path: str) -> None:
    """prometheus_client picks its value class when it is first imported: if that happened
    before ``PROMETHEUS_MULTIPROC_DIR`` was set, switch it now, before our metrics exist.
    NOTE: ``values.ValueClass`` is looked up at metric creation, so this is enough."""
    os.environ[ENV] = path  # the value class reads the folder from the environment
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
