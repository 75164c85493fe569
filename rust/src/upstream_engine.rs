//! The upstream HTTP engine of the native backend (issue 12): hyper's pooled HTTP/1.1 client on a
//! single-threaded tokio runtime in its own OS thread, bridged to asyncio without the GIL on the
//! tokio side. `python/ferrule/upstream_native.py` is its asyncio half and documents the surface;
//! the measurement that chose it is in `benches/RESULTS.md`, "Upstream engine and server
//! interface (issue 12)".
//!
//! The bridge, and why it is shaped this way:
//! * `send(id, path, body, headers)` queues a request; `kick()` hands every queued one to the
//!   tokio thread in one wake-up (the event loop kicks once per turn in which it sent). The body
//!   is shared, not copied (it stays a Python `bytes`, released when the request is done).
//! * The tokio side pushes completions into a mutex-guarded queue and writes an eventfd only when
//!   the queue turns non-empty. The event loop watches the fd and `drain()`s every completion at
//!   once, so one wake-up serves many requests. Calling `loop.call_soon_threadsafe` from tokio
//!   instead would need the GIL there.
//! * A body that is not an event stream is read whole on the tokio side (up to `whole_limit`
//!   bytes) and delivered with the head: one wake-up per non-streamed request.
//! * A stream's bytes go into a per-stream buffer; the stream is announced (`READY`) once until
//!   Python `take()`s the buffer, so every network read between two takes reaches Python as one
//!   `bytes`. The buffer is bounded (`stream_buffer`): past it the engine stops reading that
//!   stream until Python takes, so a slow client slows the upstream (TCP backpressure) instead of
//!   growing memory.
//!
//! Completions from `drain()` are `(id, kind, status, a, b)`:
//! * `HEAD` (0): status and headers arrived: `a` = headers as `(name, value)` bytes pairs,
//!   `b` = the whole body (`bytes`) or `None` when it is to be `take()`n;
//! * `READY` (1): the stream has bytes or has ended: call `take(id)`;
//! * `FAILED` (2): the request failed before its head: `a` = cause, `b` = reason (see `classify`).
//!
//! Timeouts: waiting for a pool slot (`pool_timeout`), connecting (`connect_timeout`), the head
//! (`connect_timeout + read_timeout`), and every read of the body (`read_timeout`, idle).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::{timeout, timeout_at, Instant};

const HEAD: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;

/// How a stream stands, as `take()` reports it.
const OPEN: u8 = 0;
const DONE: u8 = 1;
const TIMED_OUT: u8 = 2;
const BROKEN: u8 = 3;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the queue half-written (pushes are single
    // calls), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

enum Cmd {
    Send {
        id: u64,
        uri: Uri,
        body: Bytes,
        headers: HeaderMap,
        first_byte: Option<Duration>,
    },
    Cancel(u64),
    /// The commands queued since the last `kick`, in order: one wake-up of the tokio thread.
    Batch(Vec<Cmd>),
}

enum Ev {
    Head {
        id: u64,
        status: u16,
        headers: HeaderMap,
        body: Option<Bytes>,
    },
    Ready(u64),
    Failed {
        id: u64,
        cause: &'static str,
        reason: String,
    },
}

struct StreamBuf {
    data: Vec<u8>,
    end: u8,
    reason: Option<String>,
    queued: bool,
    space: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    events: Vec<Ev>,
    streams: HashMap<u64, StreamBuf>,
    signalled: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    efd: i32,
    stream_buffer: usize,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the fd is ours (made in `new`) and nothing uses it once both halves are gone.
        unsafe { libc::close(self.efd) };
    }
}

