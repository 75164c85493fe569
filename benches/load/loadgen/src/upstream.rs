//! The fast fake Anthropic upstream (see main.rs). One thread, raw HTTP/1.1 keep-alive.
//!
//! Answers every POST the same way, whatever its path: a body with `"stream":true` (or
//! `"stream": true`) gets the 56 SSE events of the payload file, one HTTP chunk each, written in
//! one go; any other body gets the fixed Messages JSON. `BENCHPACE=<ms>` in the body sends the
//! three head events at once, then the 50 deltas `ms` apart (the last one together with the
//! three closing events); a downstream that closes meanwhile stops the stream (counted).
//! `GET /__stats` returns the counters; `GET /__record/start` clears and starts recording
//! `BENCHID-<digits>` arrivals; `GET /__record/dump` stops and returns `[[id, arrival_ns], ...]`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep_until, Instant};

use crate::common::{die, mono_ns, raise_nofile, Opts};

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static STREAMS: AtomicU64 = AtomicU64::new(0);
static PACED_ACTIVE: AtomicI64 = AtomicI64::new(0);
static PACED_DONE: AtomicU64 = AtomicU64::new(0);
static PACED_ABORTED: AtomicU64 = AtomicU64::new(0);
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicI64 = AtomicI64::new(0);
static BAD: AtomicU64 = AtomicU64::new(0);
static BODY_BYTES: AtomicU64 = AtomicU64::new(0);
static RECORDING: AtomicBool = AtomicBool::new(false);
static RECORDED: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

struct Payloads {
    json_response: Vec<u8>,
    stream_response: Vec<u8>,
    /// response head + the events before the first delta
    paced_head: Vec<u8>,
    /// one HTTP chunk per delta event
    deltas: Vec<Vec<u8>>,
    /// the events after the last delta + the last chunk
    trailer: Vec<u8>,
}

const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
cache-control: no-cache\r\nrequest-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n";

fn chunk(e: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", e.len()).into_bytes();
    out.extend_from_slice(e);
    out.extend_from_slice(b"\r\n");
    out
}

fn load_payloads(path: &str) -> Payloads {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| die(&format!("{path}: {e}")));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| die(&format!("{path}: {e}")));
    let events: Vec<Vec<u8>> = v["events"]
        .as_array()
        .unwrap_or_else(|| die("payloads: no events"))
        .iter()
        .map(|e| {
            e.as_str()
                .unwrap_or_else(|| die("payloads: event not a string"))
                .as_bytes()
                .to_vec()
        })
        .collect();
    let body = v["json_body"]
        .as_str()
        .unwrap_or_else(|| die("payloads: no json_body"))
        .as_bytes();
    let is_delta = |e: &Vec<u8>| memmem::find(e, b"content_block_delta").is_some();
    let first = events
        .iter()
        .position(is_delta)
        .unwrap_or_else(|| die("payloads: no delta"));
    let last = events.iter().rposition(is_delta).unwrap_or(first);
    let mut json_response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: req_bench\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    json_response.extend_from_slice(body);
    let mut stream_response = STREAM_HEAD.to_vec();
    for e in &events {
        stream_response.extend(chunk(e));
    }
    stream_response.extend_from_slice(b"0\r\n\r\n");
    let mut paced_head = STREAM_HEAD.to_vec();
    for e in &events[..first] {
        paced_head.extend(chunk(e));
    }
    let deltas = events[first..=last].iter().map(|e| chunk(e)).collect();
    let mut trailer = Vec::new();
    for e in &events[last + 1..] {
        trailer.extend(chunk(e));
    }
    trailer.extend_from_slice(b"0\r\n\r\n");
    Payloads {
        json_response,
        stream_response,
        paced_head,
        deltas,
        trailer,
    }
}

