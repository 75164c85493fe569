//! The closed-loop load generator (see main.rs).

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use memchr::memmem;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::common::{
    clk_tck, core_busy, cpu_ticks, die, mono_ns, raise_nofile, rss_kb, self_cpu_s, Opts,
};

const ID_TAG: &[u8] = b"BENCHID-";
const ID_DIGITS: usize = 10;
const TAIL: usize = 96;

struct Cfg {
    addr: SocketAddr,
    host: HeaderValue,
    path: String,
    conns: usize,
    t_start: Instant,
    t_w0: Instant,
    t_w1: Instant,
    t_hard: Instant,
    ramp: Duration,
    body: Vec<u8>,
    id_pos: Option<usize>,
    headers: Vec<(HeaderName, HeaderValue)>,
    stream: bool,
    abandon: Option<Duration>,
    req_timeout: Duration,
    marker: Option<Vec<u8>>,
    paced_tokens: u32,
}

#[derive(Clone, Copy)]
struct Rec {
    lat_us: u32,
    ttfb_us: u32,
    ttft_us: u32, // u32::MAX: no token marker seen
    events: u32,
    bytes: u32,
    rate: f32, // tokens/s after the first token (paced streams), NaN otherwise
    max_gap_us: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ErrKind {
    Connect,
    Send,
    Read,
    Status,
    Incomplete,
    NotStream,
    Timeout,
}

const ERR_NAMES: [&str; 7] = [
    "connect",
    "send",
    "read",
    "status",
    "incomplete",
    "not_stream",
    "timeout",
];

fn err_index(e: ErrKind) -> usize {
    match e {
        ErrKind::Connect => 0,
        ErrKind::Send => 1,
        ErrKind::Read => 2,
        ErrKind::Status => 3,
        ErrKind::Incomplete => 4,
        ErrKind::NotStream => 5,
        ErrKind::Timeout => 6,
    }
}

enum Outcome {
    Ok(Rec),
    Err(ErrKind, u16),
    Expired,
}

struct Shared {
    next_id: AtomicU64,
    in_flight: AtomicI64,
    done: AtomicU64,
    errors: AtomicU64,
    abandoned: AtomicU64,
    gone: Mutex<Vec<(u64, u64)>>,
    statuses: Mutex<Vec<u16>>,
}

#[derive(Default)]
struct ClientOut {
    recs: Vec<Rec>,
    errors: [u64; 7],
    abandoned_window: u64,
    abandoned_total: u64,
    cut_at_end: u64,
    reconnects: u64,
}

type Conn = (
    SendRequest<Full<Bytes>>,
    Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>,
);

pub fn main(o: &Opts) {
    raise_nofile();
    let url = o
        .get("url")
        .unwrap_or_else(|| die("--url http://127.0.0.1:PORT/path is required"));
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| die("only http:// URLs"));
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr: SocketAddr = hostport
        .parse()
        .unwrap_or_else(|_| die("--url needs ip:port"));
    let body = match o.get("body") {
        Some(p) => std::fs::read(p).unwrap_or_else(|e| die(&format!("{p}: {e}"))),
        None => b"{}".to_vec(),
    };
    let id_pos = memmem::find(&body, ID_TAG).map(|i| i + ID_TAG.len());
    if let Some(i) = id_pos {
        if body.len() < i + ID_DIGITS || !body[i..i + ID_DIGITS].iter().all(u8::is_ascii_digit) {
            die("BENCHID- must be followed by 10 digits in the body template");
        }
    }
    let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    for h in o.all("header") {
        let (k, v) = h
            .split_once(':')
            .unwrap_or_else(|| die(&format!("bad --header {h:?}")));
        headers.push((
            HeaderName::from_bytes(k.trim().as_bytes()).unwrap_or_else(|_| die("bad header name")),
            HeaderValue::from_str(v.trim()).unwrap_or_else(|_| die("bad header value")),
        ));
    }
    let warmup: f64 = o.num("warmup", 1.0);
    let duration: f64 = o.num("duration", 5.0);
    let grace: f64 = o.num("grace", 15.0);
    let conns: usize = o.num("connections", 32);
    let t_start = Instant::now() + Duration::from_millis(20);
    let t_w0 = t_start + Duration::from_secs_f64(warmup);
    let t_w1 = t_w0 + Duration::from_secs_f64(duration);
    let cfg = Arc::new(Cfg {
        addr,
        host: HeaderValue::from_str(hostport).unwrap_or_else(|_| die("bad host")),
        path,
        conns,
        t_start,
        t_w0,
        t_w1,
        t_hard: t_w1 + Duration::from_secs_f64(grace),
        ramp: Duration::from_secs_f64(o.num("ramp", (warmup * 0.5).min(1.0))),
        body,
        id_pos,
        headers,
        stream: o.flag("stream"),
        abandon: o
            .get("abandon-ms")
            .map(|_| Duration::from_millis(o.num("abandon-ms", 0))),
        req_timeout: Duration::from_secs_f64(o.num("timeout", 60.0)),
        marker: o.get("token-marker").map(|m| m.as_bytes().to_vec()),
        paced_tokens: o.num("paced-tokens", 0),
    });
    let sh = Arc::new(Shared {
        next_id: AtomicU64::new(o.num("id-base", 0)),
        in_flight: AtomicI64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        abandoned: AtomicU64::new(0),
        gone: Mutex::new(Vec::new()),
        statuses: Mutex::new(Vec::new()),
    });
    let proxy_pids = o.pids("cpu-pids");
    let up_pids = o.pids("upstream-pids");
    let label = o.get("label").unwrap_or("").to_string();
    let progress = o.flag("progress");