impl Shared {
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd.
        unsafe { libc::write(self.efd, (&one as *const u64).cast(), 8) };
    }

    /// Queue an event; wake the event loop if the queue was empty since its last drain.
    fn push_locked(g: &mut Inner, ev: Ev) -> bool {
        g.events.push(ev);
        !std::mem::replace(&mut g.signalled, true)
    }

    fn push(&self, ev: Ev) {
        let wake = Self::push_locked(&mut lock(&self.inner), ev);
        if wake {
            self.signal();
        }
    }

    fn failed(&self, id: u64, cause: &'static str, reason: String) {
        self.push(Ev::Failed { id, cause, reason });
    }

    /// The head of a response whose body is to be taken piece by piece; `first` is what was
    /// read of it already. Returns the stream's "space freed" signal.
    fn open_stream(&self, id: u64, status: u16, headers: HeaderMap, first: Vec<u8>) -> Arc<Notify> {
        let space = Arc::new(Notify::new());
        let buf = StreamBuf {
            data: first,
            end: OPEN,
            reason: None,
            queued: false,
            space: space.clone(),
        };
        let wake = {
            let mut g = lock(&self.inner);
            g.streams.insert(id, buf);
            let head = Ev::Head {
                id,
                status,
                headers,
                body: None,
            };
            Self::push_locked(&mut g, head)
        };
        if wake {
            self.signal();
        }
        space
    }

    /// Append to a stream (and/or end it); announce it unless it is announced already.
    /// Returns whether its buffer is now full.
    fn feed(&self, id: u64, chunk: &[u8], end: u8, reason: Option<String>) -> bool {
        let (wake, full) = {
            let mut g = lock(&self.inner);
            let Some(s) = g.streams.get_mut(&id) else {
                return false; // cancelled meanwhile
            };
            s.data.extend_from_slice(chunk);
            if end != OPEN {
                s.end = end;
                s.reason = reason;
            }
            let full = s.data.len() >= self.stream_buffer;
            if s.queued {
                (false, full)
            } else {
                s.queued = true;
                (Self::push_locked(&mut g, Ev::Ready(id)), full)
            }
        };
        if wake {
            self.signal();
        }
        full
    }

    fn full(&self, id: u64) -> bool {
        let g = lock(&self.inner);
        g.streams
            .get(&id)
            .is_some_and(|s| s.data.len() >= self.stream_buffer)
    }
}

/// What a request needs on the tokio side, shared by all requests of an engine.
struct Ctx {
    client: HttpClient,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    pool_timeout: Duration,
    head_timeout: Duration,
    read_timeout: Duration,
    whole_limit: usize,
}

/// The words for a failure before the head: `(cause, reason)`. Causes: `dns`, `refused`,
/// `connect_timeout`, `tls_cert`, `tls`, `connect`, `disconnected`, `connection` (and, from
/// `exchange`, `timeout` and `first_byte`: no head within the request's own timeout);
/// `python/ferrule/upstream.py` (`describe_cause`) turns them into the caller's message.
fn classify(err: &(dyn StdError + 'static), connect: bool) -> (&'static str, String) {
    let mut dns = false;
    let mut innermost = err.to_string();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if connect && text.starts_with("dns error") {
            dns = true;
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return tls_cause(tls);
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return ("disconnected", text);
            }
        }
        let mut next = e.source();
        if let Some(ioe) = e.downcast_ref::<io::Error>() {
            // io::Error's source() skips the error it wraps: look inside it ourselves.
            if let Some(inner) = ioe.get_ref() {
                if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                    return tls_cause(tls);
                }
                next = Some(inner);
            }
            if connect && !dns {
                match ioe.kind() {
                    io::ErrorKind::ConnectionRefused => return ("refused", text),
                    io::ErrorKind::TimedOut => return ("connect_timeout", text),
                    _ => {}
                }
            }
        }
        if !text.is_empty() {
            innermost = text;
        }
        cur = next;
    }
    if dns {
        let reason = innermost
            .strip_prefix("failed to lookup address information: ")
            .unwrap_or(&innermost);
        return ("dns", reason.to_owned());
    }
    (if connect { "connect" } else { "connection" }, innermost)
}

fn tls_cause(err: &rustls::Error) -> (&'static str, String) {
    let cause = match err {
        rustls::Error::InvalidCertificate(_) => "tls_cert",
        _ => "tls",
    };
    (cause, err.to_string())
}

