//! Anthropic Messages SSE -> OpenAI Chat Completions SSE (native twin of `ferrule._pure.stream`).
//!
//! One `feed()` call takes a raw upstream network chunk and appends the bytes to send to the
//! client. The rules are in the Python twin's docstring, which is the source of truth; this file
//! follows it step by step, and the output is built from the same fixed templates.

use std::collections::HashMap;

use crate::payload::{self, Payload, Usage};
use crate::sse::SseDecoder;

/// What the stream came to (`outcome` in the twin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Streaming,
    Complete,
    UpstreamError,
    Truncated,
    ProtocolError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Streaming => "streaming",
            Self::Complete => "complete",
            Self::UpstreamError => "upstream_error",
            Self::Truncated => "truncated",
            Self::ProtocolError => "protocol_error",
        }
    }
}

/// OpenAI `finish_reason` for an Anthropic `stop_reason` (unknown or absent -> `stop`).
pub fn finish_reason_for(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn, unknown, absent
    }
}

/// The event types the translator reads; every other one (`ping` included) is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    MessageStart,
    ContentBlockStart,
    ContentBlockDelta,
    ContentBlockStop,
    MessageDelta,
    MessageStop,
    Error,
}

impl Kind {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "message_start" => Self::MessageStart,
            "content_block_start" => Self::ContentBlockStart,
            "content_block_delta" => Self::ContentBlockDelta,
            "content_block_stop" => Self::ContentBlockStop,
            "message_delta" => Self::MessageDelta,
            "message_stop" => Self::MessageStop,
            "error" => Self::Error,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::MessageStart => "message_start",
            Self::ContentBlockStart => "content_block_start",
            Self::ContentBlockDelta => "content_block_delta",
            Self::ContentBlockStop => "content_block_stop",
            Self::MessageDelta => "message_delta",
            Self::MessageStop => "message_stop",
            Self::Error => "error",
        }
    }
}

/// The events one chunk completed. When a limit breaks, the events before the breach are kept and
/// handled before the error (as in the twin): whether they share a chunk with it is the network's
/// choice, so dropping them would make the answer depend on how the bytes were split. Reused from
/// chunk to chunk.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    data: String,
    events: Vec<(Kind, usize, usize)>,
}

impl Pending {
    /// Decode one chunk into the events a kernel reads (the others are dropped unparsed).
    pub(crate) fn decode(
        &mut self,
        decoder: &mut SseDecoder,
        chunk: &[u8],
    ) -> Result<(), crate::sse::SseError> {
        self.data.clear();
        self.events.clear();
        decoder.feed(chunk, |event| {
            if let Some(kind) = Kind::from_name(event.event) {
                let start = self.data.len();
                self.data.push_str(event.data);
                self.events.push((kind, start, self.data.len()));
            }
        })
    }

    /// The decoded events, in order.
    pub(crate) fn events(&self) -> impl Iterator<Item = (Kind, &str)> + '_ {
        self.events
            .iter()
            .map(|&(kind, start, end)| (kind, self.data.get(start..end).unwrap_or_default()))
    }
}

/// Later reports overwrite earlier ones: Anthropic's counts are cumulative.
pub(crate) fn take_usage(counts: &mut [u64; 6], usage: &Usage) {
    let given = [
        usage.input_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
        usage.output_tokens,
    ];
    for (slot, count) in counts.iter_mut().zip(given) {
        if let Some(n) = count {
            *slot = n;
        }
    }
    if let Some(creation) = &usage.cache_creation {
        if let Some(n) = creation.ephemeral_5m_input_tokens {
            counts[4] = n;
        }
        if let Some(n) = creation.ephemeral_1h_input_tokens {
            counts[5] = n;
        }
    }
}

