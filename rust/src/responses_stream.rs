//! Anthropic Messages SSE -> OpenAI Responses SSE (native twin of
//! `ferrule._pure.responses_stream`).
//!
//! The rules are in the Python twin's docstring, which is the source of truth; this file follows
//! it step by step and writes every event from fixed templates, in the key order of the twin's
//! dicts, so the two agree byte for byte. What only the caller can do is asked of it: sealing
//! (the `Sealer` passed to each call) and the request's echo fields (given as JSON values).
//!
//! NOTE: the final `response.completed` / `response.incomplete` object lists the items exactly as
//! their `response.output_item.done` events gave them. The twin rebuilds them with
//! `to_responses` from the accumulated message; the two agree by construction (its docstring,
//! and the differential tests check it on random streams).

use std::collections::{HashMap, HashSet};

use crate::payload::{self, Block, Delta, Json, Payload};
use crate::sse::SseDecoder;
use crate::stream::{push_json_str, take_usage, Kind, Outcome, Pending};

/// Seals what a client must hand back unchanged (`Seals.seal` in the twin).
pub trait Sealer {
    fn seal(&mut self, plaintext: &[u8], context: &[u8]) -> String;
}

/// What an Anthropic tool name stands for on the Responses side (`ToolRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRef {
    /// A `custom` (freeform) tool rather than a `function`.
    pub custom: bool,
    pub name: String,
    pub namespace: Option<String>,
}

/// What the encoder needs of the translated request (`ResponsesTranslated`) and the route.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub response_id: String,
    pub created_at: i64,
    /// The model name the client asked for (echoed back).
    pub model: String,
    /// `reasoning.summary` asked: thinking text goes into the summary.
    pub summary: bool,
    /// A compaction request: the answer is one compaction item.
    pub compact: bool,
    /// `text.format` emulated with this forced tool.
    pub json_tool: Option<String>,
    /// Anthropic tool name -> the function / custom tool it stands for.
    pub tools: HashMap<String, ToolRef>,
    /// The request fields a response object echoes, in order: (key, JSON value).
    pub echo: Vec<(String, Vec<u8>)>,
    /// The associated data reasoning items and the compaction item are sealed with.
    pub reasoning_context: Vec<u8>,
    pub compaction_context: Vec<u8>,
    pub max_event_bytes: usize,
}

/// The keys of a response object before its echo fields (`response_object`).
const RESPONSE_KEYS: [&str; 10] = [
    "id",
    "object",
    "created_at",
    "status",
    "background",
    "error",
    "incomplete_details",
    "model",
    "output",
    "usage",
];

/// The open message or reasoning item.
#[derive(Debug)]
struct OpenItem {
    reasoning: bool,
    id: String,
    index: u64,
    /// message: each part's JSON (`output_text`), filled in as its block stops
    parts: Vec<Vec<u8>>,
    /// reasoning: the finished thinking blocks
    thoughts: Vec<Thought>,
    /// reasoning: summary parts opened so far
    summaries: u64,
}

#[derive(Debug)]
enum Thought {
    Thinking { text: String, signature: String },
    Redacted(Json),
}

/// An output item's id and `output_index`.
#[derive(Debug, Clone)]
struct Where {
    id: String,
    index: u64,
}

/// A content block while it streams.
#[derive(Debug)]
enum State {
    Thinking {
        at: Where,
        text: String,
        signature: String,
        summary_index: Option<u64>,
    },
    Redacted {
        data: Json,
    },
    /// A text block, or the JSON-mode tool's input streamed as text.
    Part {
        at: Where,
        part: usize,
        text: String,
        json_mode: bool,
        citations: Vec<(String, String)>,
    },
    Tool {
        at: Where,
        json: String,
        custom: Option<StringField>,
        call_id: String,
        wire: String,
    },
    WebSearch {
        at: Where,
        json: String,
    },
    /// A block that makes no item (web_search_tool_result, unknown types).
    Other,
    /// A compaction request's text block, gathered silently.
    Compact {
        text: String,
    },
}

/// Stateful Anthropic -> Responses stream encoder.
#[derive(Debug)]
pub struct ResponsesStreamEncoder {
    cfg: Config,
    decoder: SseDecoder,
    pending: Pending,
    /// Echo values that replace a response object's own key, and the rest as `,"k":v...`.
    echo_overrides: Vec<(String, Vec<u8>)>,
    echo_tail: Vec<u8>,
    /// (plaintext, compaction?) -> token: each distinct plaintext is sealed once (`_SealOnce`)
    seals: HashMap<(Vec<u8>, bool), String>,
    seq: u64,
    /// output items opened so far (the next output_index)
    items: u64,
    done_items: Vec<Vec<u8>>,
    item: Option<OpenItem>,
    /// the one block streaming (a start ends the last one)
    open: Option<(u64, State)>,
    /// the blocks finished (or started and done), so a repeated start is ignored
    finished: HashSet<u64>,
    /// compaction: the text blocks, in order
    compact_texts: Vec<String>,
    usage: [u64; 6],
    started: bool,
    done: bool,
    outcome: Outcome,
    error: Option<(String, String)>,
    message_id: Option<String>,
    stop_reason: Option<String>,
}