    // The sampler: a plain thread, so it reads /proc exactly at the window's edges.
    let sampler = {
        let sh = sh.clone();
        let (w0, w1) = (cfg.t_w0.into_std(), cfg.t_w1.into_std());
        std::thread::spawn(move || sample(&proxy_pids, &up_pids, w0, w1, &sh))
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&format!("runtime: {e}")));
    let outs: Vec<ClientOut> = rt.block_on(async {
        if progress {
            let (sh, cfg, label) = (sh.clone(), cfg.clone(), label.clone());
            tokio::spawn(async move { progress_lines(&label, &cfg, &sh).await });
        }
        let handles: Vec<_> = (0..cfg.conns)
            .map(|i| tokio::spawn(client(i, cfg.clone(), sh.clone())))
            .collect();
        let mut outs = Vec::with_capacity(handles.len());
        for h in handles {
            if let Ok(out) = h.await {
                outs.push(out);
            }
        }
        outs
    });
    if progress {
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
    let samples = sampler
        .join()
        .unwrap_or_else(|_| die("sampler thread failed"));
    let result = summarize(&cfg, &sh, outs, samples, duration);
    if let Some(p) = o.get("gone-out") {
        let gone = sh.gone.lock().map(|v| v.clone()).unwrap_or_default();
        let text = serde_json::to_string(&gone).unwrap_or_default();
        std::fs::write(p, text).unwrap_or_else(|e| die(&format!("{p}: {e}")));
    }
    println!("{result}");
}

async fn progress_lines(label: &str, cfg: &Cfg, sh: &Shared) {
    let total = (cfg.t_w1 - cfg.t_start).as_secs_f64();
    let mut last = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let done = sh.done.load(Relaxed);
        let t = cfg.t_start.elapsed().as_secs_f64();
        let phase = if Instant::now() < cfg.t_w0 {
            "warm-up"
        } else if Instant::now() < cfg.t_w1 {
            "measuring"
        } else {
            "draining"
        };
        eprint!(
            "\r\x1b[2K  {label} {phase} {t:4.1}/{total:.0}s  {:>7} req/s  in flight {:>5}  errors {}  abandoned {}",
            done - last,
            sh.in_flight.load(Relaxed),
            sh.errors.load(Relaxed),
            sh.abandoned.load(Relaxed),
        );
        let _ = std::io::stderr().flush();
        last = done;
    }
}

