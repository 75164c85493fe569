"""Prometheus metrics, correct with several Granian workers, with no file write per request.

Each worker counts in plain Python objects (a dict per metric, a list of bucket counts per
histogram series). A background thread writes a snapshot of this worker's values to its own
files in one shared folder, ``PROMETHEUS_MULTIPROC_DIR``, about once a second (and at exit), and
whichever worker answers ``GET /metrics`` writes its own snapshot first, then merges every
worker's files. The files use prometheus_client's multiprocess format (``counter_<pid>.db``,
``histogram_<pid>.db``, ``gauge_livesum_<pid>.db``), so its ``MultiProcessCollector`` does the
merge and the exposition is the same as with prometheus_client's own multiprocess mode, which
Ferrule used before: that mode writes a memory-mapped file on every increment, ~8% of a request's
CPU. The price: another worker's values reach a scrape up to ~1 s late.

Counters and histograms of a worker that exited stay in the sum (its last snapshot file is
kept, so totals never go backwards when Granian respawns a worker); the gauges (open streams,
upstream pool) are ``livesum``: only live processes count, and files of dead workers are pruned
at scrape time because Granian has no child-exit hook to do it.

How ``ferrule serve`` must set it up (in the parent, before Granian starts the workers)::

    from ferrule import metrics
    path = metrics.prepare_multiprocess_dir()   # fresh folder, exported in os.environ
    try:
        server.serve()
    finally:
        metrics.cleanup_multiprocess_dir(path)

Then each worker builds one ``Metrics()`` once it runs (it sees the variable, writes to the
shared folder and starts its snapshot thread; a thread does not survive a fork), and calls
``close()`` at shutdown. Without the variable (tests, an app run without ``ferrule serve``) the
values stay in the process, which is correct for one process.

Labels stay low-cardinality: route and outcome come from fixed sets, the model label is the
undated model id and at most ``MAX_MODELS`` distinct ids per process (then ``other``), and the
route label is bounded too (``MAX_ROUTES``), and the
tenant label is off unless asked for (then a 12-character prefix of the key hash, at most
``MAX_TENANTS`` per process)."""

from __future__ import annotations

import atexit
import bisect
import contextlib
import glob
import logging
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, Literal

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.utils import floatToGoString

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

log = logging.getLogger("ferrule.metrics")

ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format, which every Prometheus version reads. NOTE: newer prometheus_client
# calls its output version 1.0.0 (the same bytes for names like ours), which Prometheus 2.x
# does not know.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
MAX_MODELS: Final = 32
MAX_ROUTES: Final = 16
MAX_ERROR_TYPES: Final = 32
MAX_TENANTS: Final = 200
MAX_KEY_NAMES: Final = 1000  # virtual key names labelled (metrics_key_label), then "other"
OTHER: Final = "other"
FLUSH_INTERVAL: Final = 1.0  # seconds between a worker's snapshots

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
_POOL_LABEL_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # as config checks names
_POOL_STATES: Final = ("ok", "cooling", "open", "removed")
_DEAD_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")
_FAILED: Final = frozenset(("upstream_error", "truncated", "error"))
_CACHE_RESULTS: Final = frozenset(("hit", "miss", "bypass"))
_LABEL_CACHE_MAX: Final = 4096  # raw value -> label memo; past it, labels are computed each time

Kind = Literal["counter", "histogram", "gauge"]
LabelValues = tuple[str, ...]


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
    it writes nothing of its own)."""
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


class _Family:
    """One metric: its series by label values. A counter or gauge series is a float; a
    histogram series is a list of per-bucket counts (not cumulative, as in prometheus_client's
    files) followed by the sum."""

    __slots__ = ("bounds", "help", "kind", "labelnames", "les", "name", "series")

    def __init__(
        self,
        name: str,
        help: str,
        kind: Kind,
        labelnames: Sequence[str] = (),
        bounds: Sequence[float] = (),
    ) -> None:
        self.name = name
        self.help = help
        self.kind: Kind = kind
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in bounds)
        # the ``le`` label of each bucket, spelled as prometheus_client spells it
        self.les: tuple[str, ...] = tuple(floatToGoString(b) for b in self.bounds)  # type: ignore[no-untyped-call]
        self.series: dict[LabelValues, float] = {}

    def file_kind(self) -> str:
        """The prefix of prometheus_client's file for this type (``gauge`` adds its mode)."""
        return "gauge_livesum" if self.kind == "gauge" else self.kind

    def keys(self, labels: LabelValues) -> list[str]:
        """prometheus_client's file keys of one series, in the order of its values."""
        names, values = list(self.labelnames), list(labels)
        if self.kind == "counter":
            return [mmap_key(self.name, self.name + "_total", names, values, self.help)]
        if self.kind == "gauge":
            return [mmap_key(self.name, self.name, names, values, self.help)]
        bucket = self.name + "_bucket"
        out = [
            mmap_key(self.name, bucket, [*names, "le"], [*values, le], self.help) for le in self.les
        ]
        out.append(mmap_key(self.name, self.name + "_sum", names, values, self.help))
        return out