/// Stateful Anthropic -> OpenAI stream translator.
#[derive(Debug)]
pub struct StreamTranslator {
    decoder: SseDecoder,
    include_usage: bool,
    model_json: Vec<u8>,
    created: i64,
    /// Every chunk up to its `choices` value: `{"id":...,"object":...,"created":...,"model":...,"choices":`
    prefix: Vec<u8>,
    tool_index: u64,
    /// content-block index -> tool-call index, for the tool_use blocks of this message
    block_tool: HashMap<u64, u64>,
    /// response_format emulated with a forced tool: that tool's input is the answer's content
    json_tool: Option<String>,
    /// content-block indexes of the json_tool's tool_use blocks
    json_blocks: Vec<u64>,
    usage: [u64; 6],
    started: bool,
    done: bool,
    outcome: Outcome,
    error: Option<(String, String)>,
    message_id: Option<String>,
    stop_reason: Option<String>,
    pending: Pending,
}

impl StreamTranslator {
    pub fn new(
        model: &str,
        created: i64,
        include_usage: bool,
        max_event_bytes: usize,
        json_tool: Option<&str>,
    ) -> Self {
        let mut model_json = Vec::with_capacity(model.len() + 2);
        push_json_str(&mut model_json, model);
        Self {
            decoder: SseDecoder::new(max_event_bytes, max_event_bytes),
            include_usage,
            model_json,
            created,
            prefix: Vec::new(),
            tool_index: 0,
            block_tool: HashMap::new(),
            json_tool: json_tool.map(str::to_owned),
            json_blocks: Vec::new(),
            usage: [0; 6],
            started: false,
            done: false,
            outcome: Outcome::Streaming,
            error: None,
            message_id: None,
            stop_reason: None,
            pending: Pending::default(),
        }
    }

