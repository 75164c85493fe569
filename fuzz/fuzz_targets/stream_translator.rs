//! Fuzz the Anthropic -> OpenAI stream translator (`_native::stream::StreamTranslator`).
//!
//! Properties, for any upstream bytes and any way of cutting them into network chunks:
//! 1. no panic;
//! 2. split invariance without an event limit: the client bytes, the outcome, the error, the
//!    usage, the message id and the stop reason are the same fed whole, fed at the fuzzer's cut
//!    points, and fed one byte at a time;
//! 3. the output is well formed: UTF-8, a run of `data: X\n\n` events where X is `[DONE]` or a
//!    JSON object; after `finish()` exactly one terminal event, the last one (`[DONE]` when the
//!    outcome is `complete`, else an `{"error": ...}` object);
//! 4. with an event limit (from the config byte): unless the stream hit the limit, everything is
//!    as without it; when it did, the output before the final error event is a prefix of the
//!    unlimited output (a limit drops the current chunk's events, never rewrites earlier ones).
#![no_main]

use _native::stream::{Outcome, StreamTranslator};
use libfuzzer_sys::fuzz_target;

mod common;

const MODEL: &str = "claude-sonnet-4-6";
const CREATED: i64 = 1_700_000_000;
const JSON_TOOL: &str = "json_answer";

#[derive(Debug, PartialEq, Eq)]
struct Run {
    out: Vec<u8>,
    outcome: Outcome,
    error: Option<(String, String)>,
    usage: [u64; 6],
    message_id: Option<String>,
    stop_reason: Option<String>,
    started: bool,
}

fn run(chunks: &[&[u8]], include_usage: bool, max_event: usize, json_tool: bool) -> Run {
    let tool = json_tool.then_some(JSON_TOOL);
    let mut t = StreamTranslator::new(MODEL, CREATED, include_usage, max_event, tool);
    let mut out = Vec::new();
    for chunk in chunks {
        t.feed(chunk, &mut out);
    }
    t.finish(&mut out);
    assert!(t.done(), "not done after finish()");
    Run {
        out,
        outcome: t.outcome(),
        error: t.error().map(|(a, b)| (a.to_owned(), b.to_owned())),
        usage: t.usage(),
        message_id: t.message_id().map(str::to_owned),
        stop_reason: t.stop_reason().map(str::to_owned),
        started: t.started(),
    }
}

/// Asserts property 3 on one run's output.
fn check_output(r: &Run) {
    let text = std::str::from_utf8(&r.out).expect("output is not UTF-8");
    assert!(
        text.ends_with("\n\n"),
        "output does not end an event: {text:?}"
    );
    let events: Vec<&str> = text[..text.len() - 2].split("\n\n").collect();
    let last = events.len() - 1;
    for (i, event) in events.iter().enumerate() {
        let payload = event
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("event without `data: `: {event:?}"));
        if payload == "[DONE]" {
            assert_eq!(i, last, "[DONE] before the end");
            assert_eq!(r.outcome, Outcome::Complete);
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("invalid JSON {payload:?}: {e}"));
        let obj = value.as_object().expect("payload is not an object");
        if obj.contains_key("error") {
            assert_eq!(i, last, "error event before the end");
            assert_eq!(obj.len(), 1);
            assert_ne!(r.outcome, Outcome::Complete);
            assert!(r.error.is_some());
        } else {
            assert!(i < last, "a stream ended on a plain chunk");
            assert!(
                obj.contains_key("choices"),
                "chunk without choices: {payload}"
            );
        }
    }
}

fn is_limit_error(r: &Run) -> bool {
    r.outcome == Outcome::ProtocolError
        && r.error.as_ref().is_some_and(|(_, m)| m.starts_with("SSE "))
}

fuzz_target!(|data: &[u8]| {
    let input = common::split(data);
    let include_usage = input.config & 1 != 0;
    let json_tool = input.config & 2 != 0;
    let max_event = usize::from(input.config >> 2) * 64;

    let expected = run(&[input.body], include_usage, 0, json_tool);
    check_output(&expected);
    assert!(
        !is_limit_error(&expected),
        "unlimited translator hit a limit"
    );

    let got = run(&input.chunks, include_usage, 0, json_tool);
    assert_eq!(
        got,
        expected,
        "split at {:?}",
        input.chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
    );

    if input.body.len() <= common::BYTEWISE_MAX {
        let bytes: Vec<&[u8]> = input.body.chunks(1).collect();
        assert_eq!(
            run(&bytes, include_usage, 0, json_tool),
            expected,
            "byte at a time"
        );
    }

    if max_event != 0 {
        for chunks in [vec![input.body], input.chunks.clone()] {
            let limited = run(&chunks, include_usage, max_event, json_tool);
            check_output(&limited);
            if is_limit_error(&limited) {
                let text = &limited.out;
                let cut = text[..text.len() - 2]
                    .windows(2)
                    .rposition(|w| w == b"\n\n")
                    .map_or(0, |p| p + 2);
                assert!(
                    expected.out.starts_with(&text[..cut]),
                    "output before a limit error is not a prefix of the unlimited output"
                );
            } else {
                assert_eq!(
                    limited, expected,
                    "the limit changed a stream it did not stop"
                );
            }
        }
    }
});
