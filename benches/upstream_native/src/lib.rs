//! A native upstream client for the issue-12 byte-pipe prototypes: hyper (HTTP/1.1, keep-alive
//! pool) on a single-threaded tokio runtime in its own OS thread, bridged to asyncio without ever
//! taking the GIL on the tokio side.
//!
//! The bridge, and why it is shaped this way:
//! * Python calls `Engine.send(id, body, headers)`: the bytes are copied and queued to the tokio
//!   thread (an unbounded channel: no GIL, no Python object crosses the thread boundary).
//! * The tokio side pushes completions into a mutex-guarded queue and writes an eventfd only when
//!   the queue goes from "signalled = false" to "true": one wake-up for any number of completions.
//!   The asyncio loop watches that fd (`loop.add_reader`) and calls `Engine.drain()`, which returns
//!   every completion since the last call as a list of tuples. Calling
//!   `loop.call_soon_threadsafe` from the tokio thread instead would need the GIL there, and the
//!   tokio thread would then wait on the event loop's thread for up to the switch interval.
//! * Stream bodies are coalesced: every frame read for a stream is appended to that stream's
//!   buffer, and the stream is queued once until Python drains it, so all events of one network
//!   read (or of several reads between two drains) reach Python as one `bytes`.
//!
//! Completions are `(id, kind, n, text, data)`:
//! * kind 0 FULL: a non-stream answer read whole: n = status, text = content-type, data = body;
//! * kind 1 HEAD: a `text/event-stream` answer started: n = status, text = content-type;
//! * kind 2 DATA: stream bytes since the last drain: n = 1 when the stream has ended, data;
//! * kind 3 ERROR: the request failed (before or during the body): text = the error.
//!
//! This is a benchmark prototype: no timeouts, no flow control (a slow client lets a stream's
//! buffer grow), no TLS. Integrating it would need all three.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

const FULL: u8 = 0;
const HEAD: u8 = 1;
const DATA: u8 = 2;
const ERROR: u8 = 3;

enum Cmd {
    Send {
        id: u64,
        body: Bytes,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    Cancel(u64),
}

enum Ev {
    Full {
        id: u64,
        status: u16,
        ctype: String,
        body: Bytes,
    },
    Head {
        id: u64,
        status: u16,
        ctype: String,
    },
    Data {
        id: u64,
    }, // the bytes are in `Inner::streams`
    Error {
        id: u64,
        msg: String,
    },
}

#[derive(Default)]
struct StreamBuf {
    data: Vec<u8>,
    ended: bool,
    queued: bool,
}

#[derive(Default)]
struct Inner {
    events: VecDeque<Ev>,
    streams: HashMap<u64, StreamBuf>,
    signalled: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    efd: i32,
}

impl Shared {
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to our own eventfd.
        unsafe { libc::write(self.efd, &one as *const u64 as *const libc::c_void, 8) };
    }

    fn push(&self, ev: Ev) {
        let wake = {
            let mut g = self.inner.lock().unwrap();
            g.events.push_back(ev);
            !std::mem::replace(&mut g.signalled, true)
        };
        if wake {
            self.signal();
        }
    }

    fn data(&self, id: u64, chunk: &[u8], ended: bool) {
        let wake = {
            let mut g = self.inner.lock().unwrap();
            let s = g.streams.entry(id).or_default();
            s.data.extend_from_slice(chunk);
            s.ended |= ended;
            if s.queued {
                false
            } else {
                s.queued = true;
                g.events.push_back(Ev::Data { id });
                !std::mem::replace(&mut g.signalled, true)
            }
        };
        if wake {
            self.signal();
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;
/// One completion as handed to Python: (id, kind, status or ended, text, data).
type Completion = (u64, u8, u16, Option<String>, Option<Bytes>);

async fn exchange(
    client: HttpClient,
    uri: Uri,
    id: u64,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    shared: Arc<Shared>,
) {
    let mut req = Request::post(uri);
    {
        let h = req.headers_mut().expect("valid builder");
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            hyper::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in headers {
            h.insert(k, v);
        }
    }
    let req = req.body(Full::new(body)).expect("valid request");
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            shared.push(Ev::Error {
                id,
                msg: format!("{e:?}"),
            });
            return;
        }
    };
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let mut body = resp.into_body();
    if !ctype.starts_with("text/event-stream") {
        match body.collect().await {
            Ok(c) => shared.push(Ev::Full {
                id,
                status,
                ctype,
                body: c.to_bytes(),
            }),
            Err(e) => shared.push(Ev::Error {
                id,
                msg: format!("{e:?}"),
            }),
        }
        return;
    }
    shared.push(Ev::Head { id, status, ctype });
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(d) = frame.into_data() {
                    shared.data(id, &d, false);
                }
            }
            Some(Err(e)) => {
                shared.push(Ev::Error {
                    id,
                    msg: format!("{e:?}"),
                });
                return;
            }
            None => {
                shared.data(id, b"", true);
                return;
            }
        }
    }
}