async fn connect(cfg: &Cfg) -> Result<Conn, ()> {
    // Bounded: a target whose accept queue is full leaves connect() waiting for SYN retries.
    let limit = (Instant::now() + Duration::from_secs(10)).min(cfg.t_hard);
    let tcp = match timeout_at(limit, TcpStream::connect(cfg.addr)).await {
        Ok(Ok(tcp)) => tcp,
        _ => return Err(()),
    };
    tcp.set_nodelay(true).ok();
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.map_err(|_| ())?;
    Ok((sender, Box::pin(conn)))
}

fn make_body(cfg: &Cfg, id: u64) -> Bytes {
    let mut b = cfg.body.clone();
    if let Some(i) = cfg.id_pos {
        let s = format!(
            "{:0width$}",
            id % 10u64.pow(ID_DIGITS as u32),
            width = ID_DIGITS
        );
        b[i..i + ID_DIGITS].copy_from_slice(s.as_bytes());
    }
    Bytes::from(b)
}

async fn client(i: usize, cfg: Arc<Cfg>, sh: Arc<Shared>) -> ClientOut {
    let mut out = ClientOut::default();
    let offset = cfg.ramp.mul_f64(i as f64 / cfg.conns.max(1) as f64);
    sleep_until(cfg.t_start + offset).await;
    let mut conn: Option<Conn> = None;
    while Instant::now() < cfg.t_w1 {
        if conn.as_ref().is_some_and(|(s, _)| s.is_closed()) {
            conn = None;
        }
        if conn.is_none() {
            match connect(&cfg).await {
                Ok(c) => {
                    conn = Some(c);
                    out.reconnects += 1;
                }
                Err(()) => {
                    let now = Instant::now();
                    if now >= cfg.t_w0 && now <= cfg.t_w1 {
                        out.errors[err_index(ErrKind::Connect)] += 1;
                    }
                    sh.errors.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let Some((sender, driver)) = conn.as_mut() else {
            continue;
        };
        let id = sh.next_id.fetch_add(1, Relaxed);
        let body = make_body(&cfg, id);
        let mut req = Request::post(cfg.path.as_str());
        for (k, v) in &cfg.headers {
            req = req.header(k, v);
        }
        let req = req
            .header(HOST, cfg.host.clone())
            .header(CONTENT_LENGTH, body.len())
            .body(Full::new(body))
            .unwrap_or_else(|_| die("cannot build the request"));
        let t0 = Instant::now();
        let limit = cfg.abandon.unwrap_or(cfg.req_timeout);
        let deadline = (t0 + limit).min(cfg.t_hard);
        sh.in_flight.fetch_add(1, Relaxed);
        let outcome = tokio::select! {
            biased;
            r = timeout_at(deadline, one_request(sender, req, &cfg, t0)) => match r {
                Ok(r) => r,
                Err(_) => Outcome::Expired,
            },
            _ = driver.as_mut() => Outcome::Err(ErrKind::Read, 0),
        };
        sh.in_flight.fetch_sub(1, Relaxed);
        let t_end = Instant::now();
        let in_window = t_end >= cfg.t_w0 && t_end <= cfg.t_w1;
        match outcome {
            Outcome::Ok(rec) => {
                sh.done.fetch_add(1, Relaxed);
                if in_window {
                    out.recs.push(rec);
                }
            }
            Outcome::Expired => {
                conn = None; // drops the socket: the client is gone from here on
                let gone_ns = mono_ns();
                if t_end >= cfg.t_hard {
                    out.cut_at_end += 1;
                } else if cfg.abandon.is_some() {
                    sh.abandoned.fetch_add(1, Relaxed);
                    sh.gone.lock().map(|mut g| g.push((id, gone_ns))).ok();
                    out.abandoned_total += 1;
                    if in_window {
                        out.abandoned_window += 1;
                    }
                } else {
                    sh.errors.fetch_add(1, Relaxed);
                    if in_window {
                        out.errors[err_index(ErrKind::Timeout)] += 1;
                    }
                }
            }
            Outcome::Err(kind, status) => {
                sh.errors.fetch_add(1, Relaxed);
                if in_window {
                    out.errors[err_index(kind)] += 1;
                    if status != 0 {
                        sh.statuses.lock().map(|mut v| v.push(status)).ok();
                    }
                }
                if kind != ErrKind::Status {
                    conn = None;
                }
            }
        }
    }
    out
}

/// Looks for a marker in a byte stream that arrives in pieces.
struct Finder {
    needle: Vec<u8>,
    carry: Vec<u8>,
}

impl Finder {
    fn new(needle: &[u8]) -> Finder {
        Finder {
            needle: needle.to_vec(),
            carry: Vec::new(),
        }
    }

    fn feed(&mut self, data: &[u8]) -> bool {
        let k = self.needle.len().saturating_sub(1);
        let found = if self.carry.is_empty() {
            memmem::find(data, &self.needle).is_some()
        } else {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(&data[..data.len().min(self.needle.len())]);
            memmem::find(&joined, &self.needle).is_some()
                || memmem::find(data, &self.needle).is_some()
        };
        self.carry.clear();
        self.carry
            .extend_from_slice(&data[data.len().saturating_sub(k)..]);
        found
    }
}

async fn one_request(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
    cfg: &Cfg,
    t0: Instant,
) -> Outcome {
    if sender.ready().await.is_err() {
        return Outcome::Err(ErrKind::Send, 0);
    }
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(_) => return Outcome::Err(ErrKind::Send, 0),
    };
    let status = resp.status().as_u16();
    let is_sse = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| memmem::find(v.as_bytes(), b"event-stream").is_some());
    let mut body = resp.into_body();
    let mut token = cfg.marker.as_deref().map(Finder::new);
    let (mut first, mut ttft, mut last): (Option<Instant>, Option<Instant>, Option<Instant>) =
        (None, None, None);
    let (mut events, mut bytes, mut max_gap) = (0u32, 0u64, Duration::ZERO);
    let mut prev_nl = false;
    // The end-of-stream markers ("data: [DONE]" from OpenAI-shaped streams, "message_stop" from
    // Anthropic-shaped ones) are in the last event: only the stream's tail is kept and searched.
    let mut tail: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Outcome::Err(ErrKind::Read, status);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let now = Instant::now();
        first.get_or_insert(now);
        bytes += data.len() as u64;
        if is_sse {
            if prev_nl && data[0] == b'\n' {
                events += 1;
            }
            events += memmem::find_iter(&data, b"\n\n").count() as u32;
            prev_nl = data[data.len() - 1] == b'\n';
            if data.len() >= TAIL {
                tail.clear();
                tail.extend_from_slice(&data[data.len() - TAIL..]);
            } else {
                tail.extend_from_slice(&data);
                if tail.len() > 2 * TAIL {
                    tail.drain(..tail.len() - TAIL);
                }
            }
        }
        if ttft.is_none() {
            if let Some(f) = token.as_mut() {
                if f.feed(&data) {
                    ttft = Some(now);
                }
            }
        } else if let Some(l) = last {
            max_gap = max_gap.max(now - l);
        }
        last = Some(now);
    }
    let finished =
        memmem::find(&tail, b"[DONE]").is_some() || memmem::find(&tail, b"message_stop").is_some();
    let t_end = Instant::now();
    if !(200..300).contains(&status) {
        return Outcome::Err(ErrKind::Status, status);
    }
    if cfg.stream {
        if !is_sse {
            return Outcome::Err(ErrKind::NotStream, status);
        }
        if !finished {
            return Outcome::Err(ErrKind::Incomplete, status);
        }
    }
    let us = |t: Instant| (t - t0).as_micros().min(u32::MAX as u128 - 1) as u32;
    let rate = match (ttft, last) {
        (Some(a), Some(b)) if cfg.paced_tokens > 1 && b > a => {
            (cfg.paced_tokens - 1) as f32 / (b - a).as_secs_f32()
        }
        _ => f32::NAN,
    };
    Outcome::Ok(Rec {
        lat_us: us(t_end),
        ttfb_us: us(first.unwrap_or(t_end)),
        ttft_us: ttft.map(us).unwrap_or(u32::MAX),
        events,
        bytes: bytes.min(u32::MAX as u64) as u32,
        rate,
        max_gap_us: max_gap.as_micros().min(u32::MAX as u128) as u32,
    })
}