async fn exchange(
    ctx: Arc<Ctx>,
    id: u64,
    uri: Uri,
    body: Bytes,
    headers: HeaderMap,
    first_byte: Option<Duration>,
) {
    let shared = &ctx.shared;
    // The caller's first-byte timeout runs from now (pool wait included, as the aiohttp engine's
    // asyncio.wait_for does); the engine's own head timeout from the moment it has a slot.
    let deadline = first_byte.map(|d| Instant::now() + d);
    let permit = match timeout(ctx.pool_timeout, ctx.permits.clone().acquire_owned()).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => return shared.failed(id, "connection", "the engine is closed".into()),
        Err(_) => return shared.failed(id, "connect_timeout", "no free connection".into()),
    };
    let own = Instant::now() + ctx.head_timeout;
    let (until, cause) = match deadline {
        Some(d) if d <= own => (d, "first_byte"),
        _ => (own, "timeout"),
    };
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let resp = match timeout_at(until, ctx.client.request(req)).await {
        Err(_) => return shared.failed(id, cause, String::new()),
        Ok(Err(e)) => {
            let (cause, reason) = classify(&e, e.is_connect());
            return shared.failed(id, cause, reason);
        }
        Ok(Ok(r)) => r,
    };
    let (parts, mut body) = resp.into_parts();
    let status = parts.status.as_u16();
    let sse = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut first = Vec::new();
    if !sse {
        // Read whole and hand over with the head, unless it grows past the limit (then it is
        // taken like a stream, and the caller's own limit refuses it).
        loop {
            match timeout(ctx.read_timeout, body.frame()).await {
                Ok(None) => {
                    let head = Ev::Head {
                        id,
                        status,
                        headers: parts.headers,
                        body: Some(Bytes::from(first)),
                    };
                    shared.push(head);
                    drop(permit);
                    return;
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(d) = frame.into_data() {
                        first.extend_from_slice(&d);
                        if first.len() > ctx.whole_limit {
                            break;
                        }
                    }
                }
                Ok(Some(Err(e))) => {
                    shared.open_stream(id, status, parts.headers, first);
                    shared.feed(id, b"", BROKEN, Some(e.to_string()));
                    return;
                }
                Err(_) => {
                    shared.open_stream(id, status, parts.headers, first);
                    shared.feed(id, b"", TIMED_OUT, None);
                    return;
                }
            }
        }
    }
    let space = shared.open_stream(id, status, parts.headers, first);
    relay(&ctx, id, &mut body, &space).await;
    drop(permit);
}

/// A started body into the stream's buffer, read by read, until it ends or fails.
async fn relay(ctx: &Ctx, id: u64, body: &mut Incoming, space: &Notify) {
    let shared = &ctx.shared;
    loop {
        while shared.full(id) {
            // a take() frees the buffer and notifies (a permit stored by an earlier take only
            // makes this check run once more)
            space.notified().await;
        }
        match timeout(ctx.read_timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(d) = frame.into_data() {
                    shared.feed(id, &d, OPEN, None);
                }
            }
            Ok(None) => {
                shared.feed(id, b"", DONE, None);
                return;
            }
            Ok(Some(Err(e))) => {
                shared.feed(id, b"", BROKEN, Some(e.to_string()));
                return;
            }
            Err(_) => {
                shared.feed(id, b"", TIMED_OUT, None);
                return;
            }
        }
    }
}

fn run(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            // Every request queued from now on fails with the reason (never a hang).
            let reason = format!("the upstream engine could not start: {e}");
            while let Some(cmd) = rx.blocking_recv() {
                let cmds = match cmd {
                    Cmd::Batch(cmds) => cmds,
                    cmd => vec![cmd],
                };
                for cmd in cmds {
                    if let Cmd::Send { id, .. } = cmd {
                        ctx.shared.failed(id, "connection", reason.clone());
                    }
                }
            }
            return;
        }
    };
    rt.block_on(async move {
        let tasks: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
        while let Some(cmd) = rx.recv().await {
            handle(&ctx, &tasks, cmd);
        }
    });
}

fn handle(ctx: &Arc<Ctx>, tasks: &Arc<Mutex<HashMap<u64, AbortHandle>>>, cmd: Cmd) {
    match cmd {
        Cmd::Send {
            id,
            uri,
            body,
            headers,
            first_byte,
        } => {
            let (c, t) = (ctx.clone(), tasks.clone());
            let handle = tokio::spawn(async move {
                exchange(c, id, uri, body, headers, first_byte).await;
                lock(&t).remove(&id);
            });
            // The task has not run yet (one thread: it runs when this loop awaits), so its own
            // removal above comes after this insert.
            lock(tasks).insert(id, handle.abort_handle());
        }
        Cmd::Cancel(id) => {
            if let Some(h) = lock(tasks).remove(&id) {
                h.abort(); // drops the connection: the upstream sees the caller go
            }
            lock(&ctx.shared.inner).streams.remove(&id);
        }
        Cmd::Batch(cmds) => {
            for cmd in cmds {
                handle(ctx, tasks, cmd);
            }
        }
    }
}