impl ResponsesStreamEncoder {
    pub fn new(cfg: Config) -> Self {
        let mut echo_overrides = Vec::new();
        let mut echo_tail = Vec::new();
        for (key, value) in &cfg.echo {
            if RESPONSE_KEYS.contains(&key.as_str()) {
                echo_overrides.push((key.clone(), value.clone()));
            } else {
                echo_tail.push(b',');
                push_json_str(&mut echo_tail, key);
                echo_tail.push(b':');
                echo_tail.extend_from_slice(value);
            }
        }
        Self {
            decoder: SseDecoder::new(cfg.max_event_bytes, cfg.max_event_bytes),
            cfg,
            pending: Pending::default(),
            echo_overrides,
            echo_tail,
            seals: HashMap::new(),
            seq: 0,
            items: 0,
            done_items: Vec::new(),
            item: None,
            open: None,
            finished: HashSet::new(),
            compact_texts: Vec::new(),
            usage: [0; 6],
            started: false,
            done: false,
            outcome: Outcome::Streaming,
            error: None,
            message_id: None,
            stop_reason: None,
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

    /// Encode one upstream chunk, appending the client bytes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>, sealer: &mut dyn Sealer) {
        if self.done {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        let decoded = pending.decode(&mut self.decoder, chunk);
        for (kind, data) in pending.events() {
            self.event(kind, data, out, sealer);
            if self.done {
                break;
            }
        }
        if let Err(err) = decoded {
            if !self.done {
                self.fail_with(out, Outcome::ProtocolError, "api_error", &err.to_string());
            }
        }
        self.pending = pending;
    }

    /// The upstream body ended: close the client stream (failed unless it completed).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let message = "upstream stream ended before message_stop";
        self.fail_with(out, Outcome::Truncated, "api_error", message);
    }

    /// End the stream with an error from outside the stream (the relay's deadline, a broken
    /// upstream connection): the terminal `response.failed` (or `error` before the start),
    /// outcome `upstream_error`. Nothing once done.
    pub fn fail(&mut self, out: &mut Vec<u8>, message: &str, etype: &str) {
        if self.done {
            return;
        }
        self.fail_with(out, Outcome::UpstreamError, etype, message);
    }

    // -- output ------------------------------------------------------------------------------

    /// `event: <kind>\ndata: {"type":<kind>,"sequence_number":N` — fields and `end` follow.
    fn head(&mut self, out: &mut Vec<u8>, kind: &str) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"sequence_number\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.seq).as_bytes());
        self.seq += 1;
    }

    /// `head` plus `"item_id":..,"output_index":..`.
    fn head_at(&mut self, out: &mut Vec<u8>, kind: &str, at: &Where) {
        self.head(out, kind);
        push_where(out, at);
    }

    fn seal(&mut self, sealer: &mut dyn Sealer, plaintext: Vec<u8>, compaction: bool) -> String {
        let key = (plaintext, compaction);
        if let Some(token) = self.seals.get(&key) {
            return token.clone();
        }
        let context = if compaction {
            &self.cfg.compaction_context
        } else {
            &self.cfg.reasoning_context
        };
        let token = sealer.seal(&key.0, context);
        self.seals.insert(key, token.clone());
        token
    }