    /// `message_start` seen, so bytes went out.
    pub fn started(&self) -> bool {
        self.started
    }
    /// No more output will come.
    pub fn done(&self) -> bool {
        self.done
    }
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }
    /// `(type, message)` when the outcome is an error.
    pub fn error(&self) -> Option<(&str, &str)> {
        self.error.as_ref().map(|(t, m)| (t.as_str(), m.as_str()))
    }
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }
    pub fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }
    /// Input, cache-creation, cache-read, output, 5-minute and 1-hour cache-write tokens.
    pub fn usage(&self) -> [u64; 6] {
        self.usage
    }

    /// Translate one upstream chunk, appending the client bytes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        let decoded = pending.decode(&mut self.decoder, chunk);
        for (kind, data) in pending.events() {
            self.event(kind, data, out);
            if self.done {
                break;
            }
        }
        if let Err(err) = decoded {
            if !self.done {
                self.fail(out, Outcome::ProtocolError, "api_error", &err.to_string());
            }
        }
        self.pending = pending;
    }

    /// The upstream body ended: close the client stream (an error unless it completed).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.fail(
            out,
            Outcome::Truncated,
            "api_error",
            "upstream stream ended before message_stop",
        );
    }

    // -- events ----------------------------------------------------------------------------------

    fn event(&mut self, kind: Kind, data: &str, out: &mut Vec<u8>) {
        let obj = match payload::parse(data) {
            Ok(Some(obj)) => obj,
            Ok(None) => {
                let message = format!("upstream sent a non-object {}", kind.name());
                return self.fail(out, Outcome::ProtocolError, "api_error", &message);
            }
            Err(payload::Invalid) => {
                let message = format!("upstream sent invalid JSON in {}", kind.name());
                return self.fail(out, Outcome::ProtocolError, "api_error", &message);
            }
        };
        match kind {
            Kind::Error => {
                let (etype, message) = match &obj.error {
                    Some(err) => (err.kind.as_deref(), err.message.as_deref()),
                    None => (None, None),
                };
                let etype = etype.unwrap_or("api_error");
                let message = message.unwrap_or("upstream error");
                self.fail(out, Outcome::UpstreamError, etype, message);
            }
            Kind::MessageStart => self.message_start(obj, out),
            _ if !self.started => {
                let message = format!("upstream sent {} before message_start", kind.name());
                self.fail(out, Outcome::ProtocolError, "api_error", &message);
            }
            Kind::ContentBlockStart => self.content_block_start(obj, out),
            Kind::ContentBlockDelta => self.content_block_delta(obj, out),
            Kind::MessageDelta => {
                if let Some(reason) = obj.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(reason.into_owned());
                }
                if let Some(usage) = &obj.usage {
                    self.take_usage(usage);
                }
            }
            Kind::MessageStop => self.message_stop(out),
            Kind::ContentBlockStop => {} // nothing to send
        }
    }

    fn message_start(&mut self, obj: Payload<'_>, out: &mut Vec<u8>) {
        if self.started {
            return; // NOTE: a repeated message_start is ignored rather than restarting
        }
        let Some(msg) = obj.message else {
            let message = "message_start without a message";
            return self.fail(out, Outcome::ProtocolError, "api_error", message);
        };
        let id = msg.id.as_deref().unwrap_or_default();
        if let Some(usage) = &msg.usage {
            self.take_usage(usage);
        }
        let prefix = &mut self.prefix;
        prefix.clear();
        prefix.extend_from_slice(b"{\"id\":\"chatcmpl-");
        push_json_str_body(prefix, id);
        prefix.extend_from_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":");
        prefix.extend_from_slice(itoa::Buffer::new().format(self.created).as_bytes());
        prefix.extend_from_slice(b",\"model\":");
        prefix.extend_from_slice(&self.model_json);
        prefix.extend_from_slice(b",\"choices\":");
        self.message_id = Some(id.to_owned());
        self.started = true;
        self.chunk_start(out);
        out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}");
        chunk_end(out);
    }

    fn content_block_start(&mut self, obj: Payload<'_>, out: &mut Vec<u8>) {
        let (Some(block), Some(index)) = (obj.content_block, obj.index) else {
            return;
        };
        if block.kind.as_deref() != Some("tool_use") {
            return;
        }
        if self.json_tool.is_some() && block.name.as_deref() == self.json_tool.as_deref() {
            self.json_blocks.push(index);
            return;
        }
        let tool = self.tool_index;
        self.tool_index += 1;
        self.block_tool.insert(index, tool);
        self.chunk_start(out);
        out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
        out.extend_from_slice(itoa::Buffer::new().format(tool).as_bytes());
        out.extend_from_slice(b",\"id\":");
        push_json_str(out, block.id.as_deref().unwrap_or_default());
        out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
        push_json_str(out, block.name.as_deref().unwrap_or_default());
        out.extend_from_slice(b",\"arguments\":\"\"}}]}");
        chunk_end(out);
    }

    fn content_block_delta(&mut self, obj: Payload<'_>, out: &mut Vec<u8>) {
        let Some(delta) = obj.delta else {
            return;
        };
        match delta.kind.as_deref() {
            Some("text_delta") => {
                if let Some(text) = delta.text.as_deref().filter(|t| !t.is_empty()) {
                    self.chunk_start(out);
                    out.extend_from_slice(b"{\"content\":");
                    push_json_str(out, text);
                    out.push(b'}');
                    chunk_end(out);
                }
            }
            Some("thinking_delta") => {
                if let Some(text) = delta.thinking.as_deref().filter(|t| !t.is_empty()) {
                    self.chunk_start(out);
                    out.extend_from_slice(b"{\"reasoning_content\":");
                    push_json_str(out, text);
                    out.push(b'}');
                    chunk_end(out);
                }
            }
            Some("input_json_delta") => {
                let part = delta.partial_json.as_deref().filter(|p| !p.is_empty());
                let (Some(index), Some(part)) = (obj.index, part) else {
                    return;
                };
                if self.json_blocks.contains(&index) {
                    self.chunk_start(out);
                    out.extend_from_slice(b"{\"content\":");
                    push_json_str(out, part);
                    out.push(b'}');
                    chunk_end(out);
                    return;
                }
                if let Some(tool) = self.block_tool.get(&index).copied() {
                    self.chunk_start(out);
                    out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                    out.extend_from_slice(itoa::Buffer::new().format(tool).as_bytes());
                    out.extend_from_slice(b",\"function\":{\"arguments\":");
                    push_json_str(out, part);
                    out.extend_from_slice(b"}}]}");
                    chunk_end(out);
                }
            }
            // signature_delta, citations_delta and future delta types carry nothing for OpenAI
            _ => {}
        }
    }

    fn message_stop(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"[{\"index\":0,\"delta\":{},\"finish_reason\":\"");
        out.extend_from_slice(self.finish_reason().as_bytes());
        out.extend_from_slice(b"\"}]}\n\n");
        if self.include_usage {
            // NOTE: u128 so the sums print as Python's unbounded ints would.
            let [input, creation, read, output, _, _] = self.usage.map(u128::from);
            let prompt = input + creation + read;
            let mut num = itoa::Buffer::new();
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&self.prefix);
            out.extend_from_slice(b"[],\"usage\":{\"prompt_tokens\":");
            out.extend_from_slice(num.format(prompt).as_bytes());
            out.extend_from_slice(b",\"completion_tokens\":");
            out.extend_from_slice(num.format(output).as_bytes());
            out.extend_from_slice(b",\"total_tokens\":");
            out.extend_from_slice(num.format(prompt + output).as_bytes());
            out.extend_from_slice(b",\"prompt_tokens_details\":{\"cached_tokens\":");
            out.extend_from_slice(num.format(read).as_bytes());
            out.extend_from_slice(b"},\"cache_creation_input_tokens\":");
            out.extend_from_slice(num.format(creation).as_bytes());
            out.extend_from_slice(b",\"cache_read_input_tokens\":");
            out.extend_from_slice(num.format(read).as_bytes());
            out.extend_from_slice(b"}}\n\n");
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
        self.outcome = Outcome::Complete;
    }

    fn finish_reason(&self) -> &'static str {
        if self.stop_reason.as_deref() == Some("tool_use")
            && !self.json_blocks.is_empty()
            && self.tool_index == 0
        {
            return "stop"; // JSON mode: the forced tool was the answer, not a tool call
        }
        finish_reason_for(self.stop_reason.as_deref())
    }

    fn take_usage(&mut self, usage: &Usage) {
        take_usage(&mut self.usage, usage);
    }

    /// `data: <prefix>[{"index":0,"delta":` — the delta and `chunk_end` follow.
    fn chunk_start(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"[{\"index\":0,\"delta\":");
    }

    fn fail(&mut self, out: &mut Vec<u8>, outcome: Outcome, etype: &str, message: &str) {
        out.extend_from_slice(b"data: {\"error\":{\"message\":");
        push_json_str(out, message);
        out.extend_from_slice(b",\"type\":");
        push_json_str(out, etype);
        out.extend_from_slice(b",\"param\":null,\"code\":null}}\n\n");
        self.done = true;
        self.outcome = outcome;
        self.error = Some((etype.to_owned(), message.to_owned()));
    }
}