fn run(uri: Uri, pool: usize, mut rx: mpsc::UnboundedReceiver<Cmd>, shared: Arc<Shared>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let tasks: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Send { id, body, headers } => {
                    let (c, u, s, t) = (client.clone(), uri.clone(), shared.clone(), tasks.clone());
                    let h = tokio::spawn(async move {
                        exchange(c, u, id, body, headers, s).await;
                        t.lock().unwrap().remove(&id);
                    });
                    if !h.is_finished() {
                        tasks.lock().unwrap().insert(id, h.abort_handle());
                    }
                }
                Cmd::Cancel(id) => {
                    if let Some(h) = tasks.lock().unwrap().remove(&id) {
                        h.abort();
                    }
                    shared.inner.lock().unwrap().streams.remove(&id);
                }
            }
        }
    });
}

/// One upstream client per worker: its own tokio thread and keep-alive pool.
#[pyclass(frozen)]
struct Engine {
    tx: Mutex<Option<mpsc::UnboundedSender<Cmd>>>,
    shared: Arc<Shared>,
}

#[pymethods]
impl Engine {
    #[new]
    fn new(url: &str, pool: usize) -> PyResult<Self> {
        let uri: Uri = url
            .parse()
            .map_err(|e| PyValueError::new_err(format!("{e}")))?;
        // SAFETY: plain syscall; the fd is owned by `Shared` and closed in `close`.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(PyOSError::new_err("eventfd failed"));
        }
        let shared = Arc::new(Shared {
            inner: Mutex::default(),
            efd,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("upstream-native".into())
            .spawn(move || run(uri, pool, rx, s))
            .map_err(|e| PyOSError::new_err(format!("{e}")))?;
        Ok(Engine {
            tx: Mutex::new(Some(tx)),
            shared,
        })
    }

    fn fileno(&self) -> i32 {
        self.shared.efd
    }

    /// Queue one POST to the engine's URL; its completions carry `id`.
    fn send(
        &self,
        id: u64,
        body: &[u8],
        headers: Vec<(Bound<'_, PyBytes>, Bound<'_, PyBytes>)>,
    ) -> PyResult<()> {
        let mut hs = Vec::with_capacity(headers.len());
        for (k, v) in &headers {
            let k = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| PyValueError::new_err(format!("{e}")))?;
            let v = HeaderValue::from_bytes(v.as_bytes())
                .map_err(|e| PyValueError::new_err(format!("{e}")))?;
            hs.push((k, v));
        }
        let cmd = Cmd::Send {
            id,
            body: Bytes::copy_from_slice(body),
            headers: hs,
        };
        match &*self.tx.lock().unwrap() {
            Some(tx) if tx.send(cmd).is_ok() => Ok(()),
            _ => Err(PyOSError::new_err("engine closed")),
        }
    }

    /// Stop a request (the client has gone): its task is aborted and its buffer dropped.
    fn cancel(&self, id: u64) {
        if let Some(tx) = &*self.tx.lock().unwrap() {
            let _ = tx.send(Cmd::Cancel(id));
        }
    }

    /// Every completion since the last call (see the module doc), oldest first.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut buf = 0u64;
        // SAFETY: reading 8 bytes into a valid u64 from our own non-blocking eventfd.
        unsafe {
            libc::read(
                self.shared.efd,
                &mut buf as *mut u64 as *mut libc::c_void,
                8,
            )
        };
        let mut out: Vec<Completion> = Vec::new();
        {
            let mut g = self.shared.inner.lock().unwrap();
            g.signalled = false;
            let events = std::mem::take(&mut g.events);
            for ev in events {
                match ev {
                    Ev::Full {
                        id,
                        status,
                        ctype,
                        body,
                    } => out.push((id, FULL, status, Some(ctype), Some(body))),
                    Ev::Head { id, status, ctype } => {
                        out.push((id, HEAD, status, Some(ctype), None))
                    }
                    Ev::Data { id } => {
                        let Some(s) = g.streams.get_mut(&id) else {
                            continue;
                        };
                        s.queued = false;
                        let data = Bytes::from(std::mem::take(&mut s.data));
                        let ended = s.ended;
                        if ended {
                            g.streams.remove(&id);
                        }
                        out.push((id, DATA, ended as u16, None, Some(data)));
                    }
                    Ev::Error { id, msg } => {
                        g.streams.remove(&id);
                        out.push((id, ERROR, 0, Some(msg), None));
                    }
                }
            }
        }
        // The Python objects are made after the lock is released: the tokio thread never waits
        // on the GIL holder for longer than the queue swap above.
        let list = PyList::empty(py);
        for (id, kind, n, text, data) in out {
            let data = data.map(|d| PyBytes::new(py, &d));
            let t = PyTuple::new(
                py,
                [
                    id.into_pyobject(py)?.into_any(),
                    kind.into_pyobject(py)?.into_any(),
                    n.into_pyobject(py)?.into_any(),
                    text.into_pyobject(py)?.into_any(),
                    data.into_pyobject(py)?.into_any(),
                ],
            )?;
            list.append(t)?;
        }
        Ok(list)
    }

    /// Stop the tokio thread (its pending requests are dropped).
    fn close(&self) {
        self.tx.lock().unwrap().take();
    }
}

#[pymodule]
fn upstream_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    Ok(())
}