    /// A response object (`response_object`): the output is the items done so far when
    /// `with_output`, else `[]`.
    fn push_response(
        &self,
        out: &mut Vec<u8>,
        status: &str,
        error: Option<(&str, &str)>,
        incomplete: Option<&str>,
        with_output: bool,
        with_usage: bool,
    ) {
        out.push(b'{');
        for (i, key) in RESPONSE_KEYS.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            if let Some((_, value)) = self.echo_overrides.iter().find(|(k, _)| k == key) {
                out.extend_from_slice(value);
                continue;
            }
            match *key {
                "id" => push_json_str(out, &self.cfg.response_id),
                "object" => out.extend_from_slice(b"\"response\""),
                "created_at" => out
                    .extend_from_slice(itoa::Buffer::new().format(self.cfg.created_at).as_bytes()),
                "status" => push_json_str(out, status),
                "background" => out.extend_from_slice(b"false"),
                "error" => match error {
                    Some((code, message)) => {
                        out.extend_from_slice(b"{\"code\":");
                        push_json_str(out, code);
                        out.extend_from_slice(b",\"message\":");
                        push_json_str(out, message);
                        out.push(b'}');
                    }
                    None => out.extend_from_slice(b"null"),
                },
                "incomplete_details" => match incomplete {
                    Some(reason) => {
                        out.extend_from_slice(b"{\"reason\":");
                        push_json_str(out, reason);
                        out.push(b'}');
                    }
                    None => out.extend_from_slice(b"null"),
                },
                "model" => push_json_str(out, &self.cfg.model),
                "output" => {
                    out.push(b'[');
                    if with_output {
                        for (i, item) in self.done_items.iter().enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            out.extend_from_slice(item);
                        }
                    }
                    out.push(b']');
                }
                _ => {
                    if with_usage {
                        self.push_usage(out);
                    } else {
                        out.extend_from_slice(b"null");
                    }
                }
            }
        }
        out.extend_from_slice(&self.echo_tail);
        out.push(b'}');
    }

    /// `responses_usage` of the accumulated message's four counts.
    fn push_usage(&self, out: &mut Vec<u8>) {
        // NOTE: the sums saturate at u64::MAX, as `responses_usage` caps them.
        let [uncached, written, read, output, _, _] = self.usage;
        let total_in = uncached.saturating_add(written).saturating_add(read);
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b"{\"input_tokens\":");
        out.extend_from_slice(num.format(total_in).as_bytes());
        out.extend_from_slice(b",\"input_tokens_details\":{\"cached_tokens\":");
        out.extend_from_slice(num.format(read).as_bytes());
        out.extend_from_slice(b",\"cache_write_tokens\":");
        out.extend_from_slice(num.format(written).as_bytes());
        out.extend_from_slice(b"},\"output_tokens\":");
        out.extend_from_slice(num.format(output).as_bytes());
        out.extend_from_slice(
            b",\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":",
        );
        out.extend_from_slice(num.format(total_in.saturating_add(output)).as_bytes());
        out.push(b'}');
    }

    /// `response.output_item.added` for a new item; returns its output_index.
    fn open_item(&mut self, out: &mut Vec<u8>, item: &[u8]) -> u64 {
        let index = self.items;
        self.items += 1;
        self.head(out, "response.output_item.added");
        push_item_event(out, index, item);
        index
    }

    fn item_done(&mut self, out: &mut Vec<u8>, index: u64, item: Vec<u8>) {
        self.head(out, "response.output_item.done");
        push_item_event(out, index, &item);
        self.done_items.push(item);
    }

    /// Finish the open message or reasoning item.
    fn close(&mut self, out: &mut Vec<u8>, sealer: &mut dyn Sealer, last: bool) {
        let Some(item) = self.item.take() else {
            return;
        };
        let mut done = Vec::new();
        done.extend_from_slice(b"{\"id\":");
        push_json_str(&mut done, &item.id);
        if item.reasoning {
            let mut plaintext = vec![b'['];
            for (i, thought) in item.thoughts.iter().enumerate() {
                if i > 0 {
                    plaintext.push(b',');
                }
                match thought {
                    Thought::Thinking { text, signature } => {
                        plaintext.extend_from_slice(b"{\"type\":\"thinking\",\"thinking\":");
                        push_json_str(&mut plaintext, text);
                        plaintext.extend_from_slice(b",\"signature\":");
                        push_json_str(&mut plaintext, signature);
                        plaintext.push(b'}');
                    }
                    Thought::Redacted(data) => {
                        plaintext.extend_from_slice(b"{\"type\":\"redacted_thinking\",\"data\":");
                        data.write(&mut plaintext);
                        plaintext.push(b'}');
                    }
                }
            }
            plaintext.push(b']');
            done.extend_from_slice(b",\"type\":\"reasoning\",\"summary\":[");
            if self.cfg.summary {
                let mut first = true;
                for thought in &item.thoughts {
                    if let Thought::Thinking { text, .. } = thought {
                        if text.is_empty() {
                            continue;
                        }
                        if !first {
                            done.push(b',');
                        }
                        first = false;
                        done.extend_from_slice(b"{\"type\":\"summary_text\",\"text\":");
                        push_json_str(&mut done, text);
                        done.push(b'}');
                    }
                }
            }
            done.extend_from_slice(b"],\"encrypted_content\":");
            let token = self.seal(sealer, plaintext, false);
            push_json_str(&mut done, &token);
            done.push(b'}');
        } else {
            let incomplete = last && incomplete_reason(self.stop_reason.as_deref()).is_some();
            done.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"status\":");
            done.extend_from_slice(if incomplete {
                b"\"incomplete\""
            } else {
                b"\"completed\""
            });
            done.extend_from_slice(b",\"content\":[");
            for (i, part) in item.parts.iter().enumerate() {
                if i > 0 {
                    done.push(b',');
                }
                done.extend_from_slice(part);
            }
            done.extend_from_slice(b"]}");
        }
        self.item_done(out, item.index, done);
    }

    /// The open message item (opened when the open item is not a message).
    fn message_item(&mut self, out: &mut Vec<u8>, sealer: &mut dyn Sealer) -> Where {
        if let Some(item) = self.item.as_ref().filter(|i| !i.reasoning) {
            return Where {
                id: item.id.clone(),
                index: item.index,
            };
        }
        self.close(out, sealer, false);
        let id = item_id(&self.cfg.response_id, "msg", self.items);
        let mut added = b"{\"id\":".to_vec();
        push_json_str(&mut added, &id);
        added.extend_from_slice(
            b",\"type\":\"message\",\"role\":\"assistant\",\"status\":\"in_progress\",\"content\":[]}",
        );
        let index = self.open_item(out, &added);
        self.item = Some(OpenItem {
            reasoning: false,
            id: id.clone(),
            index,
            parts: Vec::new(),
            thoughts: Vec::new(),
            summaries: 0,
        });
        Where { id, index }
    }

    // -- events ------------------------------------------------------------------------------

    fn event(&mut self, kind: Kind, data: &str, out: &mut Vec<u8>, sealer: &mut dyn Sealer) {
        let obj = match payload::parse(data) {
            Ok(Some(obj)) => obj,
            Ok(None) => {
                let message = format!("upstream sent a non-object {}", kind.name());
                return self.fail_with(out, Outcome::ProtocolError, "api_error", &message);
            }
            Err(payload::Invalid) => {
                let message = format!("upstream sent invalid JSON in {}", kind.name());
                return self.fail_with(out, Outcome::ProtocolError, "api_error", &message);
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
                self.fail_with(out, Outcome::UpstreamError, etype, message);
            }
            Kind::MessageStart => self.message_start(obj, out),
            _ if !self.started => {
                let message = format!("upstream sent {} before message_start", kind.name());
                self.fail_with(out, Outcome::ProtocolError, "api_error", &message);
            }
            Kind::ContentBlockStart | Kind::ContentBlockDelta | Kind::ContentBlockStop
                if self.cfg.compact =>
            {
                self.compact_block(kind, obj, out);
            }
            Kind::ContentBlockStart => {
                let (Some(index), Some(block)) = (obj.index, obj.content_block) else {
                    return;
                };
                if self.is_known(index) {
                    return; // NOTE: a block started twice keeps its first start
                }
                self.stop_open(out); // blocks come one after the other
                self.block_start(index, block, out, sealer);
            }
            Kind::ContentBlockDelta => {
                let (Some(index), Some(delta)) = (obj.index, obj.delta) else {
                    return;
                };
                if let Some((open, mut state)) = self.open.take() {
                    if open == index {
                        self.block_delta(&mut state, delta, out);
                    }
                    self.open = Some((open, state));
                }
            }
            Kind::ContentBlockStop => {
                let Some(index) = obj.index else {
                    return;
                };
                if self.open.as_ref().is_some_and(|(open, _)| *open == index) {
                    self.stop_open(out);
                }
            }
            Kind::MessageDelta => {
                if let Some(reason) = obj.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(reason.into_owned());
                }
                if let Some(usage) = &obj.usage {
                    take_usage(&mut self.usage, usage);
                }
            }
            Kind::MessageStop => self.message_stop(out, sealer),
        }
    }

    fn is_known(&self, index: u64) -> bool {
        self.finished.contains(&index) || self.open.as_ref().is_some_and(|(i, _)| *i == index)
    }

    fn message_start(&mut self, obj: Payload<'_>, out: &mut Vec<u8>) {
        if self.started {
            return; // NOTE: a repeated message_start is ignored, as in StreamTranslator
        }
        let Some(msg) = obj.message else {
            let message = "message_start without a message";
            return self.fail_with(out, Outcome::ProtocolError, "api_error", message);
        };
        self.message_id = Some(msg.id.as_deref().unwrap_or_default().to_owned());
        if let Some(usage) = &msg.usage {
            take_usage(&mut self.usage, usage);
        }
        self.started = true;
        for kind in ["response.created", "response.in_progress"] {
            self.head(out, kind);
            out.extend_from_slice(b",\"response\":");
            self.push_response(out, "in_progress", None, None, false, false);
            out.extend_from_slice(b"}\n\n");
        }
    }

    fn message_stop(&mut self, out: &mut Vec<u8>, sealer: &mut dyn Sealer) {
        self.stop_open(out);
        self.close(out, sealer, true);
        if self.cfg.compact {
            let mut plaintext = b"{\"summary\":".to_vec();
            push_json_str(&mut plaintext, &self.compact_texts.concat());
            plaintext.push(b'}');
            let token = self.seal(sealer, plaintext, true);
            let mut item = b"{\"id\":".to_vec();
            push_json_str(&mut item, &item_id(&self.cfg.response_id, "cmp", 0));
            item.extend_from_slice(b",\"type\":\"compaction\",\"encrypted_content\":");
            push_json_str(&mut item, &token);
            item.push(b'}');
            let index = self.open_item(out, &item);
            self.item_done(out, index, item);
        }
        let incomplete = incomplete_reason(self.stop_reason.as_deref());
        let (kind, status) = match incomplete {
            Some(_) => ("response.incomplete", "incomplete"),
            None => ("response.completed", "completed"),
        };
        self.head(out, kind);
        out.extend_from_slice(b",\"response\":");
        self.push_response(out, status, None, incomplete, true, true);
        out.extend_from_slice(b"}\n\n");
        self.done = true;
        self.outcome = Outcome::Complete;
    }

    /// End the block upstream did not stop, as if its content_block_stop had come.
    fn stop_open(&mut self, out: &mut Vec<u8>) {
        if let Some((index, state)) = self.open.take() {
            self.finished.insert(index);
            self.block_stop(state, out);
        }
    }

    /// A compaction request: the summary is gathered silently and sent as one item.
    fn compact_block(&mut self, kind: Kind, obj: Payload<'_>, out: &mut Vec<u8>) {
        let Some(index) = obj.index else {
            return;
        };
        match kind {
            Kind::ContentBlockStart => {
                let is_text = obj
                    .content_block
                    .is_some_and(|b| b.kind.as_deref() == Some("text"));
                if is_text && !self.is_known(index) {
                    self.stop_open(out);
                    let state = State::Compact {
                        text: String::new(),
                    };
                    self.open = Some((index, state));
                }
            }
            Kind::ContentBlockDelta => {
                if let (Some((open, State::Compact { text })), Some(delta)) =
                    (self.open.as_mut(), obj.delta)
                {
                    if *open == index && delta.kind.as_deref() == Some("text_delta") {
                        if let Some(piece) = delta.text {
                            text.push_str(&piece);
                        }
                    }
                }
            }
            _ => {
                if self.open.as_ref().is_some_and(|(open, _)| *open == index) {
                    self.stop_open(out);
                }
            }
        }
    }

    fn block_start(
        &mut self,
        index: u64,
        block: Block<'_>,
        out: &mut Vec<u8>,
        sealer: &mut dyn Sealer,
    ) {
        let kind = block.kind.as_deref();
        let name = block.name.as_deref();
        let json_mode = kind == Some("tool_use")
            && self.cfg.json_tool.is_some()
            && name == self.cfg.json_tool.as_deref();
        let state = match kind {
            Some("thinking" | "redacted_thinking") => {
                if !self.item.as_ref().is_some_and(|i| i.reasoning) {
                    self.close(out, sealer, false);
                    let id = item_id(&self.cfg.response_id, "rs", self.items);
                    let mut added = b"{\"id\":".to_vec();
                    push_json_str(&mut added, &id);
                    added.extend_from_slice(b",\"type\":\"reasoning\",\"summary\":[]}");
                    let index = self.open_item(out, &added);
                    self.item = Some(OpenItem {
                        reasoning: true,
                        id,
                        index,
                        parts: Vec::new(),
                        thoughts: Vec::new(),
                        summaries: 0,
                    });
                }
                if kind == Some("thinking") {
                    let at = self.open_where();
                    State::Thinking {
                        at,
                        text: String::new(),
                        signature: String::new(),
                        summary_index: None,
                    }
                } else {
                    State::Redacted {
                        data: block.data.unwrap_or_else(|| Json::Str(String::new())),
                    }
                }
            }
            Some("text") | Some("tool_use") if kind == Some("text") || json_mode => {
                let at = self.message_item(out, sealer);
                let part = match self.item.as_mut() {
                    Some(item) => {
                        item.parts.push(Vec::new());
                        item.parts.len() - 1
                    }
                    None => 0, // not reached: message_item leaves a message open
                };
                self.head_at(out, "response.content_part.added", &at);
                out.extend_from_slice(b",\"content_index\":");
                out.extend_from_slice(itoa::Buffer::new().format(part).as_bytes());
                out.extend_from_slice(b",\"part\":");
                push_text_part(out, "", &[]);
                out.extend_from_slice(b"}\n\n");
                State::Part {
                    at,
                    part,
                    text: String::new(),
                    json_mode,
                    citations: Vec::new(),
                }
            }
            Some("tool_use") => {
                self.close(out, sealer, false);
                let wire = name.unwrap_or_default().to_owned();
                let tool = self.cfg.tools.get(&wire).cloned();
                let custom = name.is_some() && tool.as_ref().is_some_and(|t| t.custom);
                let prefix = if custom { "ctc" } else { "fc" };
                let id = item_id(&self.cfg.response_id, prefix, self.items);
                let call_id = block.id.as_deref().unwrap_or_default().to_owned();
                let added = tool_item(&id, &call_id, &wire, tool.as_ref(), None);
                let index = self.open_item(out, &added);
                State::Tool {
                    at: Where { id, index },
                    json: String::new(),
                    custom: custom.then(StringField::default),
                    call_id,
                    wire,
                }
            }
            Some("server_tool_use") if name == Some("web_search") => {
                self.close(out, sealer, false);
                let id = item_id(&self.cfg.response_id, "ws", self.items);
                let mut added = b"{\"id\":".to_vec();
                push_json_str(&mut added, &id);
                added.extend_from_slice(
                    b",\"type\":\"web_search_call\",\"status\":\"in_progress\",\"action\":{\"type\":\"search\"}}",
                );
                let index = self.open_item(out, &added);
                let at = Where { id, index };
                self.head_at(out, "response.web_search_call.in_progress", &at);
                out.extend_from_slice(b"}\n\n");
                self.head_at(out, "response.web_search_call.searching", &at);
                out.extend_from_slice(b"}\n\n");
                State::WebSearch {
                    at,
                    json: String::new(),
                }
            }
            _ => State::Other,
        };
        self.open = Some((index, state));
    }

    fn open_where(&self) -> Where {
        match &self.item {
            Some(item) => Where {
                id: item.id.clone(),
                index: item.index,
            },
            None => Where {
                id: String::new(),
                index: 0,
            },
        }
    }

    fn block_delta(&mut self, state: &mut State, delta: Delta<'_>, out: &mut Vec<u8>) {
        let dtype = delta.kind.as_deref();
        let piece = match dtype {
            Some("text_delta") => delta.text.as_deref(),
            Some("input_json_delta") => delta.partial_json.as_deref(),
            _ => None,
        }
        .filter(|p| !p.is_empty());
        match state {
            State::Thinking {
                at,
                text,
                signature,
                summary_index,
            } => match dtype {
                Some("thinking_delta") => {
                    let Some(piece) = delta.thinking.as_deref().filter(|t| !t.is_empty()) else {
                        return;
                    };
                    text.push_str(piece);
                    if !self.cfg.summary {
                        return;
                    }
                    let summary = match *summary_index {
                        Some(n) => n,
                        None => {
                            let n = match self.item.as_mut() {
                                Some(item) => {
                                    item.summaries += 1;
                                    item.summaries - 1
                                }
                                None => 0,
                            };
                            *summary_index = Some(n);
                            self.head_at(out, "response.reasoning_summary_part.added", at);
                            push_summary_index(out, n);
                            out.extend_from_slice(
                                b",\"part\":{\"type\":\"summary_text\",\"text\":\"\"}}\n\n",
                            );
                            n
                        }
                    };
                    self.head_at(out, "response.reasoning_summary_text.delta", at);
                    push_summary_index(out, summary);
                    out.extend_from_slice(b",\"delta\":");
                    push_json_str(out, piece);
                    out.extend_from_slice(b"}\n\n");
                }
                Some("signature_delta") => {
                    if let Some(piece) = delta.signature.as_deref() {
                        signature.push_str(piece);
                    }
                }
                _ => {}
            },
            State::Part {
                at,
                part,
                text,
                json_mode,
                citations,
            } => {
                if !*json_mode && dtype == Some("citations_delta") {
                    if let Some(c) = delta.citation {
                        if c.kind.as_deref() == Some("web_search_result_location") {
                            if let Some(url) = c.url {
                                let title = c.title.unwrap_or_default();
                                citations.push((url.into_owned(), title.into_owned()));
                            }
                        }
                    }
                    return;
                }
                let Some(piece) = piece else {
                    return;
                };
                text.push_str(piece);
                self.head_at(out, "response.output_text.delta", at);
                push_content_index(out, *part);
                out.extend_from_slice(b",\"delta\":");
                push_json_str(out, piece);
                out.extend_from_slice(b",\"logprobs\":[]}\n\n");
            }
            State::Tool {
                at, json, custom, ..
            } => {
                let Some(piece) = piece else {
                    return;
                };
                json.push_str(piece);
                match custom {
                    None => {
                        self.head_at(out, "response.function_call_arguments.delta", at);
                        out.extend_from_slice(b",\"delta\":");
                        push_json_str(out, piece);
                        out.extend_from_slice(b"}\n\n");
                    }
                    Some(field) => {
                        let mut text = String::new();
                        field.feed(piece, &mut text);
                        if !text.is_empty() {
                            self.head_at(out, "response.custom_tool_call_input.delta", at);
                            out.extend_from_slice(b",\"delta\":");
                            push_json_str(out, &text);
                            out.extend_from_slice(b"}\n\n");
                        }
                    }
                }
            }
            State::WebSearch { json, .. } => {
                if let Some(piece) = piece {
                    json.push_str(piece);
                }
            }
            State::Redacted { .. } | State::Other | State::Compact { .. } => {}
        }
    }

    fn block_stop(&mut self, state: State, out: &mut Vec<u8>) {
        match state {
            State::Thinking {
                at,
                text,
                signature,
                summary_index,
            } => {
                if let Some(n) = summary_index {
                    self.head_at(out, "response.reasoning_summary_text.done", &at);
                    push_summary_index(out, n);
                    out.extend_from_slice(b",\"text\":");
                    push_json_str(out, &text);
                    out.extend_from_slice(b"}\n\n");
                    self.head_at(out, "response.reasoning_summary_part.done", &at);
                    push_summary_index(out, n);
                    out.extend_from_slice(b",\"part\":{\"type\":\"summary_text\",\"text\":");
                    push_json_str(out, &text);
                    out.extend_from_slice(b"}}\n\n");
                }
                if let Some(item) = self.item.as_mut() {
                    item.thoughts.push(Thought::Thinking { text, signature });
                }
            }
            State::Redacted { data } => {
                if let Some(item) = self.item.as_mut() {
                    item.thoughts.push(Thought::Redacted(data));
                }
            }
            State::Part {
                at,
                part,
                text,
                json_mode,
                citations,
            } => {
                let text = if json_mode {
                    // the JSON-mode tool: its input is the text
                    let mut json = Vec::new();
                    parse_object(&text).write(&mut json);
                    String::from_utf8(json).unwrap_or_default()
                } else {
                    text
                };
                self.head_at(out, "response.output_text.done", &at);
                push_content_index(out, part);
                out.extend_from_slice(b",\"text\":");
                push_json_str(out, &text);
                out.extend_from_slice(b",\"logprobs\":[]}\n\n");
                let mut final_part = Vec::new();
                push_text_part(&mut final_part, &text, &citations);
                self.head_at(out, "response.content_part.done", &at);
                push_content_index(out, part);
                out.extend_from_slice(b",\"part\":");
                out.extend_from_slice(&final_part);
                out.extend_from_slice(b"}\n\n");
                if let Some(slot) = self.item.as_mut().and_then(|i| i.parts.get_mut(part)) {
                    *slot = final_part;
                }
            }
            State::Tool {
                at,
                json,
                call_id,
                wire,
                ..
            } => {
                let input = parse_object(&json);
                let tool = self.cfg.tools.get(&wire).cloned();
                let done = tool_item(&at.id, &call_id, &wire, tool.as_ref(), Some(&input));
                if tool.as_ref().is_some_and(|t| t.custom) {
                    self.head_at(out, "response.custom_tool_call_input.done", &at);
                    out.extend_from_slice(b",\"input\":");
                    push_json_str(out, &custom_input(&input));
                } else {
                    self.head_at(out, "response.function_call_arguments.done", &at);
                    out.extend_from_slice(b",\"arguments\":");
                    push_json_str(out, &arguments(&input));
                    out.extend_from_slice(b",\"name\":");
                    let name = tool.as_ref().map_or(wire.as_str(), |t| t.name.as_str());
                    push_json_str(out, name);
                }
                out.extend_from_slice(b"}\n\n");
                self.item_done(out, at.index, done);
            }
            State::WebSearch { at, json } => {
                let input = parse_object(&json);
                let mut done = b"{\"id\":".to_vec();
                push_json_str(&mut done, &at.id);
                done.extend_from_slice(
                    b",\"type\":\"web_search_call\",\"status\":\"completed\",\"action\":{\"type\":\"search\"",
                );
                if let Some(Json::Str(query)) = input.get("query") {
                    done.extend_from_slice(b",\"query\":");
                    push_json_str(&mut done, query);
                }
                done.extend_from_slice(b"}}");
                self.head_at(out, "response.web_search_call.completed", &at);
                out.extend_from_slice(b"}\n\n");
                self.item_done(out, at.index, done);
            }
            State::Compact { text } => self.compact_texts.push(text),
            State::Other => {}
        }
    }

    fn fail_with(&mut self, out: &mut Vec<u8>, outcome: Outcome, etype: &str, message: &str) {
        self.done = true;
        self.outcome = outcome;
        self.error = Some((etype.to_owned(), message.to_owned()));
        let code = if etype == "rate_limit_error" {
            "rate_limit_exceeded"
        } else {
            "server_error"
        };
        if !self.started {
            self.head(out, "error");
            out.extend_from_slice(b",\"code\":");
            push_json_str(out, code);
            out.extend_from_slice(b",\"message\":");
            push_json_str(out, message);
            out.extend_from_slice(b",\"param\":null}\n\n");
            return;
        }
        self.head(out, "response.failed");
        out.extend_from_slice(b",\"response\":");
        self.push_response(out, "failed", Some((code, message)), None, true, true);
        out.extend_from_slice(b"}\n\n");
    }
}