/// One engine per worker process: its own tokio thread, connection pool and TLS configuration.
#[pyclass(name = "UpstreamEngine", module = "ferrule._native", frozen)]
pub struct PyUpstreamEngine {
    base: String,
    tx: Mutex<Option<mpsc::UnboundedSender<Cmd>>>,
    /// Sends queued until the next `kick`: under load the event loop starts many requests per
    /// turn, and each message to the tokio thread would wake it (a futex call and, on a busy
    /// core, a switch to that thread and back) while this thread holds the GIL.
    queued: Mutex<Vec<Cmd>>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    pool_size: usize,
}

fn seconds(s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| PyValueError::new_err(format!("{s} s: {e}")))
}

#[pymethods]
impl PyUpstreamEngine {
    #[new]
    #[pyo3(signature = (base_url, *, pool_size, connect_timeout, read_timeout, pool_timeout,
                        whole_limit, stream_buffer))]
    fn new(
        base_url: &str,
        pool_size: usize,
        connect_timeout: f64,
        read_timeout: f64,
        pool_timeout: f64,
        whole_limit: usize,
        stream_buffer: usize,
    ) -> PyResult<Self> {
        let base = base_url.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|e| PyValueError::new_err(format!("upstream URL {base:?}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(PyValueError::new_err(
                    "the upstream URL must be http or https",
                ))
            }
        };
        let connect_timeout = seconds(connect_timeout)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        // ring, not aws-lc-rs: it builds with any C compiler (the zig cross builds of `make
        // wheels` included). rustls marks it deprecated for lacking post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = if https {
            // The system's trust store (and SSL_CERT_FILE / SSL_CERT_DIR), as aiohttp's default
            // SSL context reads it.
            builder
                .with_provider_and_native_roots(provider)
                .map_err(|e| PyOSError::new_err(format!("no trusted root certificates: {e}")))?
        } else {
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| PyOSError::new_err(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(config)
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool_size)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        // SAFETY: a plain syscall; the fd is owned by `Shared`, which closes it on drop.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(PyOSError::new_err(io::Error::last_os_error().to_string()));
        }
        let shared = Arc::new(Shared {
            inner: Mutex::default(),
            efd,
            stream_buffer: stream_buffer.max(1),
        });
        let permits = Arc::new(Semaphore::new(pool_size.max(1)));
        let read_timeout = seconds(read_timeout)?;
        let ctx = Arc::new(Ctx {
            client,
            shared: shared.clone(),
            permits: permits.clone(),
            pool_timeout: seconds(pool_timeout)?,
            head_timeout: connect_timeout + read_timeout,
            read_timeout,
            whole_limit,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("ferrule-upstream".into())
            .spawn(move || run(ctx, rx))
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(Self {
            base,
            tx: Mutex::new(Some(tx)),
            queued: Mutex::default(),
            shared,
            permits,
            pool_size: pool_size.max(1),
        })
    }

    fn fileno(&self) -> i32 {
        self.shared.efd
    }

    /// Connections lent out now (requests holding a pool slot).
    #[getter]
    fn in_use(&self) -> usize {
        self.pool_size - self.permits.available_permits().min(self.pool_size)
    }

    /// Queue a POST of `body` to the base URL + `path`; its completions carry `id`. No head
    /// within `first_byte` seconds (None: the engine's own head timeout only) fails it with
    /// the cause `first_byte`.
    #[pyo3(signature = (id, path, body, headers, first_byte=None))]
    fn send(
        &self,
        id: u64,
        path: &str,
        body: PyBackedBytes,
        headers: Vec<(String, String)>,
        first_byte: Option<f64>,
    ) -> PyResult<()> {
        let first_byte = first_byte.map(seconds).transpose()?;
        let mut url = String::with_capacity(self.base.len() + path.len());
        url.push_str(&self.base);
        url.push_str(path);
        let uri: Uri = url
            .parse()
            .map_err(|e| PyValueError::new_err(format!("upstream path {path:?}: {e}")))?;
        let mut map = HeaderMap::with_capacity(headers.len());
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| PyValueError::new_err(format!("header name {k:?}: {e}")))?;
            let value = HeaderValue::from_str(&v)
                .map_err(|e| PyValueError::new_err(format!("header {k}: {e}")))?;
            map.append(name, value);
        }
        let cmd = Cmd::Send {
            id,
            uri,
            body: Bytes::from_owner(body),
            headers: map,
            first_byte,
        };
        if lock(&self.tx).is_none() {
            return Err(PyOSError::new_err("the upstream engine is closed"));
        }
        lock(&self.queued).push(cmd);
        Ok(())
    }

    /// Hand the requests `send` queued to the tokio thread, in one wake-up. The event loop
    /// calls it once per turn in which it sent any (`loop.call_soon`).
    fn kick(&self) {
        let cmds = std::mem::take(&mut *lock(&self.queued));
        if cmds.is_empty() {
            return;
        }
        if let Some(tx) = &*lock(&self.tx) {
            let _ = tx.send(Cmd::Batch(cmds));
        }
    }

    /// Stop a request (the caller went away): its connection is closed, its buffer dropped.
    /// Sent at once, after whatever is queued (a queued send of the same request included).
    fn cancel(&self, id: u64) {
        lock(&self.queued).push(Cmd::Cancel(id));
        self.kick();
    }

    /// A stream's bytes since the last take, how it stands (0 open, 1 ended, 2 timed out,
    /// 3 broken) and, when broken, why.
    fn take<'py>(&self, py: Python<'py>, id: u64) -> (Bound<'py, PyBytes>, u8, Option<String>) {
        let (data, end, reason, space) = {
            let mut g = lock(&self.shared.inner);
            match g.streams.get_mut(&id) {
                None => (Vec::new(), BROKEN, Some("no such stream".to_owned()), None),
                Some(s) => {
                    s.queued = false;
                    let data = std::mem::take(&mut s.data);
                    let (end, reason, space) = (s.end, s.reason.take(), s.space.clone());
                    if end != OPEN {
                        g.streams.remove(&id);
                    }
                    (data, end, reason, Some(space))
                }
            }
        };
        if let Some(space) = space {
            space.notify_one();
        }
        (PyBytes::new(py, &data), end, reason)
    }

    /// Every completion since the last call (see the module doc), oldest first.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut buf = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.shared.efd, (&mut buf as *mut u64).cast(), 8) };
        let events = {
            let mut g = lock(&self.shared.inner);
            g.signalled = false;
            std::mem::take(&mut g.events)
        };
        // Python objects are made after the lock is released: the tokio thread never waits on
        // the GIL holder for longer than the swap above.
        let list = PyList::empty(py);
        let none = py.None().into_bound(py);
        for ev in events {
            let item = match ev {
                Ev::Head {
                    id,
                    status,
                    headers,
                    body,
                } => {
                    let pairs: Vec<Bound<'py, PyTuple>> = headers
                        .iter()
                        .map(|(k, v)| {
                            PyTuple::new(
                                py,
                                [
                                    PyBytes::new(py, k.as_str().as_bytes()),
                                    PyBytes::new(py, v.as_bytes()),
                                ],
                            )
                        })
                        .collect::<PyResult<_>>()?;
                    let body = match body {
                        Some(b) => PyBytes::new(py, &b).into_any(),
                        None => none.clone(),
                    };
                    (id, HEAD, status, PyTuple::new(py, pairs)?.into_any(), body)
                }
                Ev::Ready(id) => (id, READY, 0, none.clone(), none.clone()),
                Ev::Failed { id, cause, reason } => (
                    id,
                    FAILED,
                    0,
                    cause.into_pyobject(py)?.into_any(),
                    reason.into_pyobject(py)?.into_any(),
                ),
            };
            list.append(item)?;
        }
        Ok(list)
    }

    /// Stop the tokio thread; requests still running are dropped (their connections closed).
    fn close(&self) {
        lock(&self.tx).take();
        lock(&self.queued).clear();
    }
}
