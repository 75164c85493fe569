//! ferrule-loadgen: the load side of `benches/load`.
//!
//! * `gen`: a closed-loop HTTP/1.1 load generator (hyper client, one tokio thread). N
//!   connections each send one request at a time, back to back, for a measured window after a
//!   warm-up; per request it records latency, time to first body byte, time to first token
//!   (a marker string), SSE events, and for paced streams the token rate and the longest gap.
//!   It samples the CPU time and RSS of the process ids it is given (the proxy under test, the
//!   upstream) at the window's edges, so every figure covers the same window. Output: one JSON
//!   object on stdout.
//! * `upstream`: a fast fake Anthropic Messages API (raw tokio + httparse, one thread) serving
//!   the byte payloads of `benches/upstream_clients/fast_upstream.py` (passed as a JSON file),
//!   with per-request controls carried in the request body (so they cross every proxy):
//!   `BENCHPACE=<ms>` paces a stream's 50 deltas, `BENCHID-<digits>` is recorded with the
//!   arrival time (CLOCK_MONOTONIC) while recording is on.

mod common;
mod gen;
mod upstream;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("usage: ferrule-loadgen gen|upstream [--option value ...]");
        std::process::exit(2);
    };
    let opts = common::Opts::parse(&args[1..]);
    match cmd.as_str() {
        "gen" => gen::main(&opts),
        "upstream" => upstream::main(&opts),
        _ => {
            eprintln!("unknown command {cmd}: gen or upstream");
            std::process::exit(2);
        }
    }
}