/// `incomplete_details.reason` for an Anthropic stop reason (`response_status`).
fn incomplete_reason(stop_reason: Option<&str>) -> Option<&'static str> {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => Some("max_output_tokens"),
        Some("refusal") => Some("content_filter"),
        _ => None,
    }
}

/// A deterministic id for output item `index` (`item_id`).
fn item_id(response_id: &str, prefix: &str, index: u64) -> String {
    let base = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("{prefix}_{base}_{index}")
}

fn push_where(out: &mut Vec<u8>, at: &Where) {
    out.extend_from_slice(b",\"item_id\":");
    push_json_str(out, &at.id);
    out.extend_from_slice(b",\"output_index\":");
    out.extend_from_slice(itoa::Buffer::new().format(at.index).as_bytes());
}

fn push_item_event(out: &mut Vec<u8>, index: u64, item: &[u8]) {
    out.extend_from_slice(b",\"output_index\":");
    out.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
    out.extend_from_slice(b",\"item\":");
    out.extend_from_slice(item);
    out.extend_from_slice(b"}\n\n");
}

fn push_summary_index(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b",\"summary_index\":");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn push_content_index(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(b",\"content_index\":");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `text_part(text, annotations)`: each citation spans the whole part (`citation_annotations`).
fn push_text_part(out: &mut Vec<u8>, text: &str, citations: &[(String, String)]) {
    out.extend_from_slice(b"{\"type\":\"output_text\",\"text\":");
    push_json_str(out, text);
    out.extend_from_slice(b",\"annotations\":[");
    let end = text.chars().count(); // Python's len(): code points
    for (i, (url, title)) in citations.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"type\":\"url_citation\",\"url\":");
        push_json_str(out, url);
        out.extend_from_slice(b",\"title\":");
        push_json_str(out, title);
        out.extend_from_slice(b",\"start_index\":0,\"end_index\":");
        out.extend_from_slice(itoa::Buffer::new().format(end).as_bytes());
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"logprobs\":[]}");
}