struct Samples {
    proxy_ticks: u64,
    up_ticks: u64,
    self_cpu_s: f64,
    wall_s: f64,
    rss_start_kb: u64,
    rss_peak_kb: u64,
    rss_end_kb: u64,
    in_flight_peak: i64,
    in_flight_mean: f64,
    cores: Vec<f64>,
}

fn sample(
    proxy: &[i32],
    up: &[i32],
    w0: std::time::Instant,
    w1: std::time::Instant,
    sh: &Shared,
) -> Samples {
    if let Some(d) = w0.checked_duration_since(std::time::Instant::now()) {
        std::thread::sleep(d);
    }
    let (p0, u0, s0, c0, t0) = (
        cpu_ticks(proxy),
        cpu_ticks(up),
        self_cpu_s(),
        core_busy(),
        std::time::Instant::now(),
    );
    let rss_start = rss_kb(proxy);
    let (mut peak, mut fl_peak, mut fl_sum, mut n) = (rss_start, 0i64, 0f64, 0u64);
    loop {
        let now = std::time::Instant::now();
        if now >= w1 {
            break;
        }
        std::thread::sleep((w1 - now).min(Duration::from_millis(50)));
        peak = peak.max(rss_kb(proxy));
        let f = sh.in_flight.load(Relaxed);
        fl_peak = fl_peak.max(f);
        fl_sum += f as f64;
        n += 1;
    }
    let (p1, u1, s1, c1) = (cpu_ticks(proxy), cpu_ticks(up), self_cpu_s(), core_busy());
    let wall_s = t0.elapsed().as_secs_f64();
    let rss_end = rss_kb(proxy);
    let cores = c0
        .iter()
        .zip(c1.iter())
        .map(|(a, b)| {
            if b.1 > a.1 {
                (b.0 - a.0) as f64 / (b.1 - a.1) as f64
            } else {
                0.0
            }
        })
        .collect();
    Samples {
        proxy_ticks: p1.saturating_sub(p0),
        up_ticks: u1.saturating_sub(u0),
        self_cpu_s: s1 - s0,
        wall_s,
        rss_start_kb: rss_start,
        rss_peak_kb: peak.max(rss_end),
        rss_end_kb: rss_end,
        in_flight_peak: fl_peak,
        in_flight_mean: if n > 0 { fl_sum / n as f64 } else { 0.0 },
        cores,
    }
}