pub fn main(o: &Opts) {
    raise_nofile();
    let host = o.get("host").unwrap_or("127.0.0.1").to_string();
    let port: u16 = o.num("port", 8089);
    let payloads = Arc::new(load_payloads(
        o.get("payloads")
            .unwrap_or_else(|| die("--payloads FILE is required")),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&format!("runtime: {e}")));
    rt.block_on(async move {
        let addr = format!("{host}:{port}")
            .parse()
            .unwrap_or_else(|_| die("bad --host/--port"));
        let sock = TcpSocket::new_v4().unwrap_or_else(|e| die(&format!("socket: {e}")));
        sock.set_reuseaddr(true).ok();
        sock.bind(addr)
            .unwrap_or_else(|e| die(&format!("bind {addr}: {e}")));
        let listener = sock
            .listen(4096)
            .unwrap_or_else(|e| die(&format!("listen: {e}")));
        println!("fast upstream listening on http://{addr}");
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(conn(s, payloads.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    });
}

struct Head {
    len: usize,
    clen: usize,
    chunked: bool,
    close: bool,
    expect: bool,
    get: bool,
    path: String,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mut h = Head {
        len,
        clen: 0,
        chunked: false,
        close: req.version == Some(0),
        expect: false,
        get: req.method == Some("GET"),
        path: req.path.unwrap_or("/").to_string(),
    };
    for hd in req.headers.iter() {
        let name = hd.name;
        if name.eq_ignore_ascii_case("content-length") {
            h.clen = std::str::from_utf8(hd.value)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or(())?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let v = hd.value.to_ascii_lowercase();
            if memmem::find(&v, b"close").is_some() {
                h.close = true;
            } else if memmem::find(&v, b"keep-alive").is_some() {
                h.close = false;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            h.expect = true;
        }
    }
    Ok(Some(h))
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.reserve(65536);
    matches!(s.read_buf(buf).await, Ok(n) if n > 0)
}

struct OpenGuard;
impl Drop for OpenGuard {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Relaxed);
    }
}

fn digits_after(body: &[u8], tag: &[u8]) -> Option<u64> {
    let i = memmem::find(body, tag)? + tag.len();
    let end = body[i..]
        .iter()
        .take(20)
        .take_while(|c| c.is_ascii_digit())
        .count();
    std::str::from_utf8(&body[i..i + end]).ok()?.parse().ok()
}

fn json_head(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn stats() -> Vec<u8> {
    let v = serde_json::json!({
        "requests": REQUESTS.load(Relaxed),
        "streams": STREAMS.load(Relaxed),
        "paced_active": PACED_ACTIVE.load(Relaxed),
        "paced_done": PACED_DONE.load(Relaxed),
        "paced_aborted": PACED_ABORTED.load(Relaxed),
        "accepted": ACCEPTED.load(Relaxed),
        "open_connections": OPEN.load(Relaxed),
        "bad": BAD.load(Relaxed),
        "body_bytes": BODY_BYTES.load(Relaxed),
        "recording": RECORDING.load(Relaxed),
    });
    json_head(v.to_string().as_bytes())
}

enum Answer {
    Bytes(Vec<u8>),
    Json,
    Burst,
    Paced(u64),
}

async fn conn(mut s: TcpStream, p: Arc<Payloads>) {
    ACCEPTED.fetch_add(1, Relaxed);
    OPEN.fetch_add(1, Relaxed);
    let _guard = OpenGuard;
    s.set_nodelay(true).ok();
    let mut buf: Vec<u8> = Vec::with_capacity(16384);
    loop {
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(()) => {
                    BAD.fetch_add(1, Relaxed);
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
            }
            if !read_more(&mut s, &mut buf).await {
                return;
            }
        };
        if head.chunked {
            // The clients under test send lengths; chunked request bodies are not supported.
            BAD.fetch_add(1, Relaxed);
            let _ = s
                .write_all(b"HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        }
        let total = head.len + head.clen;
        if head.expect && buf.len() < total {
            let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        while buf.len() < total {
            if !read_more(&mut s, &mut buf).await {
                return;
            }
        }
        let arrival = mono_ns();
        let answer = {
            let body = &buf[head.len..total];
            if head.get && head.path.starts_with("/__stats") {
                Answer::Bytes(stats())
            } else if head.get && head.path.starts_with("/__record/start") {
                RECORDED.lock().map(|mut v| v.clear()).ok();
                RECORDING.store(true, Relaxed);
                Answer::Bytes(json_head(b"{\"recording\":true}"))
            } else if head.get && head.path.starts_with("/__record/dump") {
                RECORDING.store(false, Relaxed);
                let v = RECORDED
                    .lock()
                    .map(|mut v| std::mem::take(&mut *v))
                    .unwrap_or_default();
                let mut out = String::with_capacity(v.len() * 32 + 2);
                out.push('[');
                for (i, (id, ns)) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("[{id},{ns}]"));
                }
                out.push(']');
                Answer::Bytes(json_head(out.as_bytes()))
            } else {
                REQUESTS.fetch_add(1, Relaxed);
                BODY_BYTES.fetch_add(body.len() as u64, Relaxed);
                if RECORDING.load(Relaxed) {
                    if let Some(id) = digits_after(body, b"BENCHID-") {
                        RECORDED.lock().map(|mut v| v.push((id, arrival))).ok();
                    }
                }
                let stream = memmem::find(body, b"\"stream\":true").is_some()
                    || memmem::find(body, b"\"stream\": true").is_some();
                if !stream {
                    Answer::Json
                } else {
                    STREAMS.fetch_add(1, Relaxed);
                    match digits_after(body, b"BENCHPACE=") {
                        Some(ms) if ms > 0 => Answer::Paced(ms),
                        _ => Answer::Burst,
                    }
                }
            }
        };
        buf.drain(..total);
        let ok = match answer {
            Answer::Bytes(b) => s.write_all(&b).await.is_ok(),
            Answer::Json => s.write_all(&p.json_response).await.is_ok(),
            Answer::Burst => s.write_all(&p.stream_response).await.is_ok(),
            Answer::Paced(ms) => {
                PACED_ACTIVE.fetch_add(1, Relaxed);
                let done = paced(&mut s, &mut buf, &p, ms).await;
                PACED_ACTIVE.fetch_sub(1, Relaxed);
                if done {
                    PACED_DONE.fetch_add(1, Relaxed);
                } else {
                    PACED_ABORTED.fetch_add(1, Relaxed);
                }
                done
            }
        };
        if !ok || head.close {
            return;
        }
    }
}

/// One paced stream; false when the downstream went away before its end.
async fn paced(s: &mut TcpStream, buf: &mut Vec<u8>, p: &Payloads, ms: u64) -> bool {
    if s.write_all(&p.paced_head).await.is_err() {
        return false;
    }
    let start = Instant::now();
    let n = p.deltas.len();
    for (i, d) in p.deltas.iter().enumerate() {
        let at = start + Duration::from_millis(ms * (i as u64 + 1));
        loop {
            buf.reserve(4096);
            tokio::select! {
                _ = sleep_until(at) => break,
                r = s.read_buf(buf) => match r {
                    Ok(0) | Err(_) => return false, // the downstream closed
                    Ok(_) => continue,             // pipelined bytes: keep them
                },
            }
        }
        let res = if i + 1 == n {
            let mut last = d.clone();
            last.extend_from_slice(&p.trailer);
            s.write_all(&last).await
        } else {
            s.write_all(d).await
        };
        if res.is_err() {
            return false;
        }
    }
    true
}