/// A tool input from its streamed JSON (`{}` when none came or it was cut short).
fn parse_object(raw: &str) -> Json {
    payload::parse_json(raw).unwrap_or(Json::Obj(Vec::new()))
}

/// `orjson.dumps(input if input is not None else {})`.
fn arguments(input: &Json) -> String {
    let mut json = Vec::new();
    match input {
        Json::Null => json.extend_from_slice(b"{}"),
        other => other.write(&mut json),
    }
    String::from_utf8(json).unwrap_or_default()
}

/// A custom tool's freeform text: `input.input` when it is a string, else the input as JSON.
fn custom_input(input: &Json) -> String {
    match input.get("input") {
        Some(Json::Str(text)) => text.clone(),
        _ => arguments(input),
    }
}

/// The function_call / custom_tool_call item (`tool_item`); `input: None` is the item as added
/// (`arguments` / `input` empty, `status` in progress).
fn tool_item(
    id: &str,
    call_id: &str,
    wire: &str,
    tool: Option<&ToolRef>,
    input: Option<&Json>,
) -> Vec<u8> {
    let mut item = b"{\"id\":".to_vec();
    push_json_str(&mut item, id);
    let custom = tool.is_some_and(|t| t.custom);
    item.extend_from_slice(if custom {
        b",\"type\":\"custom_tool_call\",\"call_id\":"
    } else {
        b",\"type\":\"function_call\",\"call_id\":"
    });
    push_json_str(&mut item, call_id);
    item.extend_from_slice(b",\"name\":");
    push_json_str(&mut item, tool.map_or(wire, |t| t.name.as_str()));
    if custom {
        item.extend_from_slice(b",\"input\":");
        push_json_str(&mut item, &input.map(custom_input).unwrap_or_default());
    } else {
        item.extend_from_slice(b",\"arguments\":");
        push_json_str(&mut item, &input.map(arguments).unwrap_or_default());
        item.extend_from_slice(if input.is_some() {
            b",\"status\":\"completed\""
        } else {
            b",\"status\":\"in_progress\""
        });
    }
    if let Some(ns) = tool.and_then(|t| t.namespace.as_deref()) {
        item.extend_from_slice(b",\"namespace\":");
        push_json_str(&mut item, ns);
    }
    item.push(b'}');
    item
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum FieldState {
    #[default]
    Head,
    Str,
    End,
    Off,
}

/// Decodes the string value of `{"input": "..."}` from JSON fragments, as they arrive
/// (`_StringField`). Anything else (another key first, a non-string) stops the decoding: the
/// `.done` event still carries the whole input, parsed from the complete JSON.
#[derive(Debug, Default)]
struct StringField {
    /// chars of TARGET matched
    head: usize,
    /// an escape not yet complete
    pending: Vec<char>,
    state: FieldState,
}

const TARGET: &[u8] = b"{\"input\":\"";

impl StringField {
    fn feed(&mut self, text: &str, out: &mut String) {
        for ch in text.chars() {
            match self.state {
                FieldState::Head => {
                    // where JSON allows whitespace in TARGET
                    if matches!(ch, ' ' | '\t' | '\r' | '\n') && matches!(self.head, 0 | 1 | 8 | 9)
                    {
                        continue;
                    }
                    if TARGET.get(self.head).map(|&b| char::from(b)) != Some(ch) {
                        self.state = FieldState::Off;
                        break;
                    }
                    self.head += 1;
                    if self.head == TARGET.len() {
                        self.state = FieldState::Str;
                    }
                }
                FieldState::Str => {
                    if !self.pending.is_empty() {
                        self.pending.push(ch);
                        if let Some(done) = self.escape() {
                            out.push_str(&done);
                        }
                    } else if ch == '\\' {
                        self.pending.push(ch);
                    } else if ch == '"' {
                        self.state = FieldState::End;
                    } else {
                        out.push(ch);
                    }
                }
                FieldState::End | FieldState::Off => break,
            }
        }
    }

    /// The decoded text of a complete escape in `pending`, else `None` (wait for more).
    fn escape(&mut self) -> Option<String> {
        let p = self.pending.clone(); // at most 12 chars
        if p.len() == 2 && p[1] != 'u' {
            let text = match p[1] {
                '"' => "\"",
                '\\' => "\\",
                '/' => "/",
                'b' => "\u{8}",
                'f' => "\u{c}",
                'n' => "\n",
                'r' => "\r",
                't' => "\t",
                _ => {
                    self.state = FieldState::Off;
                    ""
                }
            };
            self.pending.clear();
            return Some(text.to_owned());
        }
        if p.len() < 6 {
            return None;
        }
        let Some(high) = hex4(&p[2..6]) else {
            self.state = FieldState::Off;
            self.pending.clear();
            return Some(String::new());
        };
        let ch = if (0xD800..0xDC00).contains(&high) {
            if p.len() < 12 {
                return None; // a high surrogate: wait for its low half
            }
            let low = if p[6] == '\\' && p[7] == 'u' {
                hex4(&p[8..12]).filter(|low| (0xDC00..0xE000).contains(low))
            } else {
                None
            };
            low.and_then(|low| char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)))
        } else {
            char::from_u32(high) // None for a lone low surrogate
        };
        self.pending.clear();
        Some(ch.unwrap_or('\u{fffd}').to_string())
    }
}

