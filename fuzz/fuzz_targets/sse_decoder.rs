//! Fuzz the incremental SSE decoder (`_native::sse::SseDecoder`).
//!
//! Properties, for any bytes and any way of cutting them into chunks:
//! 1. no panic (and no unbounded work: the fuzzer's timeout catches a hang);
//! 2. split invariance without limits: the events (type, data, last id), the `retry` value and
//!    whether an error occurred are the same fed whole, fed at the fuzzer's cut points, and fed
//!    one byte at a time;
//! 3. with limits (sizes from the config byte): the events dispatched before an error are a
//!    prefix of the unlimited events, and a run that ends without an error dispatched exactly the
//!    unlimited events (limits only ever stop the stream, they never change an event);
//! 4. shape: no event type, data or id holds a CR; no type or id holds an LF; no id holds a NUL;
//!    the event type is never empty ("message" when the stream named none).
#![no_main]

use _native::sse::{SseDecoder, SseError};
use libfuzzer_sys::fuzz_target;

mod common;

type Owned = (String, String, String);

fn run(dec: &mut SseDecoder, chunks: &[&[u8]]) -> (Vec<Owned>, Option<SseError>) {
    let mut events = Vec::new();
    for chunk in chunks {
        let res = dec.feed(chunk, |e| {
            events.push((e.event.to_owned(), e.data.to_owned(), e.id.to_owned()));
        });
        if let Err(err) = res {
            return (events, Some(err)); // a caller drops the stream after an error
        }
    }
    (events, None)
}

fn check_shape(events: &[Owned]) {
    for (event, data, id) in events {
        assert!(!event.is_empty(), "empty event type");
        assert!(
            !event.contains(['\r', '\n']),
            "line break in event type {event:?}"
        );
        assert!(!data.contains('\r'), "CR in data {data:?}");
        assert!(
            !id.contains(['\r', '\n', '\0']),
            "CR, LF or NUL in id {id:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let input = common::split(data);

    // Reference: unlimited, fed whole.
    let mut whole = SseDecoder::new(0, 0);
    let (expected, err) = run(&mut whole, &[input.body]);
    assert!(err.is_none(), "an unlimited decoder raised {err:?}");
    check_shape(&expected);

    // Unlimited, at the fuzzer's cut points.
    let mut dec = SseDecoder::new(0, 0);
    let (got, err) = run(&mut dec, &input.chunks);
    assert!(err.is_none());
    assert_eq!(
        got,
        expected,
        "split at {:?}",
        input.chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
    );
    assert_eq!(dec.retry(), whole.retry());

    // Unlimited, one byte at a time.
    if input.body.len() <= common::BYTEWISE_MAX {
        let bytes: Vec<&[u8]> = input.body.chunks(1).collect();
        let mut dec = SseDecoder::new(0, 0);
        let (got, err) = run(&mut dec, &bytes);
        assert!(err.is_none());
        assert_eq!(got, expected, "byte at a time");
        assert_eq!(dec.retry(), whole.retry());
    }

    // Limited: small limits chosen by the config byte (0 keeps a limit off).
    let max_line = usize::from(input.config & 0x0f) * 8;
    let max_event = usize::from(input.config >> 4) * 8;
    for chunks in [vec![input.body], input.chunks.clone()] {
        let mut dec = SseDecoder::new(max_line, max_event);
        let (got, err) = run(&mut dec, &chunks);
        match err {
            None => assert_eq!(got, expected, "limits changed the events without an error"),
            Some(SseError::LineTooLong(n)) => {
                assert_eq!(n, max_line);
                assert!(
                    expected.starts_with(&got),
                    "events before a limit are not a prefix"
                );
            }
            Some(SseError::EventTooLarge(n)) => {
                assert_eq!(n, max_event);
                assert!(
                    expected.starts_with(&got),
                    "events before a limit are not a prefix"
                );
            }
        }
    }
});
