//! Incremental Server-Sent Events decoder (native twin of `ferrule._pure.sse`).
//!
//! Implements the WHATWG "event stream interpretation" rules
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>);
//! the Python twin is the source of truth and this file follows it step by step.
//!
//! NOTE: only CR and LF end a line; `\x0b`, `\x0c` and U+2028 are ordinary characters here.

use std::borrow::Cow;
use std::fmt;

use memchr::memchr2;

const BOM: &[u8] = b"\xef\xbb\xbf";

/// The stream broke a limit the decoder was asked to enforce (never raised for bad syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// More than this many bytes of one unterminated line are buffered.
    LineTooLong(usize),
    /// The `data` lines of one event (as received) are larger than this many bytes.
    EventTooLarge(usize),
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong(n) => write!(f, "SSE line longer than {n} bytes"),
            Self::EventTooLarge(n) => write!(f, "SSE event larger than {n} bytes"),
        }
    }
}

impl std::error::Error for SseError {}

/// One dispatched event, borrowed from the decoder until the next line is processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event type, `"message"` when the stream named none.
    pub event: &'a str,
    pub data: &'a str,
    /// The last event id seen so far (the spec's "last event ID buffer"), `""` when none.
    pub id: &'a str,
}

/// Feed raw bytes, get back complete events.
///
/// `max_line_bytes` bounds the bytes held for one unterminated line and `max_event_bytes` the
/// bytes of the `data` lines (as received) buffered for one event; `0` means unlimited.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// The previous chunk ended on "\r": a leading "\n" belongs to it.
    skip_lf: bool,
    bom_checked: bool,
    max_line: usize,
    max_event: usize,
    fields: Fields,
}

/// The spec's buffers, plus the reconnection time.
#[derive(Debug, Default)]
struct Fields {
    event: String,
    /// The data lines joined with "\n" (the spec's data buffer without its trailing LF).
    data: String,
    /// At least one `data` line since the last dispatch (so an empty `data` still dispatches).
    has_data: bool,
    data_bytes: usize,
    last_id: String,
    retry: Option<u64>,
}

impl SseDecoder {
    pub fn new(max_line_bytes: usize, max_event_bytes: usize) -> Self {
        Self {
            max_line: max_line_bytes,
            max_event: max_event_bytes,
            ..Self::default()
        }
    }

    /// The last valid `retry:` value in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.fields.retry
    }

    /// Decode one chunk, calling `on_event` for each event it completes.
    ///
    /// NOTE: like the Python twin, an error leaves the decoder where it stopped (the lines of this
    /// chunk before the error have been processed, but are still buffered); a caller is expected
    /// to drop the stream after an error.
    pub fn feed<F>(&mut self, chunk: &[u8], mut on_event: F) -> Result<(), SseError>
    where
        F: FnMut(Event<'_>),
    {
        if self.buf.is_empty() && self.bom_checked {
            // Fast path: the lines are read straight from the chunk and only an unterminated
            // tail is copied. On an error the whole chunk is kept, as the general path does.
            match self.lines(chunk, &mut on_event) {
                Ok(pos) => self
                    .buf
                    .extend_from_slice(chunk.get(pos..).unwrap_or_default()),
                Err(err) => {
                    self.buf.extend_from_slice(chunk);
                    return Err(err);
                }
            }
        } else {
            self.buf.extend_from_slice(chunk);
            if !self.strip_bom() {
                return Ok(()); // could still be a BOM: wait for more bytes
            }
            let buf = std::mem::take(&mut self.buf);
            let read = self.lines(&buf, &mut on_event);
            self.buf = buf;
            self.buf.drain(..read?);
        }
        if self.max_line != 0 && self.buf.len() > self.max_line {
            return Err(SseError::LineTooLong(self.max_line));
        }
        Ok(())
    }

    /// Process the complete lines of `buf`; returns how many bytes they took.
    fn lines<F>(&mut self, buf: &[u8], on_event: &mut F) -> Result<usize, SseError>
    where
        F: FnMut(Event<'_>),
    {
        let mut pos = 0;
        if self.skip_lf && !buf.is_empty() {
            if buf.first() == Some(&b'\n') {
                pos = 1;
            }
            self.skip_lf = false;
        }
        while let Some((line_end, next)) = next_line(buf, pos, &mut self.skip_lf) {
            self.fields
                .line(&buf[pos..line_end], self.max_event, on_event)?;
            pos = next;
        }
        Ok(pos)
    }

    /// "The UTF-8 decode algorithm strips one leading UTF-8 Byte Order Mark (BOM), if any."
    ///
    /// Returns false while the buffer is still a prefix of a BOM (nothing can be decided yet).
    fn strip_bom(&mut self) -> bool {
        if !self.bom_checked {
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return false;
            }
            if self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
            }
            self.bom_checked = true;
        }
        true
    }
}

