//! Fuzz the Anthropic -> OpenAI Responses stream encoder
//! (`_native::responses_stream::ResponsesStreamEncoder`).
//!
//! Properties, for any upstream bytes and any way of cutting them into network chunks:
//! 1. no panic;
//! 2. split invariance without an event limit: the client bytes, what was sealed, the outcome,
//!    the error, the usage, the message id and the stop reason are the same fed whole, fed at the
//!    fuzzer's cut points, and fed one byte at a time;
//! 3. the output is well formed: UTF-8, a run of `event: T\ndata: J\n\n` frames where J is a JSON
//!    object whose `type` is T and whose `sequence_number` counts from 0; after `finish()` exactly
//!    one terminal event (`response.completed` / `.incomplete` when the outcome is `complete`,
//!    else `response.failed` or, before the start, `error`), the last one; a completed
//!    response's `output` is exactly the `response.output_item.done` items, in order;
//! 4. every sealed plaintext is JSON (a list of thinking blocks, or a compaction summary);
//! 5. with an event limit (from the config byte): a run that did not hit it is unchanged; one
//!    that did is a prefix of the unlimited output plus its terminal event;
//! 6. `fail()` after the end adds nothing.
#![no_main]

use std::collections::HashMap;

use _native::responses_stream::{Config, ResponsesStreamEncoder, Sealer, ToolRef};
use _native::stream::Outcome;
use libfuzzer_sys::fuzz_target;

mod common;

/// Deterministic: the token names a hash of what it seals, and every call is kept.
#[derive(Default)]
struct Recorder(Vec<(Vec<u8>, Vec<u8>)>);

impl Sealer for Recorder {
    fn seal(&mut self, plaintext: &[u8], context: &[u8]) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in context.iter().chain(plaintext) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0.push((plaintext.to_vec(), context.to_vec()));
        format!("fs1.{h:016x}")
    }
}

fn config(bits: u8, max_event: usize) -> Config {
    let tool = |custom: bool, name: &str, ns: Option<&str>| ToolRef {
        custom,
        name: name.to_owned(),
        namespace: ns.map(str::to_owned),
    };
    let tools = HashMap::from([
        ("get_weather".to_owned(), tool(false, "get_weather", None)),
        ("apply_patch".to_owned(), tool(true, "apply_patch", None)),
        ("multi__spawn".to_owned(), tool(false, "spawn", Some("multi"))),
    ]);
    Config {
        response_id: "resp_fuzz".to_owned(),
        created_at: 1_700_000_000,
        model: "gpt-5".to_owned(),
        summary: bits & 1 != 0,
        compact: bits & 2 != 0,
        json_tool: (bits & 4 != 0).then(|| "json_answer".to_owned()),
        tools,
        echo: vec![
            ("instructions".to_owned(), b"\"be brief\"".to_vec()),
            ("store".to_owned(), b"true".to_vec()),
        ],
        reasoning_context: b"reasoning\0t".to_vec(),
        compaction_context: b"compaction\0t".to_vec(),
        max_event_bytes: max_event,
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Run {
    out: Vec<u8>,
    sealed: Vec<(Vec<u8>, Vec<u8>)>,
    outcome: Outcome,
    error: Option<(String, String)>,
    usage: [u64; 6],
    message_id: Option<String>,
    stop_reason: Option<String>,
    started: bool,
}

fn run(chunks: &[&[u8]], bits: u8, max_event: usize) -> Run {
    let mut enc = ResponsesStreamEncoder::new(config(bits, max_event));
    let mut sealer = Recorder::default();
    let mut out = Vec::new();
    for chunk in chunks {
        enc.feed(chunk, &mut out, &mut sealer);
    }
    enc.finish(&mut out);
    assert!(enc.done(), "not done after finish()");
    let before = out.len();
    enc.fail(&mut out, "late", "api_error");
    enc.feed(b"event: message_stop\ndata: {}\n\n", &mut out, &mut sealer);
    assert_eq!(out.len(), before, "output after the end");
    Run {
        out,
        sealed: sealer.0,
        outcome: enc.outcome(),
        error: enc.error().map(|(a, b)| (a.to_owned(), b.to_owned())),
        usage: enc.usage(),
        message_id: enc.message_id().map(str::to_owned),
        stop_reason: enc.stop_reason().map(str::to_owned),
        started: enc.started(),
    }
}

const TERMINAL: [&str; 4] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
];

/// Asserts properties 3 and 4 on one run.
fn check_output(r: &Run) {
    let text = std::str::from_utf8(&r.out).expect("output is not UTF-8");
    assert!(text.ends_with("\n\n"), "output does not end a frame");
    let frames: Vec<&str> = text[..text.len() - 2].split("\n\n").collect();
    let last = frames.len() - 1;
    let mut done_items = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let (head, data) = frame.split_once('\n').expect("a frame without data");
        let kind = head.strip_prefix("event: ").expect("a frame without event");
        let json = data.strip_prefix("data: ").expect("a data line without `data: `");
        let value: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("invalid JSON {json:?}: {e}"));
        assert_eq!(value["type"], kind);
        assert_eq!(value["sequence_number"], i);
        if kind == "response.output_item.done" {
            done_items.push(value["item"].clone());
        }
        if TERMINAL.contains(&kind) {
            assert_eq!(i, last, "{kind} before the end");
            let complete = kind == "response.completed" || kind == "response.incomplete";
            assert_eq!(complete, r.outcome == Outcome::Complete);
            assert_eq!(kind == "error", !r.started);
            if kind != "error" {
                let output = value["response"]["output"].as_array().expect("no output");
                assert_eq!(output, &done_items, "final output is not the done items");
            }
        } else {
            assert!(i < last, "a stream ended on {kind}");
        }
    }
    for (plaintext, _) in &r.sealed {
        serde_json::from_slice::<serde_json::Value>(plaintext).expect("sealed plaintext is JSON");
    }
}

fuzz_target!(|data: &[u8]| {
    let input = common::split(data);
    let bits = input.config & 7;
    let max_event = usize::from(input.config >> 3) * 64;

    let expected = run(&[input.body], bits, 0);
    check_output(&expected);

    let got = run(&input.chunks, bits, 0);
    assert_eq!(got, expected, "cut points changed the output");

    if input.body.len() <= common::BYTEWISE_MAX {
        let bytes: Vec<&[u8]> = input.body.chunks(1).collect();
        assert_eq!(run(&bytes, bits, 0), expected, "byte-at-a-time changed the output");
    }

    if max_event > 0 {
        let limited = run(&input.chunks, bits, max_event);
        check_output(&limited);
        let hit = limited.outcome == Outcome::ProtocolError
            && limited
                .error
                .as_ref()
                .is_some_and(|(_, m)| m.starts_with("SSE "));
        if !hit {
            assert_eq!(limited, expected, "a limit not hit changed the output");
        } else {
            // Everything before its terminal event was also in the unlimited output.
            let text = std::str::from_utf8(&limited.out).unwrap_or_default();
            let cut = text[..text.len() - 2].rfind("\n\n").map_or(0, |i| i + 2);
            assert!(expected.out.starts_with(&limited.out[..cut]));
        }
    }
});