class _Histograms:
    """The histogram series of one family: label values -> [bucket counts..., sum]."""

    __slots__ = ("family", "series")

    def __init__(self, family: _Family) -> None:
        self.family = family
        self.series: dict[LabelValues, list[float]] = {}

    def observe(self, labels: LabelValues, value: float) -> None:
        counts = self.series.get(labels)
        if counts is None:
            counts = self.series[labels] = [0.0] * (len(self.family.bounds) + 1)
        # the first bucket whose upper bound is >= value, as prometheus_client's observe()
        counts[bisect.bisect_left(self.family.bounds, value)] += 1.0
        counts[-1] += value


_LIVE: weakref.WeakSet[Metrics] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    # A worker that exits keeps its counts in the sum: its last values reach its files.
    for m in list(_LIVE):
        with contextlib.suppress(Exception):
            m.close()


class Metrics:
    """One per process. Thread-safe: the counts change under one lock, taken once per
    observed batch (the ledger writer's thread) or request; the gauges are plain attributes
    the event loop sets."""

    def __init__(
        self,
        *,
        tenant_label: bool = False,
        key_label: bool = False,
        multiprocess_dir: str | None = None,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        """``multiprocess_dir``: defaults to ``$PROMETHEUS_MULTIPROC_DIR``; when neither is set,
        the values stay in this process. ``flush_interval``: seconds between snapshots written
        to that folder."""
        self.multiprocess_dir = multiprocess_dir or os.environ.get(ENV) or None
        self.tenant_label = tenant_label
        self.key_label = key_label  # the virtual key's name (keys mode): metrics_key_label
        self._key_names: set[str] = set()
        self._lock = threading.Lock()
        self._models: set[str] = set()
        self._routes: set[str] = set()
        self._error_types: set[str] = set()
        self._tenants: set[str] = set()
        # raw value -> label, for the bounded labels (the sets above only grow, so a label
        # once given stays right)
        self._model_labels: dict[str, str] = {}
        self._route_labels: dict[str, str] = {}
        self._version = 0  # bumped on every change of a counter or histogram

        tenant = ("tenant",) if tenant_label else ()
        if key_label:
            tenant = (*tenant, "key")
        fam = _Family
        self.requests = fam(
            "ferrule_requests",
            "Client requests by route, model and HTTP status class",
            "counter",
            ("route", "model", "status_class", *tenant),
        )
        self.outcomes = fam(
            "ferrule_request_outcomes",
            "How requests ended: complete, client_cancelled, upstream_error, truncated, error",
            "counter",
            ("route", "outcome"),
        )
        self.errors = fam(
            "ferrule_errors", "Failed requests by error type", "counter", ("route", "type")
        )
        self.latency = _Histograms(
            fam(
                "ferrule_request_duration_seconds",
                "Time from request start to the last byte sent",
                "histogram",
                ("route", "stream"),
                LATENCY_BUCKETS,
            )
        )
        self.ttfb = _Histograms(
            fam(
                "ferrule_time_to_first_byte_seconds",
                "Time from request start to the first response byte sent",
                "histogram",
                ("route", "stream"),
                TTFB_BUCKETS,
            )
        )
        self.tokens = fam(
            "ferrule_tokens",
            "Billed tokens by kind (response-cache hits are not billed)",
            "counter",
            ("model", "kind", *tenant),
        )
        self.cost = fam(
            "ferrule_cost_usd",
            "Billed cost in USD at list prices (priced models only)",
            "counter",
            ("model", *tenant),
        )
        self.unpriced = fam(
            "ferrule_unpriced_requests",
            "Requests to a model with no price entry (cost unknown)",
            "counter",
            ("model",),
        )
        self.saved_tokens = fam(
            "ferrule_saved_tokens",
            "Tokens saved by source: caching (read from the prompt cache), compression, "
            "response_cache",
            "counter",
            ("source",),
        )
        self.saved_usd = fam(
            "ferrule_saved_usd",
            "USD saved by source (caching is gross; see ferrule_cache_write_premium_usd)",
            "counter",
            ("source",),
        )
        self.write_premium = fam(
            "ferrule_cache_write_premium_usd",
            "USD paid above the input price for prompt-cache writes",
            "counter",
        )
        self.write_premium.series[()] = 0.0  # unlabelled: exposed from the start, as before
        self.response_cache = fam(
            "ferrule_response_cache",
            "Response cache lookups by result: hit, miss, bypass",
            "counter",
            ("result",),
        )
        self.retries = fam(
            "ferrule_retries", "Upstream attempts beyond the first", "counter", ("route",)
        )
        self.ledger_drops = fam(
            "ferrule_ledger_dropped",
            "Ledger rows dropped: queue_full (disk slow), write_error (disk full, read-only)",
            "counter",
            ("reason",),
        )
        # Virtual keys' limits and budgets (ferrule.quota): not labelled by key (cardinality).
        self.quota_rejections = fam(
            "ferrule_quota_rejections",
            "Requests Ferrule refused with a 429 for a virtual key's limit: rpm, tpm, parallel, "
            "budget",
            "counter",
            ("reason",),
        )
        self.quota_store_errors = fam(
            "ferrule_quota_store_errors",
            "Quota store (Redis, SQLite) failures by what was done: open (let through "
            "unlimited), closed (refused with 503), settle (a finished request not charged)",
            "counter",
            ("policy",),
        )
        # The upstream key pool (ferrule.upstream_pool): labelled by member name (from the
        # config, at most MAX_POOL_MEMBERS), never by key.
        self.upstream_key_requests = fam(
            "ferrule_upstream_key_requests",
            "Requests sent through each upstream key pool member (last member tried)",
            "counter",
            ("key",),
        )
        self.upstream_key_events = fam(
            "ferrule_upstream_key_events",
            "Upstream key pool events by member: rate_limited (a 429: it cools down alone), "
            "auth_failed (a 401/403: taken out)",
            "counter",
            ("key", "event"),
        )
        self._upstream_key_state_family = fam(
            "ferrule_upstream_key_state",
            "Workers on which each upstream key pool member is in each state: ok, cooling "
            "(after a 429), open (its circuit breaker), removed (after a 401/403)",
            "gauge",
            ("key", "state"),
        )
        self._upstream_key_states: Callable[[], dict[str, str]] | None = None
        self._upstream_keys_written: dict[str, str] = {}
        self._open_streams_family = fam(
            "ferrule_open_streams", "Streaming responses in progress", "gauge"
        )
        self._pool_in_use_family = fam(
            "ferrule_upstream_pool_in_use", "Upstream connections in use", "gauge"
        )
        self._pool_size_family = fam(
            "ferrule_upstream_pool_size", "Upstream connection pool capacity", "gauge"
        )
        # Gauges: set by the event loop only, read by the snapshot (no lock needed).
        self.open_streams = 0
        self.pool_in_use = 0
        self.pool_size = 0
        self._counters = (
            self.requests,
            self.outcomes,
            self.errors,
            self.tokens,
            self.cost,
            self.unpriced,
            self.saved_tokens,
            self.saved_usd,
            self.write_premium,
            self.response_cache,
            self.retries,
            self.ledger_drops,
            self.quota_rejections,
            self.quota_store_errors,
            self.upstream_key_requests,
            self.upstream_key_events,
        )
        self._histograms = (self.latency, self.ttfb)

        # -- the snapshot files (multiprocess mode) --
        self._flush_lock = threading.Lock()  # one writer of the files at a time
        self._files: dict[str, MmapedDict] = {}
        self._keys: dict[tuple[str, LabelValues], list[str]] = {}
        self._base: dict[str, float] = {}  # values left by a dead process with our pid
        self._written: dict[str, float] = {}
        self._flushed_version = -1
        self._pid = os.getpid()
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.multiprocess_dir:
            os.makedirs(self.multiprocess_dir, exist_ok=True)
            _LIVE.add(self)
            self._thread = threading.Thread(
                target=self._flush_loop, args=(flush_interval,), name="ferrule-metrics",
                daemon=True,
            )  # fmt: skip
            self._thread.start()

    # -- recording ----------------------------------------------------------------------------

    def observe_request(
        self, record: RequestRecord, acct: pricing.Accounting | None = None
    ) -> None:
        """Count one finished request (called once, after its last byte or its cancellation)."""
        if acct is None:
            acct = _account(record)
        with self._lock:
            self._observe(record, acct)
            self._version += 1

    def observe_batch(
        self, items: Iterable[tuple[RequestRecord, pricing.Accounting | None]]
    ) -> None:
        """Count finished requests, e.g. a batch of the ledger writer (one lock for all). A
        record that cannot be counted does not keep the others from being counted; the first
        error is raised at the end."""
        error: Exception | None = None
        with self._lock:
            for record, acct in items:
                try:
                    self._observe(record, acct if acct is not None else _account(record))
                except Exception as exc:
                    error = error or exc
            self._version += 1
        if error is not None:
            raise error

    def _observe(self, record: RequestRecord, acct: pricing.Accounting) -> None:
        """The counting itself; the caller holds the lock."""
        route = self._route(record.route)
        model = self._model(record.model)
        tenant = (self._tenant(record.tenant),) if self.tenant_label else ()
        if self.key_label:
            tenant = (*tenant, self._key_name(record.key_name))
        outcome = record.outcome
        status = record.status
        status_class = f"{status // 100}xx" if 100 <= status <= 599 else OTHER
        _inc(self.requests.series, (route, model, status_class, *tenant), 1.0)
        _inc(self.outcomes.series, (route, _label(outcome)), 1.0)
        if status >= 400 or outcome in _FAILED:
            kind = record.error_type or (outcome if outcome != "complete" else f"http_{status}")
            # error_type comes from the upstream's error body: bounded like the model label
            label = _label(kind)
            if label != OTHER:
                label = _bounded(self._error_types, label, MAX_ERROR_TYPES)
            _inc(self.errors.series, (route, label), 1.0)
        stream = "true" if record.stream else "false"
        self.latency.observe((route, stream), max(record.latency_ms, 0.0) / 1000)
        if record.ttfb_ms is not None:
            self.ttfb.observe((route, stream), max(record.ttfb_ms, 0.0) / 1000)
        if record.attempts > 1:
            _inc(self.retries.series, (route,), float(record.attempts - 1))
        if record.upstream_key:
            _inc(self.upstream_key_requests.series, (self._pool_member(record.upstream_key),), 1.0)
        if record.cache_status in _CACHE_RESULTS:
            _inc(self.response_cache.series, (record.cache_status,), 1.0)

        if not record.response_cache_hit:
            tokens = self.tokens.series
            counts = (
                record.input_tokens,
                record.cache_write_5m_tokens,
                record.cache_write_1h_tokens,
                record.cache_read_tokens,
                record.output_tokens,
            )
            for kind, n in zip(TOKEN_KINDS, counts, strict=True):
                if n > 0:
                    _inc(tokens, (model, kind, *tenant), float(n))
        if acct.cost is None:
            _inc(self.unpriced.series, (model,), 1.0)
        elif acct.cost.total_usd > 0:
            _inc(self.cost.series, (model, *tenant), acct.cost.total_usd)
        s = acct.savings
        for source, n, usd in (
            ("caching", s.caching_tokens, s.caching_usd),
            ("compression", s.compression_tokens, s.compression_usd),
            ("response_cache", s.response_cache_tokens, s.response_cache_usd),
        ):
            if n > 0:
                _inc(self.saved_tokens.series, (source,), float(n))
            if usd is not None and usd > 0:  # a counter never goes down
                _inc(self.saved_usd.series, (source,), usd)
        if s.cache_write_premium_usd is not None and s.cache_write_premium_usd > 0:
            _inc(self.write_premium.series, (), s.cache_write_premium_usd)

    def stream_opened(self) -> None:
        self.open_streams += 1

    def stream_closed(self) -> None:
        self.open_streams -= 1

    def set_upstream_pool(self, in_use: int, size: int) -> None:
        """This worker's upstream connections in use and its pool capacity."""
        self.pool_in_use = in_use
        self.pool_size = size

    def upstream_key_event(self, name: str, event: str) -> None:
        """A pool member got a 429 (``rate_limited``) or a 401/403 (``auth_failed``)."""
        with self._lock:
            _inc(self.upstream_key_events.series, (self._pool_member(name), _label(event)), 1.0)
            self._version += 1

    def watch_upstream_keys(self, states: Callable[[], dict[str, str]]) -> None:
        """``states()``: member name -> state, read at each snapshot (the pool's own clock)."""
        self._upstream_key_states = states

    def _pool_member(self, name: str) -> str:
        return name if _POOL_LABEL_OK.match(name) else OTHER

    def quota_rejected(self, reason: str) -> None:
        """A request refused for its virtual key's limit or budget (ferrule.quota)."""
        with self._lock:
            _inc(self.quota_rejections.series, (_label(reason),), 1.0)
            self._version += 1

    def quota_store_error(self, policy: str) -> None:
        """The quota store failed; ``policy``: open, closed or settle."""
        with self._lock:
            _inc(self.quota_store_errors.series, (_label(policy),), 1.0)
            self._version += 1

    def ledger_dropped(self, reason: str, n: int = 1) -> None:
        """``LedgerWriter(on_drop=metrics.ledger_dropped)``; any thread."""
        with self._lock:
            _inc(self.ledger_drops.series, (_label(reason),), float(n))
            self._version += 1

    # -- exposition ---------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every worker (or of this process), and its
        content type. In multiprocess mode this worker's values are written first, so they
        are current; other workers' are at most one snapshot interval old."""
        if self.multiprocess_dir is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Local(self))
            return generate_latest(registry), CONTENT_TYPE
        try:
            self.flush()
        except Exception:  # e.g. a full disk: the other workers' figures are still worth a scrape
            log.exception("writing this worker's metrics to %s failed", self.multiprocess_dir)
        return render_dir(self.multiprocess_dir), CONTENT_TYPE

    def families(self) -> list[Metric]:
        """This process's values as prometheus_client metric families (cumulative buckets)."""
        out: list[Metric] = []
        for family, series in self._snapshot():
            metric = Metric(family.name, family.help, family.kind)
            names = family.labelnames
            for labels, values in series.items():
                named = dict(zip(names, labels, strict=True))
                if family.kind == "counter":
                    metric.add_sample(family.name + "_total", named, values[0])
                elif family.kind == "gauge":
                    metric.add_sample(family.name, named, values[0])
                else:
                    acc = 0.0
                    for le, n in zip(family.les, values, strict=False):
                        acc += n
                        metric.add_sample(family.name + "_bucket", {**named, "le": le}, acc)
                    metric.add_sample(family.name + "_count", named, acc)
                    metric.add_sample(family.name + "_sum", named, values[-1])
            if metric.samples:
                out.append(metric)
        return out

    def _snapshot(self) -> list[tuple[_Family, dict[LabelValues, list[float]]]]:
        """A consistent copy of every value: (family, label values -> values)."""
        with self._lock:
            out: list[tuple[_Family, dict[LabelValues, list[float]]]] = [
                (f, {k: [v] for k, v in f.series.items()}) for f in self._counters
            ]
            out += [(h.family, {k: list(v) for k, v in h.series.items()}) for h in self._histograms]
        out += [
            (self._open_streams_family, {(): [float(self.open_streams)]}),
            (self._pool_in_use_family, {(): [float(self.pool_in_use)]}),
            (self._pool_size_family, {(): [float(self.pool_size)]}),
        ]
        states = self._upstream_key_states
        if states is not None:
            now = states()
            self._upstream_keys_written = now
            series: dict[LabelValues, list[float]] = {
                (self._pool_member(name), state): [1.0 if state == current else 0.0]
                for name, current in now.items()
                for state in _POOL_STATES
            }
            out.append((self._upstream_key_state_family, series))
        return out

    # -- the snapshot files -------------------------------------------------------------------

    def flush(self) -> None:
        """Write this worker's values to its files in the shared folder (only what changed
        since the last write). No-op without a folder or after ``close``."""
        if self.multiprocess_dir is None:
            return
        with self._flush_lock:
            if self._closed or os.getpid() != self._pid:
                return  # a forked child must not write its parent's files
            for family, series in self._snapshot():
                kind = family.file_kind()
                file = self._file(kind)  # opened first: it may hold the base values
                for labels, values in series.items():
                    keys = self._keys.get((family.name, labels))
                    if keys is None:
                        keys = self._keys[(family.name, labels)] = family.keys(labels)
                    for key, value in zip(keys, values, strict=True):
                        if kind != "gauge_livesum":
                            value += self._base.get(key, 0.0)
                        if self._written.get(key) != value:
                            file.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
                            self._written[key] = value

    def _file(self, kind: str) -> MmapedDict:
        f = self._files.get(kind)
        if f is None:
            assert self.multiprocess_dir is not None
            path = os.path.join(self.multiprocess_dir, f"{kind}_{self._pid}.db")
            if kind.startswith("gauge_live"):
                # a dead process with our pid left its live gauges: they are not ours to add
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            f = self._files[kind] = MmapedDict(path)  # type: ignore[no-untyped-call]
            if not kind.startswith("gauge"):
                # The same: its counters stay in the totals, ours count on from them.
                for key, value, _ in f.read_all_values():  # type: ignore[no-untyped-call]
                    self._base[key] = value
                    self._written[key] = value
        return f

    def _flush_loop(self, interval: float) -> None:
        failed = False
        while not self._stop.wait(interval):
            if self._version == self._flushed_version and not self._gauges_changed():
                continue
            version = self._version
            try:
                self.flush()
                self._flushed_version = version
                failed = False
            except Exception:  # a full disk must not end the thread: retried next interval
                if not failed:
                    log.exception(
                        "writing the metrics snapshot to %s failed", self.multiprocess_dir
                    )
                failed = True

    def _gauges_changed(self) -> bool:
        w = self._written
        for family, value in (
            (self._open_streams_family, self.open_streams),
            (self._pool_in_use_family, self.pool_in_use),
            (self._pool_size_family, self.pool_size),
        ):
            keys = self._keys.get((family.name, ()))
            if keys is None or w.get(keys[0]) != float(value):
                return True
        states = self._upstream_key_states
        return states is not None and states() != self._upstream_keys_written

    def close(self) -> None:
        """Write the last snapshot and stop the thread (idempotent). The files stay: a worker
        that exited keeps its counts in the totals."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        try:
            self.flush()
        finally:
            with self._flush_lock:
                self._closed = True
                for f in self._files.values():
                    f.close()  # type: ignore[no-untyped-call]
                self._files.clear()
            _LIVE.discard(self)

    # -- label hygiene (the caller holds the lock) --------------------------------------------

    def _model(self, model: str) -> str:
        label = self._model_labels.get(model)
        if label is None:
            name = pricing.canonical_model(model)
            label = _bounded(self._models, name, MAX_MODELS) if _LABEL_OK.match(name) else OTHER
            if len(self._model_labels) < _LABEL_CACHE_MAX:
                self._model_labels[model] = label
        return label

    def _route(self, route: str) -> str:
        # The app passes fixed route names; bounded anyway, in case a raw path slips in.
        label = self._route_labels.get(route)
        if label is None:
            label = _label(route)
            if label != OTHER:
                label = _bounded(self._routes, label, MAX_ROUTES)
            if len(self._route_labels) < _LABEL_CACHE_MAX:
                self._route_labels[route] = label
        return label

    def _tenant(self, tenant: str | None) -> str:
        if not tenant:
            return "none"
        return _bounded(self._tenants, tenant[:12].lower(), MAX_TENANTS)

    def _key_name(self, name: str | None) -> str:
        # a name, never a key; bounded like the tenant label
        return _bounded(self._key_names, name, MAX_KEY_NAMES) if name else "none"


class _Local:
    """A prometheus_client collector of one ``Metrics`` (in-process mode)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics.families()


def _account(record: RequestRecord) -> pricing.Accounting:
    return pricing.account(
        record.model,
        record,
        compression_removed_tokens=record.compression_removed_tokens,
        response_cache_hit=record.response_cache_hit,
        when=record.ts,
    )


def _inc(series: dict[LabelValues, float], labels: LabelValues, n: float) -> None:
    series[labels] = series.get(labels, 0.0) + n


def _bounded(seen: set[str], value: str, limit: int) -> str:
    if value in seen:
        return value
    if len(seen) >= limit:
        return OTHER
    seen.add(value)
    return value


def _label(value: str) -> str:
    """A value from a fixed set in practice; anything odd collapses to ``other``."""
    v = value.lower()
    return v if _LABEL_OK.match(v) or (v.startswith("/") and len(v) <= 64) else OTHER