fn chunk_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"finish_reason\":null}]}\n\n");
}

/// `s` as a JSON string, escaped exactly as `orjson.dumps(s)` escapes it: `"` and `\`, the
/// control characters (short forms where JSON has them, else `\u00xx`); nothing else (not `/`,
/// DEL, U+2028 or any non-ASCII character).
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_json_str_body(out, s);
    out.push(b'"');
}

/// What each byte becomes: 0 = itself, `u` = `\u00xx`, else `\` + that byte.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Whether any of the 8 bytes in `w` must be escaped (a control character, `"` or `\`): the
/// classic word-at-a-time tests (`hasless`, `haszero`), exact for "is there one".
#[inline]
fn any_escape(w: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(LO * 0x20) & !w & HI;
    let q = w ^ (LO * b'"' as u64);
    let quote = q.wrapping_sub(LO) & !q & HI;
    let b = w ^ (LO * b'\\' as u64);
    let backslash = b.wrapping_sub(LO) & !b & HI;
    (control | quote | backslash) != 0
}

pub(crate) fn push_json_str_body(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // most text needs no escape: skip it 8 bytes at a time
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !any_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let escape = ESCAPE[b as usize];
        if escape != 0 {
            out.extend_from_slice(&bytes[start..i]);
            if escape == b'u' {
                let hex = [HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]];
                out.extend_from_slice(b"\\u00");
                out.extend_from_slice(&hex);
            } else {
                out.extend_from_slice(&[b'\\', escape]);
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: &str) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn text_stream() -> String {
        [
            event("message_start", r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","usage":{"input_tokens":10,"output_tokens":1}}}"#),
            event("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            event("ping", r#"{"type": "ping"}"#),
            event("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \"there\"\n"}}"#),
            event("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            event("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#),
            event("message_stop", r#"{"type":"message_stop"}"#),
        ]
        .concat()
    }

    fn translate(chunks: &[&[u8]], include_usage: bool) -> (Vec<u8>, StreamTranslator) {
        let mut t = StreamTranslator::new("gpt-x", 1700000000, include_usage, 0, None);
        let mut out = Vec::new();
        for chunk in chunks {
            t.feed(chunk, &mut out);
        }
        t.finish(&mut out);
        (out, t)
    }

    /// The same input whole, split at every byte, one byte at a time with empty chunks between.
    fn assert_split_invariant(input: &[u8], include_usage: bool) -> Vec<u8> {
        let (whole, _) = translate(&[input], include_usage);
        for i in 0..=input.len() {
            let (split, _) = translate(&[&input[..i], &input[i..]], include_usage);
            assert_eq!(split, whole, "split at {i}");
        }
        let mut bytes: Vec<&[u8]> = vec![b""];
        for c in input.chunks(1) {
            bytes.push(c);
            bytes.push(b"");
        }
        let (one_by_one, _) = translate(&bytes, include_usage);
        assert_eq!(one_by_one, whole);
        whole
    }

    const PREFIX: &str = r#"data: {"id":"chatcmpl-msg_1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-x","choices":"#;

    #[test]
    fn text_answer() {
        let out = assert_split_invariant(text_stream().as_bytes(), true);
        let expected = [
            PREFIX,
            r#"[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            "\n\n",
            PREFIX,
            r#"[{"index":0,"delta":{"content":"Hi \"there\"\n"},"finish_reason":null}]}"#,
            "\n\n",
            PREFIX,
            r#"[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            "\n\n",
            PREFIX,
            r#"[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0},"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}"#,
            "\n\ndata: [DONE]\n\n",
        ]
        .concat();
        assert_eq!(String::from_utf8_lossy(&out), expected);
        let (_, t) = translate(&[text_stream().as_bytes()], true);
        assert_eq!(t.outcome(), Outcome::Complete);
        assert_eq!(t.message_id(), Some("msg_1"));
        assert_eq!(t.stop_reason(), Some("end_turn"));
        assert_eq!(t.usage(), [10, 0, 0, 5, 0, 0]);
        assert!(t.started() && t.done() && t.error().is_none());
    }

    #[test]
    fn tool_calls_count_tool_blocks_only() {
        let input = [
            event("message_start", r#"{"message":{"id":"msg_1"}}"#),
            event(
                "content_block_start",
                r#"{"index":0,"content_block":{"type":"text"}}"#,
            ),
            event(
                "content_block_delta",
                r#"{"index":0,"delta":{"type":"text_delta","text":"ok"}}"#,
            ),
            event(
                "content_block_start",
                r#"{"index":1,"content_block":{"type":"tool_use","id":"t1","name":"f"}}"#,
            ),
            event(
                "content_block_delta",
                r#"{"index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            ),
            event(
                "content_block_delta",
                r#"{"index":1,"delta":{"type":"input_json_delta","partial_json":"1}"}}"#,
            ),
            event(
                "content_block_start",
                r#"{"index":2,"content_block":{"type":"tool_use","id":"t2","name":"g"}}"#,
            ),
            event("message_delta", r#"{"delta":{"stop_reason":"tool_use"}}"#),
            event("message_stop", "{}"),
        ]
        .concat();
        let out = assert_split_invariant(input.as_bytes(), false);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(r#"{"tool_calls":[{"index":0,"id":"t1","type":"function","function":{"name":"f","arguments":""}}]}"#));
        assert!(text.contains(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}"#));
        assert!(text.contains(r#"{"tool_calls":[{"index":1,"id":"t2","type":"function","function":{"name":"g","arguments":""}}]}"#));
        assert!(text.contains(r#""finish_reason":"tool_calls""#));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn errors() {
        let cases: Vec<(String, Outcome, &str, &str)> = vec![
            (
                event(
                    "error",
                    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                ),
                Outcome::UpstreamError,
                "overloaded_error",
                "Overloaded",
            ),
            (
                event("error", "{}"),
                Outcome::UpstreamError,
                "api_error",
                "upstream error",
            ),
            (
                event("message_start", "{\"message\":"),
                Outcome::ProtocolError,
                "api_error",
                "upstream sent invalid JSON in message_start",
            ),
            (
                event("message_stop", "[]"),
                Outcome::ProtocolError,
                "api_error",
                "upstream sent a non-object message_stop",
            ),
            (
                event("content_block_stop", "{}"),
                Outcome::ProtocolError,
                "api_error",
                "upstream sent content_block_stop before message_start",
            ),
            (
                event("message_start", r#"{"message":1}"#),
                Outcome::ProtocolError,
                "api_error",
                "message_start without a message",
            ),
            (
                event("message_start", r#"{"message":{}}"#),
                Outcome::Truncated,
                "api_error",
                "upstream stream ended before message_stop",
            ),
        ];
        for (input, outcome, etype, message) in cases {
            let out = assert_split_invariant(input.as_bytes(), false);
            let (_, t) = translate(&[input.as_bytes()], false);
            assert_eq!(t.outcome(), outcome, "{input}");
            assert_eq!(t.error(), Some((etype, message)));
            let mut tail = b"data: {\"error\":{\"message\":".to_vec();
            push_json_str(&mut tail, message);
            tail.extend_from_slice(b",\"type\":");
            push_json_str(&mut tail, etype);
            tail.extend_from_slice(b",\"param\":null,\"code\":null}}\n\n");
            assert!(out.ends_with(&tail));
            assert!(!out.windows(6).any(|w| w == b"[DONE]"));
        }
    }

    #[test]
    fn limit_keeps_the_events_before_it() {
        // A complete message_start, then a line over the limit: the same answer whether the
        // network put them in one chunk or two (the role chunk, then the error).
        let start = event("message_start", r#"{"message":{"id":"a"}}"#);
        let long = "x".repeat(41);
        let mut outs = Vec::new();
        for chunks in [
            vec![start.clone() + &long],
            vec![start.clone(), long.clone()],
        ] {
            let mut t = StreamTranslator::new("m", 0, false, 40, None);
            let mut out = Vec::new();
            for chunk in &chunks {
                t.feed(chunk.as_bytes(), &mut out);
            }
            assert!(t.started());
            let expected = Some(("api_error", "SSE line longer than 40 bytes"));
            assert_eq!(t.error(), expected);
            let before = out.len();
            t.feed(b"data: x\n\n", &mut out);
            t.finish(&mut out);
            assert_eq!(out.len(), before);
            outs.push(out);
        }
        assert_eq!(outs[0], outs[1]);
        assert!(
            outs[0].starts_with(b"data: {\"id\":\"chatcmpl-a\""),
            "{:?}",
            outs[0]
        );
    }

    #[test]
    fn finish_reasons() {
        for (reason, finish) in [
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("pause_turn"), "stop"),
            (Some("max_tokens"), "length"),
            (Some("model_context_window_exceeded"), "length"),
            (Some("tool_use"), "tool_calls"),
            (Some("refusal"), "content_filter"),
            (Some("new_reason"), "stop"),
            (None, "stop"),
        ] {
            assert_eq!(finish_reason_for(reason), finish);
        }
    }

    #[test]
    fn escaping_matches_orjson() {
        let mut out = Vec::new();
        push_json_str(
            &mut out,
            "\u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}/\"\\\u{2028}\u{2029}\u{e9}\u{1f600}\u{feff}",
        );
        let expected = b"\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f\x7f/\\\"\\\\\xe2\x80\xa8\xe2\x80\xa9\xc3\xa9\xf0\x9f\x98\x80\xef\xbb\xbf\"";
        assert_eq!(out, expected.to_vec());
    }
}