fn pct(sorted: &[u32], q: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    json!(sorted[idx] as f64 / 1000.0)
}

fn dist_ms(mut v: Vec<u32>) -> Value {
    v.sort_unstable();
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1000.0
    };
    json!({
        "n": v.len(), "p50": pct(&v, 0.5), "p90": pct(&v, 0.9), "p99": pct(&v, 0.99),
        "max": v.last().map(|&x| x as f64 / 1000.0), "mean": mean,
    })
}

fn summarize(cfg: &Cfg, sh: &Shared, outs: Vec<ClientOut>, s: Samples, duration: f64) -> Value {
    let mut recs = Vec::new();
    let mut errors = [0u64; 7];
    let (mut ab_w, mut ab_t, mut cut, mut reconnects) = (0, 0, 0, 0);
    for o in outs {
        recs.extend(o.recs);
        for (e, n) in errors.iter_mut().zip(o.errors) {
            *e += n;
        }
        ab_w += o.abandoned_window;
        ab_t += o.abandoned_total;
        cut += o.cut_at_end;
        reconnects += o.reconnects;
    }
    let ok = recs.len() as u64;
    let err_total: u64 = errors.iter().sum();
    let err_map: serde_json::Map<String, Value> = ERR_NAMES
        .iter()
        .zip(errors)
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut statuses = sh.statuses.lock().map(|v| v.clone()).unwrap_or_default();
    statuses.sort_unstable();
    statuses.dedup();
    let tck = clk_tck();
    let proxy_cpu_s = s.proxy_ticks as f64 / tck;
    let up_cpu_s = s.up_ticks as f64 / tck;
    let completed = ok.max(1) as f64;
    let ttft: Vec<u32> = recs
        .iter()
        .filter(|r| r.ttft_us != u32::MAX)
        .map(|r| r.ttft_us)
        .collect();
    let mut rates: Vec<f32> = recs
        .iter()
        .map(|r| r.rate)
        .filter(|r| r.is_finite())
        .collect();
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let mut events: Vec<u32> = recs.iter().map(|r| r.events).collect();
    events.sort_unstable();
    let nominal = if cfg.paced_tokens > 0 { 50.0 } else { 0.0 };
    let pace = if rates.is_empty() {
        Value::Null
    } else {
        let p =
            |q: f64| rates[((q * rates.len() as f64).ceil() as usize).clamp(1, rates.len()) - 1];
        json!({
            "streams": rates.len(),
            "rate_min": rates[0], "rate_p1": p(0.01), "rate_p50": p(0.5),
            "below_90pct_of_nominal": rates.iter().filter(|&&r| r < 0.9 * nominal).count(),
            "max_gap_ms": dist_ms(recs.iter().filter(|r| r.rate.is_finite()).map(|r| r.max_gap_us).collect()),
        })
    };
    json!({
        "connections": cfg.conns,
        "window_s": duration,
        "ok": ok,
        "rps": ok as f64 / duration,
        "errors": err_total,
        "errors_by_kind": err_map,
        "error_statuses": statuses,
        "abandoned_window": ab_w,
        "abandoned_total": ab_t,
        "cut_at_end": cut,
        "connects": reconnects,
        "latency_ms": dist_ms(recs.iter().map(|r| r.lat_us).collect()),
        "ttfb_ms": dist_ms(recs.iter().map(|r| r.ttfb_us).collect()),
        "ttft_ms": if ttft.is_empty() { Value::Null } else { dist_ms(ttft) },
        "events_p50": events.get(events.len() / 2).copied(),
        "bytes_mean": if recs.is_empty() { 0.0 } else { recs.iter().map(|r| r.bytes as f64).sum::<f64>() / recs.len() as f64 },
        "pace": pace,
        "proxy_cpu_s": proxy_cpu_s,
        "proxy_util": proxy_cpu_s / s.wall_s,
        "proxy_cpu_ms_per_req": 1000.0 * proxy_cpu_s / completed,
        "proxy_rss_start_kb": s.rss_start_kb,
        "proxy_rss_peak_kb": s.rss_peak_kb,
        "proxy_rss_end_kb": s.rss_end_kb,
        "upstream_cpu_s": up_cpu_s,
        "upstream_util": up_cpu_s / s.wall_s,
        "loadgen_cpu_s": s.self_cpu_s,
        "loadgen_util": s.self_cpu_s / s.wall_s,
        "in_flight_peak": s.in_flight_peak,
        "in_flight_mean": s.in_flight_mean,
        "cores_busy": s.cores,
        "sample_wall_s": s.wall_s,
    })
}