/// "The stream must then be parsed by reading everything line by line, with a U+000D CARRIAGE
/// RETURN U+000A LINE FEED (CRLF) character pair, a single U+000A LINE FEED (LF) character not
/// preceded by a U+000D CARRIAGE RETURN (CR) character, and a single U+000D CARRIAGE RETURN (CR)
/// character not followed by a U+000A LINE FEED (LF) character being the ways in which a line can
/// end."
///
/// Returns where the line starting at `pos` ends and where the next one starts, or `None` when
/// the rest of `buf` is an unterminated line. A CR that ends `buf` sets `skip_lf`: the LF that may
/// start the next chunk belongs to it.
fn next_line(buf: &[u8], pos: usize, skip_lf: &mut bool) -> Option<(usize, usize)> {
    let line_end = pos + memchr2(b'\r', b'\n', buf.get(pos..)?)?;
    let mut next = line_end + 1;
    if buf.get(line_end) == Some(&b'\r') {
        match buf.get(next) {
            Some(b'\n') => next += 1,
            Some(_) => {}
            None => *skip_lf = true,
        }
    }
    Some((line_end, next))
}

impl Fields {
    /// "Lines must be processed, in the order they are received, as follows:
    ///
    /// If the line is empty (a blank line): Dispatch the event, as defined below.
    ///
    /// If the line starts with a U+003A COLON character (:): Ignore the line.
    ///
    /// If the line contains a U+003A COLON character (:): Collect the characters on the line
    /// before the first U+003A COLON character (:), and let field be that string. Collect the
    /// characters on the line after the first U+003A COLON character (:), and let value be that
    /// string. If value starts with a U+0020 SPACE character, remove it from value. Process the
    /// field using the steps described below, using field as the field name and value as the
    /// field value.
    ///
    /// Otherwise, the string is not empty but does not contain a U+003A COLON character (:):
    /// Process the field using the steps described below, using the whole line as the field name,
    /// and the empty string as the field value."
    ///
    /// "Streams must be decoded using the UTF-8 decode algorithm": each line is decoded on its
    /// own, invalid sequences becoming U+FFFD (maximal subparts, as Python's `errors="replace"`).
    fn line<F>(&mut self, raw: &[u8], max_event: usize, on_event: &mut F) -> Result<(), SseError>
    where
        F: FnMut(Event<'_>),
    {
        if raw.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        let line: Cow<'_, str> = match std::str::from_utf8(raw) {
            Ok(line) => Cow::Borrowed(line), // much faster than from_utf8_lossy on valid text
            Err(_) => String::from_utf8_lossy(raw),
        };
        let (field, value) = match line.find(':') {
            Some(0) => return Ok(()), // a comment
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&*line, ""),
        };
        self.field(field, value);
        if field == "data" {
            self.data_bytes = self.data_bytes.saturating_add(raw.len());
            if max_event != 0 && self.data_bytes > max_event {
                return Err(SseError::EventTooLarge(max_event));
            }
        }
        Ok(())
    }

    /// "The steps to process the field given a field name and a field value depend on the field
    /// name, as given in the following list. Field names must be compared literally, with no case
    /// folding performed.
    ///
    /// If the field name is "event": Set the event type buffer to field value.
    ///
    /// If the field name is "data": Append the field value to the data buffer, then append a
    /// single U+000A LINE FEED (LF) character to the data buffer.
    ///
    /// If the field name is "id": If the field value does not contain U+0000 NULL, then set the
    /// last event ID buffer to the field value. Otherwise, ignore the field.
    ///
    /// If the field name is "retry": If the field value consists of only ASCII digits, then
    /// interpret the field value as an integer in base ten, and set the event stream's
    /// reconnection time to that integer. Otherwise, ignore the field.
    ///
    /// Otherwise: The field is ignored."
    ///
    /// NOTE: the data buffer is kept without its trailing LF (the dispatch step removes it);
    /// a `retry` that does not fit a u64 is ignored, as in the Python twin.
    fn field(&mut self, field: &str, value: &str) {
        match field {
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => {
                self.last_id.clear();
                self.last_id.push_str(value);
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(retry) = value.parse::<u64>() {
                    self.retry = Some(retry);
                }
            }
            _ => {}
        }
    }

    /// "When the user agent is required to dispatch the event, [...] If the data buffer is an
    /// empty string, set the data buffer and the event type buffer to the empty string and
    /// return. [...] If the data buffer's last character is a U+000A LINE FEED (LF) character,
    /// then remove the last character from the data buffer. [...] Initialize event's type
    /// attribute to "message" [...] If the event type buffer has a value other than the empty
    /// string, change the type of the newly created event to equal the value of the event type
    /// buffer. [...] Set the data buffer and the event type buffer to the empty string."
    fn dispatch<F>(&mut self, on_event: &mut F)
    where
        F: FnMut(Event<'_>),
    {
        if self.has_data {
            let event = if self.event.is_empty() {
                "message"
            } else {
                &self.event
            };
            on_event(Event {
                event,
                data: &self.data,
                id: &self.last_id,
            });
        }
        self.data.clear();
        self.has_data = false;
        self.data_bytes = 0;
        self.event.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (String, String, String);

    fn feed_all(dec: &mut SseDecoder, chunks: &[&[u8]]) -> Result<Vec<Owned>, SseError> {
        let mut events = Vec::new();
        for chunk in chunks {
            dec.feed(chunk, |e| {
                events.push((e.event.to_owned(), e.data.to_owned(), e.id.to_owned()))
            })?;
        }
        Ok(events)
    }

    /// Every way the tests feed one input: whole, split in two at every byte, one byte at a time,
    /// and one byte at a time with empty chunks in between.
    fn splits(input: &[u8]) -> Vec<Vec<&[u8]>> {
        let mut ways = vec![vec![input]];
        for i in 0..=input.len() {
            ways.push(vec![&input[..i], &input[i..]]);
        }
        ways.push(input.chunks(1).collect());
        let mut with_empty: Vec<&[u8]> = vec![b""];
        for c in input.chunks(1) {
            with_empty.push(c);
            with_empty.push(b"");
        }
        ways.push(with_empty);
        ways
    }

    fn ev(event: &str, data: &str, id: &str) -> Owned {
        (event.to_owned(), data.to_owned(), id.to_owned())
    }

    #[test]
    fn table() {
        let cases: Vec<(&[u8], Vec<Owned>)> = vec![
            (b"data: a\n\n", vec![ev("message", "a", "")]),
            (b"data: a\r\n\r\n", vec![ev("message", "a", "")]),
            (
                b"data: a\r\rdata: b\r\r",
                vec![ev("message", "a", ""), ev("message", "b", "")],
            ),
            (
                b"data:a\ndata: b\ndata:  c\n\n",
                vec![ev("message", "a\nb\n c", "")],
            ),
            (
                b"event: x\ndata: 1\n\ndata: 2\n\n",
                vec![ev("x", "1", ""), ev("message", "2", "")],
            ),
            (b": comment\ndata: x\n:\n\n", vec![ev("message", "x", "")]),
            (b"data\n\n", vec![ev("message", "", "")]),
            (
                b"data:\n\ndata: \n\n",
                vec![ev("message", "", ""), ev("message", "", "")],
            ),
            (b"event: only\n\ndata: y\n\n", vec![ev("message", "y", "")]),
            (
                b"id: 7\ndata: a\n\nid\ndata: b\n\n",
                vec![ev("message", "a", "7"), ev("message", "b", "")],
            ),
            (
                b"id: 1\nid: 2\x00\ndata: c\n\n",
                vec![ev("message", "c", "1")],
            ),
            (b"\xef\xbb\xbfdata: bom\n\n", vec![ev("message", "bom", "")]),
            (b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", vec![]),
            (b"\xef\xbbdata: x\n\n", vec![]),
            (
                b"data: caf\xc3\xa9 \xf0\x9f\x98\x80\n\n",
                vec![ev("message", "caf\u{e9} \u{1f600}", "")],
            ),
            (
                b"data: \xff\xe2\x82\n\n",
                vec![ev("message", "\u{fffd}\u{fffd}", "")],
            ),
            (
                b"data: \x0b\x0c\xe2\x80\xa8\n\n",
                vec![ev("message", "\x0b\x0c\u{2028}", "")],
            ),
            (b"DATA: x\n\ndata : y\n\n", vec![]),
            (b"data: unterminated", vec![]),
            (b"data: a\n", vec![]),
            (b"\n\n\r\n\r", vec![]),
        ];
        for (input, expected) in cases {
            for way in splits(input) {
                let mut dec = SseDecoder::new(0, 0);
                let got = feed_all(&mut dec, &way);
                assert_eq!(
                    got,
                    Ok(expected.clone()),
                    "input {input:?} split as {way:?}"
                );
            }
        }
    }

    #[test]
    fn retry() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"retry: 3000\n", Some(3000)),
            (b"retry: 10\nretry: x\n", Some(10)),
            (b"retry: -1\n", None),
            (b"retry: 1.5\n", None),
            (b"retry:\n", None),
            (b"retry: 18446744073709551615\n", Some(u64::MAX)),
            (b"retry: 18446744073709551616\n", None),
            (b"retry: 000000000000000000000000042\n", Some(42)),
        ];
        for (input, expected) in cases {
            for way in splits(input) {
                let mut dec = SseDecoder::new(0, 0);
                assert_eq!(feed_all(&mut dec, &way), Ok(vec![]));
                assert_eq!(dec.retry(), *expected, "input {input:?}");
            }
        }
    }

    #[test]
    fn crlf_split_across_chunks() {
        let mut dec = SseDecoder::new(0, 0);
        let got = feed_all(
            &mut dec,
            &[b"data: a\r", b"\n", b"\r", b"\ndata: b\r", b"", b"\n\r\n"],
        );
        assert_eq!(
            got,
            Ok(vec![ev("message", "a", ""), ev("message", "b", "")])
        );
    }

    #[test]
    fn limits() {
        let mut dec = SseDecoder::new(8, 0);
        assert_eq!(
            feed_all(&mut dec, &[b"data: 123456789"]),
            Err(SseError::LineTooLong(8))
        );
        let mut dec = SseDecoder::new(8, 0);
        assert_eq!(
            feed_all(&mut dec, &[b"data: 12\n\n"]),
            Ok(vec![ev("message", "12", "")])
        );
        let mut dec = SseDecoder::new(0, 12);
        assert_eq!(
            feed_all(&mut dec, &[b"data: 1\ndata: 2\n"]),
            Err(SseError::EventTooLarge(12))
        );
        let mut dec = SseDecoder::new(0, 14);
        assert_eq!(
            feed_all(&mut dec, &[b"data: 1\ndata: 2\n\ndata: 3\n\n"]),
            Ok(vec![ev("message", "1\n2", ""), ev("message", "3", "")])
        );
        assert_eq!(
            SseError::LineTooLong(5).to_string(),
            "SSE line longer than 5 bytes"
        );
        assert_eq!(
            SseError::EventTooLarge(5).to_string(),
            "SSE event larger than 5 bytes"
        );
    }
}