fn hex4(chars: &[char]) -> Option<u32> {
    chars
        .iter()
        .try_fold(0u32, |n, c| c.to_digit(16).map(|d| n * 16 + d))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals as `sealed(<n>:<plaintext>)` and counts its calls.
    #[derive(Default)]
    struct Plain(usize);

    impl Sealer for Plain {
        fn seal(&mut self, plaintext: &[u8], context: &[u8]) -> String {
            self.0 += 1;
            format!(
                "sealed({}:{}:{})",
                self.0,
                String::from_utf8_lossy(context),
                String::from_utf8_lossy(plaintext)
            )
        }
    }

    fn event(name: &str, data: &str) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn config() -> Config {
        let mut tools = HashMap::new();
        tools.insert(
            "apply_patch".to_owned(),
            ToolRef {
                custom: true,
                name: "apply_patch".to_owned(),
                namespace: None,
            },
        );
        tools.insert(
            "ns__f".to_owned(),
            ToolRef {
                custom: false,
                name: "f".to_owned(),
                namespace: Some("ns".to_owned()),
            },
        );
        Config {
            response_id: "resp_x".to_owned(),
            created_at: 1,
            model: "gpt".to_owned(),
            summary: true,
            tools,
            echo: vec![("store".to_owned(), b"true".to_vec())],
            reasoning_context: b"r".to_vec(),
            compaction_context: b"c".to_vec(),
            ..Config::default()
        }
    }

    fn encode(cfg: Config, chunks: &[&[u8]]) -> (String, ResponsesStreamEncoder) {
        let mut enc = ResponsesStreamEncoder::new(cfg);
        let mut sealer = Plain::default();
        let mut out = Vec::new();
        for chunk in chunks {
            enc.feed(chunk, &mut out, &mut sealer);
        }
        enc.finish(&mut out);
        (String::from_utf8_lossy(&out).into_owned(), enc)
    }

    fn events(out: &str) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        for frame in out.trim_end_matches("\n\n").split("\n\n") {
            let (head, data) = frame.split_once('\n').unwrap_or_default();
            let value: serde_json::Value =
                serde_json::from_str(data.strip_prefix("data: ").unwrap_or_default())
                    .unwrap_or_default();
            assert_eq!(Some(&value["type"]), Some(&serde_json::json!(head[7..])));
            all.push(value);
        }
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e["sequence_number"], serde_json::json!(i));
        }
        all
    }

    fn stream() -> String {
        [
            event("message_start", r#"{"message":{"id":"m","usage":{"input_tokens":3,"cache_read_input_tokens":2}}}"#),
            event("content_block_start", r#"{"index":0,"content_block":{"type":"thinking"}}"#),
            event("content_block_delta", r#"{"index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#),
            event("content_block_delta", r#"{"index":0,"delta":{"type":"signature_delta","signature":"sig"}}"#),
            event("content_block_stop", r#"{"index":0}"#),
            event("content_block_start", r#"{"index":1,"content_block":{"type":"text"}}"#),
            event("ping", "{}"),
            event("content_block_delta", r#"{"index":1,"delta":{"type":"text_delta","text":"Hi \u00e9"}}"#),
            event("content_block_stop", r#"{"index":1}"#),
            event("content_block_start", r#"{"index":2,"content_block":{"type":"tool_use","id":"c1","name":"apply_patch","input":{}}}"#),
            event("content_block_delta", r#"{"index":2,"delta":{"type":"input_json_delta","partial_json":"{\"input\": \"a\\n\\ud83d"}}"#),
            event("content_block_delta", r#"{"index":2,"delta":{"type":"input_json_delta","partial_json":"\\ude00b\"}"}}"#),
            event("content_block_stop", r#"{"index":2}"#),
            event("content_block_start", r#"{"index":3,"content_block":{"type":"tool_use","id":"c2","name":"ns__f"}}"#),
            event("content_block_delta", r#"{"index":3,"delta":{"type":"input_json_delta","partial_json":"{\"x\": [1.5e-7, 1e16, -0]}"}}"#),
            event("message_delta", r#"{"delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":9}}"#),
            event("message_stop", "{}"),
        ]
        .concat()
    }

    #[test]
    fn full_stream_and_split_invariance() {
        let input = stream();
        let (whole, enc) = encode(config(), &[input.as_bytes()]);
        assert_eq!(enc.outcome(), Outcome::Complete);
        assert_eq!(enc.usage(), [3, 0, 2, 9, 0, 0]);
        for i in (0..input.len()).step_by(7) {
            let (split, _) = encode(config(), &[&input.as_bytes()[..i], &input.as_bytes()[i..]]);
            assert_eq!(split, whole, "split at {i}");
        }
        let evs = events(&whole);
        let kinds: Vec<&str> = evs.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(kinds[0], "response.created");
        assert_eq!(kinds[kinds.len() - 1], "response.incomplete");
        let custom: String = evs
            .iter()
            .filter(|e| e["type"] == "response.custom_tool_call_input.delta")
            .filter_map(|e| e["delta"].as_str())
            .collect();
        assert_eq!(custom, "a\n\u{1f600}b");
        let args = evs
            .iter()
            .find(|e| e["type"] == "response.function_call_arguments.done")
            .map(|e| e["arguments"].clone());
        assert_eq!(args, Some(serde_json::json!("{\"x\":[1.5e-7,1e+16,0]}")));
        let last = &evs[evs.len() - 1]["response"];
        assert_eq!(last["usage"]["input_tokens"], 5);
        assert_eq!(last["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(last["store"], true);
        let output = last["output"].as_array().cloned().unwrap_or_default();
        let done: Vec<_> = evs
            .iter()
            .filter(|e| e["type"] == "response.output_item.done")
            .map(|e| e["item"].clone())
            .collect();
        assert_eq!(output, done);
        assert_eq!(output.len(), 4);
        assert_eq!(output[0]["summary"][0]["text"], "hm");
        assert_eq!(output[2]["input"], "a\n\u{1f600}b");
        assert_eq!(output[3]["namespace"], "ns");
        assert_eq!(output[3]["name"], "f");
    }

    #[test]
    fn errors_and_fail() {
        let (out, enc) = encode(
            config(),
            &[event(
                "error",
                r#"{"error":{"type":"rate_limit_error","message":"slow"}}"#,
            )
            .as_bytes()],
        );
        assert!(out.starts_with("event: error\ndata: {\"type\":\"error\",\"sequence_number\":0,\"code\":\"rate_limit_exceeded\",\"message\":\"slow\",\"param\":null}"));
        assert_eq!(enc.outcome(), Outcome::UpstreamError);
        let start = event("message_start", r#"{"message":{"id":"m"}}"#);
        let (out, enc) = encode(config(), &[start.as_bytes()]);
        assert_eq!(enc.outcome(), Outcome::Truncated);
        let evs = events(&out);
        assert_eq!(evs[2]["type"], "response.failed");
        assert_eq!(evs[2]["response"]["error"]["code"], "server_error");
        let mut enc = ResponsesStreamEncoder::new(config());
        let mut out = Vec::new();
        enc.feed(start.as_bytes(), &mut out, &mut Plain::default());
        enc.fail(&mut out, "deadline", "timeout_error");
        assert_eq!(enc.outcome(), Outcome::UpstreamError);
        assert_eq!(enc.error(), Some(("timeout_error", "deadline")));
        let before = out.len();
        enc.fail(&mut out, "again", "api_error");
        enc.finish(&mut out);
        assert_eq!(out.len(), before);
    }

    #[test]
    fn compaction_seals_once() {
        let cfg = Config {
            compact: true,
            ..config()
        };
        let input = [
            event("message_start", r#"{"message":{"id":"m"}}"#),
            event(
                "content_block_start",
                r#"{"index":0,"content_block":{"type":"text"}}"#,
            ),
            event(
                "content_block_delta",
                r#"{"index":0,"delta":{"type":"text_delta","text":"sum"}}"#,
            ),
            event("message_stop", "{}"),
        ]
        .concat();
        let (out, _) = encode(cfg, &[input.as_bytes()]);
        let evs = events(&out);
        assert_eq!(evs.len(), 5);
        let item = &evs[3]["item"];
        assert_eq!(item["id"], "cmp_x_0");
        assert_eq!(
            item["encrypted_content"],
            "sealed(1:c:{\"summary\":\"sum\"})"
        );
        assert_eq!(&evs[4]["response"]["output"][0], item);
    }

    #[test]
    fn floats_as_orjson_writes_them() {
        let cases = [
            (1e20, "1e+20"),
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (0.1, "0.1"),
            (1e-7, "1e-7"),
            (1e-5, "0.00001"),
            (1.5e-5, "0.000015"),
            (1e-6, "1e-6"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (1234567890123456.8, "1234567890123456.8"),
            (1.8446744073709552e19, "1.8446744073709552e+19"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-1.25e-10, "-1.25e-10"),
            (123456789.123, "123456789.123"),
        ];
        for (f, want) in cases {
            let mut out = Vec::new();
            payload::push_float(&mut out, f);
            assert_eq!(String::from_utf8_lossy(&out), want, "{f:e}");
        }
        // orjson reads the integer -0 as 0 and the float -0.0 as -0.0
        let value = payload::parse_json(r#"[-0, -0.0,1e-0,-0e1, "-0\"-0", {"a":-0}]"#);
        let mut out = Vec::new();
        value.unwrap_or(Json::Null).write(&mut out);
        let want = r#"[0,-0.0,1.0,-0.0,"-0\"-0",{"a":0}]"#;
        assert_eq!(String::from_utf8_lossy(&out), want);
    }

    #[test]
    fn string_field_escapes() {
        for (pieces, want) in [
            (vec!["{\"input\":\"a\\", "tb\"}"], "a\tb"),
            (
                vec![" { \"input\" : \"x\\u00e9\\ud800zzzzzz"],
                "x\u{e9}\u{fffd}",
            ),
            (vec!["{\"other\":\"x\"}"], ""),
            (vec!["{\"input\":\"\\qrest"], ""),
            (vec!["{\"input\":\"\\udc00!"], "\u{fffd}!"),
        ] {
            let mut field = StringField::default();
            let mut out = String::new();
            for p in pieces {
                field.feed(p, &mut out);
            }
            assert_eq!(out, want);
        }
    }
}
