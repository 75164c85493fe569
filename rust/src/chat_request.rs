//! The request path of `/v1/chat/completions` in one pass (issue 12): the client's body bytes to
//! the bytes that go upstream, translated (`ferrule.translate.request.to_anthropic`), compressed
//! (`ferrule.compression.compress_request`, with the `compress` kernel) and marked with
//! prompt-cache breakpoints (`ferrule.breakpoints.place_breakpoints_json`), plus the facts the
//! pipeline needs.
//!
//! Those Python functions are the source of truth and document the rules; this file follows
//! them step by step, in the same order. It covers the requests agents send most (text, tools,
//! tool calls and results, sampling, stop sequences); for anything else it *declines*
//! (`None`), and the caller runs the Python stages, which answer (or refuse) exactly as before.
//! It declines in particular:
//! - whatever the Python translation would refuse with a 400 (the Python path says why);
//! - whatever it would translate with a warning (`x-ferrule-warning`);
//! - `reasoning_effort`, `response_format`, `web_search_options`, `service_tier`, `verbosity`,
//!   image parts, identifiers that are not printable ASCII, values nested over 100 levels.
//!
//! Output is byte for byte `orjson.dumps` of what the Python stages build
//! (`ferrule._pure.chat_request` is the twin; `tests/test_chat_request_differential.py`).

use std::borrow::Cow;

use crate::compress::{Compressor, Kind, DEDUP_MIN_CHARS};
use crate::payload::{parse_json, Json};
use crate::stream::push_json_str;

/// `limits.MAX_MESSAGES`, `limits.MAX_ID_CHARS`, `limits.MAX_TOKENS`.
const MAX_MESSAGES: usize = 100_000;
const MAX_ID_CHARS: usize = 256;
const MAX_TOKENS: u64 = (1 << 31) - 1;
/// Deeper values go the Python way (its limit, `jsonbody.MAX_DEPTH`, is 128).
const MAX_NESTING: usize = 100;
/// `breakpoints.MAX_BREAKPOINTS`, `breakpoints.LOOKBACK_BLOCKS`.
const MAX_BREAKPOINTS: usize = 4;
const LOOKBACK_BLOCKS: usize = 20;
const HISTORY_TOOL_DESCRIPTION: &str =
    "A tool used earlier in this conversation (not offered now).";
/// The OpenAI keys whose translation is only in Python.
const PYTHON_ONLY: [&str; 5] = [
    "reasoning_effort",
    "response_format",
    "web_search_options",
    "service_tier",
    "verbosity",
];
/// What says a tool's results are file contents (`compress_walk.FILE_TOOLS`, given by the
/// caller: the lists are written only there): words of a tool's name, programs a shell command
/// runs, and git's subcommands that print files.
#[derive(Debug, Clone, Default)]
pub struct FileTools {
    pub words: std::collections::HashSet<String>,
    pub programs: Vec<String>,
    pub git: Vec<String>,
}

/// What the model table says of a model (`ferrule.models`), from the caller's `facts`.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    /// The Anthropic model id (aliases and prefixes resolved).
    pub model: String,
    pub default_max_tokens: u64,
    /// Thinks up front when the request says nothing (`caps.thinking.on(None)`).
    pub thinks: bool,
    /// `strict` tools accepted (an unknown model: yes).
    pub strict_tools: bool,
    /// `temperature`, `top_p` accepted at any value (an unknown model: yes), and `exclusive`:
    /// not both together (`caps.sampling`).
    pub temperature_ok: bool,
    pub top_p_ok: bool,
    pub exclusive: bool,
    /// `tool_choice` `any`/`tool` accepted (an unknown model: yes).
    pub forced_tool_choice: bool,
    /// `breakpoints.min_cacheable_tokens`.
    pub min_cache_tokens: u64,
}

/// The request's settings that do not come from its body.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Compression mode: "off", "lossless" or "aggressive".
    pub mode: &'a str,
    /// The breakpoints' TTL ("5m" or "1h"); `None`: Ferrule places none.
    pub ttl: Option<&'a str>,
    /// The Anthropic API version is 2023-06-01 (later versions take no sampling parameters).
    pub sampling: bool,
    pub files: &'a FileTools,
}

/// The request, ready to go upstream.
#[derive(Debug)]
pub struct Prepared {
    pub payload: Vec<u8>,
    /// The model the client asked for (echoed back), and the one sent.
    pub asked: String,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub thinking: bool,
    pub max_tokens: u64,
    /// The request offers tools (history tools included).
    pub tools: bool,
    /// `temperature` as sent (`None`: not sent).
    pub temperature: Option<Json>,
    /// (original, compressed) text of every block compression rewrote, in order.
    pub rewrites: Vec<(String, String)>,
    /// Blocks compression looked at.
    pub blocks: usize,
    /// The tool_use ids (the first 4) of each assistant turn that has some: where
    /// `ferrule.thinking` would look for thinking blocks to put back.
    pub tool_turns: Vec<Vec<String>>,
}

/// One content block of a translated message.
#[derive(Debug)]
enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Json,
    },
    ToolResult {
        id: String,
        content: Option<String>,
    },
}

impl Block {
    fn write(&self, out: &mut Vec<u8>, mark: Option<&str>) {
        match self {
            Self::Text(text) => {
                out.extend_from_slice(br#"{"type":"text","text":"#);
                push_json_str(out, text);
            }
            Self::ToolUse { id, name, input } => {
                out.extend_from_slice(br#"{"type":"tool_use","id":"#);
                push_json_str(out, id);
                out.extend_from_slice(br#","name":"#);
                push_json_str(out, name);
                out.extend_from_slice(br#","input":"#);
                input.write(out);
            }
            Self::ToolResult { id, content } => {
                out.extend_from_slice(br#"{"type":"tool_result","tool_use_id":"#);
                push_json_str(out, id);
                if let Some(content) = content {
                    out.extend_from_slice(br#","content":"#);
                    push_json_str(out, content);
                }
            }
        }
        close(out, mark);
    }

    /// `breakpoints._cacheable` (every kind made here may carry one; text only when not blank).
    fn cacheable(&self) -> bool {
        match self {
            Self::Text(text) => !py_strip(text).is_empty(),
            _ => true,
        }
    }
}

/// A JSON array of `items`, each written by `each` (given its index).
fn push_list<T>(out: &mut Vec<u8>, items: &[T], mut each: impl FnMut(&mut Vec<u8>, usize, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, i, item);
    }
    out.push(b']');
}

/// Ends an object, with a breakpoint as its last key when `mark` is given.
fn close(out: &mut Vec<u8>, mark: Option<&str>) {
    match mark {
        Some("1h") => {
            out.extend_from_slice(br#","cache_control":{"type":"ephemeral","ttl":"1h"}}"#)
        }
        Some(_) => out.extend_from_slice(br#","cache_control":{"type":"ephemeral"}}"#),
        None => out.push(b'}'),
    }
}

#[derive(Debug)]
struct Turn {
    user: bool,
    blocks: Vec<Block>,
}

/// A tool offered to the model (`translate.request._tools`, `_history_tools`).
#[derive(Debug)]
struct Tool {
    name: String,
    description: Option<String>,
    schema: Option<Json>, // None: `{"type":"object","properties":{}}`
    strict: bool,
    history: bool, // `_history_tools`: fixed description, `{"type":"object"}`
}

impl Tool {
    fn write(&self, out: &mut Vec<u8>, mark: Option<&str>) {
        out.extend_from_slice(br#"{"name":"#);
        push_json_str(out, &self.name);
        if self.history {
            out.extend_from_slice(br#","description":"#);
            push_json_str(out, HISTORY_TOOL_DESCRIPTION);
            out.extend_from_slice(br#","input_schema":{"type":"object"}"#);
        } else {
            if let Some(desc) = &self.description {
                out.extend_from_slice(br#","description":"#);
                push_json_str(out, desc);
            }
            out.extend_from_slice(br#","input_schema":"#);
            match &self.schema {
                Some(schema) => schema.write(out),
                None => out.extend_from_slice(br#"{"type":"object","properties":{}}"#),
            }
            if self.strict {
                out.extend_from_slice(br#","strict":true"#);
            }
        }
        close(out, mark);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    Auto,
    None,
    Any,
    Tool(String),
}

impl Choice {
    fn kind(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::None => "none",
            Self::Any => "any",
            Self::Tool(_) => "tool",
        }
    }
}

/// Translate, compress and mark one Chat Completions request; `None`: the Python stages must do
/// it (see the module's comment). `raw` is a JSON document orjson has already accepted.
pub fn prepare<F>(raw: &str, facts: F, opts: Options<'_>) -> Option<Prepared>
where
    F: FnOnce(&str) -> Option<ModelFacts>,
{
    let Json::Obj(body) = parse_json(raw).ok()? else {
        return None;
    };
    let get = |key: &str| body.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let given = |key: &str| !matches!(get(key), None | Some(Json::Null));
    if PYTHON_ONLY.iter().any(|key| given(key)) {
        return None;
    }
    let asked = identifier(get("model")?)?;
    let Some(Json::Arr(messages)) = get("messages") else {
        return None;
    };
    if messages.is_empty() || messages.len() > MAX_MESSAGES {
        return None;
    }
    match get("n") {
        None | Some(Json::Null) | Some(Json::Int(1)) | Some(Json::UInt(1)) => {}
        _ => return None,
    }
    if matches!(get("logprobs"), Some(Json::Bool(true))) || given("top_logprobs") {
        return None;
    }
    let stream = match get("stream") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        _ => return None,
    };
    let include_usage = match get("stream_options") {
        None | Some(Json::Null) => false,
        Some(Json::Obj(opts)) => {
            stream
                && opts
                    .iter()
                    .any(|(k, v)| k == "include_usage" && *v == Json::Bool(true))
        }
        _ => return None,
    };
    let facts = facts(asked)?;
    let (system, mut turns) = turns(messages)?;
    if turns.is_empty() {
        return None;
    }
    trim_prefill(&mut turns);

    let mut max_tokens = get("max_completion_tokens");
    if matches!(max_tokens, None | Some(Json::Null)) {
        max_tokens = get("max_tokens");
    }
    let max_tokens = match max_tokens {
        None | Some(Json::Null) => facts.default_max_tokens,
        Some(Json::Int(n)) if *n >= 1 && (*n as u64) <= MAX_TOKENS => *n as u64,
        Some(Json::UInt(n)) if *n >= 1 && *n <= MAX_TOKENS => *n,
        _ => return None,
    };

    let temperature = number(get("temperature"))?;
    let top_p = number(get("top_p"))?;
    if let Some(p) = &top_p {
        let v = as_f64(p);
        if !(0.0..=1.0).contains(&v) {
            return None;
        }
    }
    let temperature = temperature.map(clamp_temperature);
    let (temperature, top_p) = if opts.sampling {
        // `model_rules.apply_sampling` drops these with a warning: the Python way
        let (t, p) = (temperature.is_some(), top_p.is_some());
        if ((t || p) && facts.thinks)
            || (t && !facts.temperature_ok)
            || (p && !facts.top_p_ok)
            || (t && p && facts.exclusive)
        {
            return None;
        }
        (temperature, top_p)
    } else {
        (None, None) // NOTE: 2026-10-21 rejects them even at default values: dropped
    };

    let stop = stop(get("stop"))?;
    let metadata = identity(&get)?;
    let mut tools = tools(get("tools"), &facts)?;
    let mut choice = tool_choice(
        get("tool_choice"),
        get("parallel_tool_calls"),
        tools.is_some(),
    )?;
    if !facts.forced_tool_choice && matches!(&choice, Some((Choice::Any | Choice::Tool(_), _))) {
        return None; // sent as auto with a warning: the Python way
    }
    if tools.is_none() && has_tool_blocks(&turns) {
        tools = Some(history_tools(&turns));
        choice = Some((Choice::None, false));
    }

    // compression (ferrule.compression.compress_request), in place
    let mut compressor = Compressor::new(opts.mode, crate::compress::DEFAULT_CUT_AT).ok()?;
    let mut rewrites = Vec::new();
    let mut blocks = 0;
    if !compressor.is_off() {
        compress_turns(
            &mut compressor,
            &mut turns,
            opts.files,
            &mut rewrites,
            &mut blocks,
        );
    }

    // the prompt's blocks in order (tools, system, messages), each with its JSON size
    let tools_list: &[Tool] = tools.as_deref().unwrap_or(&[]);
    let marks = match opts.ttl {
        Some(ttl) => plan(tools_list, &system, &turns, ttl, facts.min_cache_tokens),
        None => Vec::new(),
    };
    let mark_at = |pos: usize| marks.iter().find(|(p, _)| *p == pos).map(|(_, t)| *t);

    let mut out = Vec::with_capacity(raw.len() + 256);
    out.extend_from_slice(br#"{"model":"#);
    push_json_str(&mut out, &facts.model);
    out.extend_from_slice(br#","max_tokens":"#);
    out.extend_from_slice(itoa::Buffer::new().format(max_tokens).as_bytes());
    out.extend_from_slice(br#","messages":"#);
    let mut pos = tools_list.len() + system.len();
    push_list(&mut out, &turns, |out, _, turn| {
        out.extend_from_slice(if turn.user {
            br#"{"role":"user","content":"#
        } else {
            br#"{"role":"assistant","content":"#
        });
        push_list(out, &turn.blocks, |out, _, block| {
            block.write(out, mark_at(pos));
            pos += 1;
        });
        out.push(b'}');
    });
    if !system.is_empty() {
        out.extend_from_slice(br#","system":"#);
        push_list(&mut out, &system, |out, k, text| {
            out.extend_from_slice(br#"{"type":"text","text":"#);
            push_json_str(out, text);
            close(out, mark_at(tools_list.len() + k));
        });
    }
    if let Some(t) = &temperature {
        out.extend_from_slice(br#","temperature":"#);
        t.write(&mut out);
    }
    if let Some(p) = &top_p {
        out.extend_from_slice(br#","top_p":"#);
        p.write(&mut out);
    }
    if let Some(stop) = &stop {
        out.extend_from_slice(br#","stop_sequences":"#);
        push_list(&mut out, stop, |out, _, s| push_json_str(out, s));
    }
    if let Some(user) = metadata {
        out.extend_from_slice(br#","metadata":{"user_id":"#);
        push_json_str(&mut out, user);
        out.push(b'}');
    }
    if !tools_list.is_empty() {
        out.extend_from_slice(br#","tools":"#);
        push_list(&mut out, tools_list, |out, i, tool| {
            tool.write(out, mark_at(i))
        });
    }
    if let Some((choice, no_parallel)) = &choice {
        out.extend_from_slice(br#","tool_choice":{"type":""#);
        out.extend_from_slice(choice.kind().as_bytes());
        out.push(b'"');
        if let Choice::Tool(name) = choice {
            out.extend_from_slice(br#","name":"#);
            push_json_str(&mut out, name);
        }
        if *no_parallel {
            out.extend_from_slice(br#","disable_parallel_tool_use":true"#);
        }
        out.push(b'}');
    }
    if stream {
        out.extend_from_slice(br#","stream":true"#);
    }
    out.push(b'}');
    let tool_turns = turns
        .iter()
        .filter(|t| !t.user)
        .map(|t| {
            t.blocks
                .iter()
                .filter_map(|b| match b {
                    Block::ToolUse { id, .. } => Some(id.clone()),
                    _ => None,
                })
                .take(4)
                .collect::<Vec<_>>()
        })
        .filter(|ids| !ids.is_empty())
        .collect();
    Some(Prepared {
        payload: out,
        asked: asked.to_owned(),
        model: facts.model,
        stream,
        include_usage,
        thinking: facts.thinks,
        max_tokens,
        tools: !tools_list.is_empty(),
        temperature,
        rewrites,
        blocks,
        tool_turns,
    })
}

/// A model or user id: 1 to 256 printable ASCII characters (`limits.check_identifier` accepts
/// more; the rest goes the Python way).
fn identifier(value: &Json) -> Option<&str> {
    match value {
        Json::Str(s)
            if !s.is_empty()
                && s.len() <= MAX_ID_CHARS
                && s.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
        {
            Some(s)
        }
        _ => None,
    }
}

/// `translate.request._number`: `Some(None)` when absent, `None` when not a number.
fn number(value: Option<&Json>) -> Option<Option<Json>> {
    match value {
        None | Some(Json::Null) => Some(None),
        Some(n @ (Json::Int(_) | Json::UInt(_) | Json::Float(_))) => Some(Some(n.clone())),
        _ => None,
    }
}

fn as_f64(n: &Json) -> f64 {
    match n {
        Json::Int(i) => *i as f64,
        Json::UInt(u) => *u as f64,
        Json::Float(f) => *f,
        _ => f64::NAN,
    }
}

/// `min(max(temperature, 0), 1)` in Python: the int 0 or 1 when out of range, else unchanged.
fn clamp_temperature(t: Json) -> Json {
    match &t {
        Json::Int(i) if *i < 0 => Json::Int(0),
        Json::Int(i) if *i > 1 => Json::Int(1),
        Json::UInt(u) if *u > 1 => Json::Int(1),
        Json::Float(f) if *f < 0.0 => Json::Int(0),
        Json::Float(f) if *f > 1.0 => Json::Int(1),
        _ => t,
    }
}

/// Python's `str.isspace()` for one character (`\s` of `re` too): Rust's `is_whitespace`
/// plus the four information separators U+001C..U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// `translate.request._text_of`: `None` for what the Python way refuses.
fn text_of(content: Option<&Json>) -> Option<String> {
    match content {
        None | Some(Json::Null) => Some(String::new()),
        Some(Json::Str(s)) => Some(s.clone()),
        Some(Json::Arr(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                if part.get("type") != Some(&Json::Str("text".into())) {
                    return None;
                }
                match part.get("text") {
                    Some(Json::Str(t)) => texts.push(t.as_str()),
                    _ => return None,
                }
            }
            Some(texts.join("\n"))
        }
        _ => None,
    }
}

fn is_obj(v: &Json) -> bool {
    matches!(v, Json::Obj(_))
}

fn str_of(v: Option<&Json>) -> Option<&str> {
    match v {
        Some(Json::Str(s)) => Some(s),
        _ => None,
    }
}

/// `translate.request._user_blocks` (text parts only).
fn user_blocks(content: Option<&Json>) -> Option<Vec<Block>> {
    match content {
        Some(Json::Str(s)) => Some(if s.is_empty() {
            vec![]
        } else {
            vec![Block::Text(s.clone())]
        }),
        Some(Json::Arr(parts)) => {
            let mut blocks = Vec::new();
            for part in parts {
                if !is_obj(part) || str_of(part.get("type")) != Some("text") {
                    return None; // an image (Python's) or an error
                }
                let text = str_of(part.get("text"))?;
                if !text.is_empty() {
                    blocks.push(Block::Text(text.to_owned()));
                }
            }
            Some(blocks)
        }
        _ => None,
    }
}

/// `translate.request._assistant_blocks`.
fn assistant_blocks(msg: &Json) -> Option<Vec<Block>> {
    let mut blocks = Vec::new();
    match msg.get("content") {
        Some(Json::Arr(parts)) => {
            for part in parts {
                if !is_obj(part) {
                    return None;
                }
                let kind = str_of(part.get("type"));
                let key = if kind == Some("refusal") {
                    "refusal"
                } else {
                    "text"
                };
                if !matches!(kind, Some("text" | "refusal")) {
                    return None;
                }
                let text = str_of(part.get(key))?;
                if !text.is_empty() {
                    blocks.push(Block::Text(text.to_owned()));
                }
            }
        }
        Some(Json::Str(s)) => {
            if !s.is_empty() {
                blocks.push(Block::Text(s.clone()));
            }
        }
        None | Some(Json::Null) => {}
        _ => return None,
    }
    let calls = match msg.get("tool_calls") {
        None | Some(Json::Null) => return Some(blocks),
        Some(Json::Arr(calls)) => calls,
        _ => return None,
    };
    for call in calls {
        let Some(fn_ @ Json::Obj(_)) = call.get("function") else {
            return None;
        };
        let id = str_of(call.get("id"))?;
        let name = str_of(fn_.get("name")).filter(|n| !n.is_empty())?;
        let input = match fn_.get("arguments") {
            None | Some(Json::Null) => Json::Obj(vec![]),
            Some(Json::Str(s)) if py_strip(s).is_empty() => Json::Obj(vec![]),
            Some(Json::Str(s)) => parse_json(s).ok()?,
            Some(other) => other.clone(),
        };
        if !is_obj(&input) || depth(&input) > MAX_NESTING {
            return None;
        }
        blocks.push(Block::ToolUse {
            id: id.to_owned(),
            name: name.to_owned(),
            input,
        });
    }
    Some(blocks)
}

/// Containers nested in `v` (an empty object counts 1), as `jsonbody.too_deep` measures.
fn depth(v: &Json) -> usize {
    match v {
        Json::Arr(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Json::Obj(pairs) => 1 + pairs.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

/// `translate.request._turns`: (system texts, turns).
fn turns(messages: &[Json]) -> Option<(Vec<String>, Vec<Turn>)> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    let mut leading = true;
    for msg in messages {
        if !is_obj(msg) {
            return None;
        }
        let (user, blocks) = match str_of(msg.get("role"))? {
            "system" | "developer" => {
                let text = text_of(msg.get("content"))?;
                if leading {
                    if !text.is_empty() {
                        system.push(text);
                    }
                    continue;
                }
                (
                    true,
                    if text.is_empty() {
                        vec![]
                    } else {
                        vec![Block::Text(text)]
                    },
                )
            }
            "user" => (true, user_blocks(msg.get("content"))?),
            "assistant" => (false, assistant_blocks(msg)?),
            "tool" => {
                let id = str_of(msg.get("tool_call_id")).filter(|s| !s.is_empty())?;
                let text = text_of(msg.get("content"))?;
                let content = (!text.is_empty()).then_some(text);
                (
                    true,
                    vec![Block::ToolResult {
                        id: id.to_owned(),
                        content,
                    }],
                )
            }
            _ => return None,
        };
        leading = false;
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.user == user => merge(&mut last.blocks, blocks),
            _ => turns.push(Turn { user, blocks }),
        }
    }
    Some((system, turns))
}

/// `translate.request._merge`: tool results stay first in a user turn.
fn merge(into: &mut Vec<Block>, blocks: Vec<Block>) {
    for block in blocks {
        if matches!(block, Block::ToolResult { .. }) {
            let at = into
                .iter()
                .position(|b| !matches!(b, Block::ToolResult { .. }))
                .unwrap_or(into.len());
            into.insert(at, block);
        } else {
            into.push(block);
        }
    }
}

/// A final assistant (prefill) turn may not end in whitespace.
fn trim_prefill(turns: &mut Vec<Turn>) {
    let Some(last) = turns.last_mut() else {
        return;
    };
    if last.user {
        return;
    }
    if let Some(Block::Text(text)) = last.blocks.last_mut() {
        let trimmed = text.trim_end_matches(py_space);
        if trimmed.is_empty() {
            last.blocks.pop();
            if last.blocks.is_empty() {
                turns.pop();
            }
        } else {
            let len = trimmed.len();
            text.truncate(len);
        }
    }
}

/// `translate.request._stop`.
fn stop(value: Option<&Json>) -> Option<Option<Vec<String>>> {
    let seqs: Vec<&str> = match value {
        None | Some(Json::Null) => return Some(None),
        Some(Json::Str(s)) => vec![s],
        Some(Json::Arr(items)) => {
            let mut seqs = Vec::with_capacity(items.len());
            for item in items {
                seqs.push(str_of(Some(item))?);
            }
            seqs
        }
        _ => return None,
    };
    let kept: Vec<String> = seqs
        .into_iter()
        .filter(|s| !py_strip(s).is_empty())
        .map(str::to_owned)
        .collect();
    Some((!kept.is_empty()).then_some(kept))
}

/// `translate.request._identity`: the `metadata.user_id`, if any.
fn identity<'a>(get: &impl Fn(&str) -> Option<&'a Json>) -> Option<Option<&'a str>> {
    for key in ["safety_identifier", "user", "prompt_cache_key"] {
        if !matches!(get(key), None | Some(Json::Null) | Some(Json::Str(_))) {
            return None;
        }
    }
    let ident = str_of(get("safety_identifier"))
        .filter(|s| !s.is_empty())
        .or_else(|| str_of(get("user")).filter(|s| !s.is_empty()));
    match ident {
        None => Some(None),
        Some(s) => identifier(&Json::Str(s.to_owned())).map(|_| Some(s)),
    }
}

/// `translate.request._tools`.
fn tools(value: Option<&Json>, facts: &ModelFacts) -> Option<Option<Vec<Tool>>> {
    let items = match value {
        None | Some(Json::Null) => return Some(None),
        Some(Json::Arr(items)) => items,
        _ => return None,
    };
    let mut out = Vec::with_capacity(items.len());
    for tool in items {
        if !is_obj(tool) {
            return None;
        }
        match tool.get("type") {
            None => {}
            Some(Json::Str(s)) if s == "function" => {}
            _ => return None,
        }
        let fn_ = tool.get("function").filter(|f| is_obj(f))?;
        let name = str_of(fn_.get("name")).filter(|n| !n.is_empty())?;
        let schema = match fn_.get("parameters") {
            None | Some(Json::Null) => None,
            Some(p @ Json::Obj(_)) if depth(p) <= MAX_NESTING => Some(p.clone()),
            _ => return None,
        };
        let strict = matches!(fn_.get("strict"), Some(Json::Bool(true)));
        if strict && !facts.strict_tools {
            return None; // ignored with a warning: the Python way
        }
        out.push(Tool {
            name: name.to_owned(),
            description: str_of(fn_.get("description"))
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
            schema,
            strict,
            history: false,
        });
    }
    Some((!out.is_empty()).then_some(out))
}

/// `translate.request._tool_choice`: (choice, disable_parallel_tool_use).
#[allow(clippy::type_complexity)]
fn tool_choice(
    choice: Option<&Json>,
    parallel: Option<&Json>,
    has_tools: bool,
) -> Option<Option<(Choice, bool)>> {
    let parallel = match parallel {
        None | Some(Json::Null) => None,
        Some(Json::Bool(b)) => Some(*b),
        _ => return None,
    };
    if !has_tools {
        return Some(None);
    }
    let mut out = match choice {
        None | Some(Json::Null) => None,
        Some(Json::Str(s)) if s == "auto" => Some(Choice::Auto),
        Some(Json::Str(s)) if s == "none" => Some(Choice::None),
        Some(Json::Str(s)) if s == "required" => Some(Choice::Any),
        Some(c @ Json::Obj(_)) => {
            let name = str_of(c.get("function").filter(|f| is_obj(f))?.get("name"))?;
            Some(Choice::Tool(name.to_owned()))
        }
        _ => return None,
    };
    let mut no_parallel = false;
    if parallel == Some(false) {
        let c = out.get_or_insert(Choice::Auto);
        no_parallel = *c != Choice::None;
    }
    Some(out.take().map(|c| (c, no_parallel)))
}

fn has_tool_blocks(turns: &[Turn]) -> bool {
    turns
        .iter()
        .flat_map(|t| &t.blocks)
        .any(|b| !matches!(b, Block::Text(_)))
}

/// `translate.request._history_tools`.
fn history_tools(turns: &[Turn]) -> Vec<Tool> {
    let mut names: Vec<&str> = Vec::new();
    for block in turns.iter().flat_map(|t| &t.blocks) {
        if let Block::ToolUse { name, .. } = block {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        names.push("tool");
    }
    names
        .into_iter()
        .map(|name| Tool {
            name: name.to_owned(),
            description: None,
            schema: None,
            strict: false,
            history: true,
        })
        .collect()
}

/// `compression.compress_request` on translated turns (every content is a list of blocks).
fn compress_turns(
    compressor: &mut Compressor,
    turns: &mut [Turn],
    files: &FileTools,
    rewrites: &mut Vec<(String, String)>,
    blocks: &mut usize,
) {
    let mut kinds: Vec<(String, Kind)> = Vec::new(); // tool_use id -> kind of its results
    for (i, turn) in turns.iter_mut().enumerate() {
        if !turn.user {
            for block in &turn.blocks {
                if let Block::ToolUse { id, name, input } = block {
                    let kind = tool_kind(name, input, files);
                    match kinds.iter_mut().find(|(k, _)| k == id) {
                        Some(entry) => entry.1 = kind,
                        None => kinds.push((id.clone(), kind)),
                    }
                }
            }
            continue;
        }
        for (j, block) in turn.blocks.iter_mut().enumerate() {
            let (text, kind) = match block {
                Block::Text(text) => (text, Kind::Text),
                Block::ToolResult {
                    id,
                    content: Some(text),
                } => {
                    let kind = kinds
                        .iter()
                        .find(|(k, _)| k == id)
                        .map_or(Kind::ToolResult, |(_, kind)| *kind);
                    (text, kind)
                }
                _ => continue,
            };
            *blocks += 1;
            let at = if text.chars().count() >= DEDUP_MIN_CHARS {
                format!("message {} block {}", i + 1, j + 1)
            } else {
                String::new()
            };
            let out = match compressor.compress(text, kind, &at) {
                Cow::Owned(out) if out != *text => out,
                _ => continue,
            };
            let before = std::mem::replace(text, out);
            rewrites.push((before, text.clone()));
        }
    }
}

/// `compression.tool_kind`: results of a tool that reads or edits files are file contents.
fn tool_kind(name: &str, input: &Json, files: &FileTools) -> Kind {
    if words(name).any(|w| files.words.contains(&w.to_ascii_lowercase())) {
        return Kind::File;
    }
    let command = match input.get("command") {
        Some(c) => Some(c),
        None => input.get("cmd"),
    };
    let joined;
    let command = match command {
        Some(Json::Str(s)) => s.as_str(),
        Some(Json::Arr(items)) => {
            joined = items
                .iter()
                .filter_map(|c| str_of(Some(c)))
                .collect::<Vec<_>>()
                .join(" ");
            joined.as_str()
        }
        _ => return Kind::ToolResult,
    };
    if runs_file_command(command, files) {
        Kind::File
    } else {
        Kind::ToolResult
    }
}

/// The words of `compression._WORDS` (`[A-Z]+(?![a-z])|[A-Z]?[a-z]+`, ASCII letters).
fn words(name: &str) -> impl Iterator<Item = &str> {
    let b = name.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() && !b[i].is_ascii_alphabetic() {
            i += 1;
        }
        if i >= b.len() {
            return None;
        }
        let start = i;
        if b[i].is_ascii_uppercase() {
            let mut q = i;
            while q < b.len() && b[q].is_ascii_uppercase() {
                q += 1;
            }
            let lower_next = q < b.len() && b[q].is_ascii_lowercase();
            if !lower_next {
                i = q;
            } else if q - start >= 2 {
                i = q - 1;
            } else {
                i = q;
                while i < b.len() && b[i].is_ascii_lowercase() {
                    i += 1;
                }
            }
        } else {
            while i < b.len() && b[i].is_ascii_lowercase() {
                i += 1;
            }
        }
        name.get(start..i)
    })
}

/// `compression.FILE_COMMANDS.search(command)`: a file-printing program as a word of its own,
/// after the start, whitespace or `;&|(\``, and before whitespace or the end.
fn runs_file_command(command: &str, files: &FileTools) -> bool {
    let ends_word = |rest: &str| rest.chars().next().map_or(true, py_space);
    for (start, _) in command.char_indices() {
        let after_boundary = command[..start]
            .chars()
            .next_back()
            .map_or(true, |c| py_space(c) || ";&|(`".contains(c));
        if !after_boundary {
            continue;
        }
        let rest = &command[start..];
        for program in &files.programs {
            if let Some(tail) = rest.strip_prefix(program.as_str()) {
                if ends_word(tail) {
                    return true;
                }
            }
        }
        if let Some(tail) = rest.strip_prefix("git") {
            let args = tail.trim_start_matches(py_space);
            if args.len() < tail.len() {
                for sub in &files.git {
                    if let Some(after) = args.strip_prefix(sub.as_str()) {
                        if ends_word(after) {
                            return true;
                        }
                    }
                }
            }
        }
    }
    false
}

/// `breakpoints._reaches`, block by block.
struct Reach {
    min: u64,
    total: u64,
    at: Option<usize>,
}

impl Reach {
    fn count(&mut self, pos: usize, scratch: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        if self.at.is_some() {
            return;
        }
        scratch.clear();
        write(scratch);
        self.total += (scratch.len() as u64).div_ceil(3);
        if self.total >= self.min {
            self.at = Some(pos);
        }
    }
}

/// `breakpoints._plan` for a request with no breakpoint of the client's: the positions that get
/// one, with their TTL.
fn plan<'t>(
    tools: &[Tool],
    system: &[String],
    turns: &[Turn],
    ttl: &'t str,
    min_tokens: u64,
) -> Vec<(usize, &'t str)> {
    let n_tools = tools.len();
    let n_head = n_tools + system.len();
    let mut cacheable = Vec::with_capacity(n_head + turns.len() * 2);
    let mut starts = Vec::with_capacity(turns.len() + 1);
    // _reaches: the first position whose prefix holds `min_tokens` (3 bytes of JSON a token);
    // the blocks after it are not written
    let mut reach = Reach {
        min: min_tokens,
        total: 0,
        at: None,
    };
    let mut scratch = Vec::new();
    for (pos, tool) in tools.iter().enumerate() {
        reach.count(pos, &mut scratch, |out| tool.write(out, None));
        cacheable.push(true);
    }
    for (k, text) in system.iter().enumerate() {
        reach.count(n_tools + k, &mut scratch, |out| {
            out.extend_from_slice(br#"{"type":"text","text":"#);
            push_json_str(out, text);
            out.push(b'}');
        });
        cacheable.push(!py_strip(text).is_empty());
    }
    for turn in turns {
        starts.push(cacheable.len());
        for block in &turn.blocks {
            reach.count(cacheable.len(), &mut scratch, |out| block.write(out, None));
            cacheable.push(block.cacheable());
        }
    }
    starts.push(cacheable.len());
    let Some(reached) = reach.at else {
        return Vec::new();
    };
    let last = |lo: usize, hi: usize| (lo..hi.min(cacheable.len())).rev().find(|p| cacheable[*p]);
    // _user_turns(prompt, 2): the last two runs of user messages, newest first
    let mut user_turns: Vec<(usize, usize)> = Vec::new();
    let mut end: Option<usize> = None;
    let mut first = 0;
    for i in (0..turns.len()).rev() {
        if user_turns.len() >= 2 {
            break;
        }
        if turns[i].user {
            end.get_or_insert(starts[i + 1]);
            first = starts[i];
        } else if let Some(e) = end.take() {
            user_turns.push((first, e));
        }
    }
    if let Some(e) = end {
        if user_turns.len() < 2 {
            user_turns.push((first, e));
        }
    }
    let newest = user_turns.first().and_then(|(a, b)| last(*a, *b));
    let previous = user_turns.get(1).and_then(|(a, b)| last(*a, *b));
    let last_tool = last(0, n_tools);
    let last_system = last(n_tools, n_head);
    let head = last_system.or(last_tool);
    let mut candidates: Vec<usize> = [newest, previous, head].into_iter().flatten().collect();
    if let Some(newest) = newest {
        let base = previous.or(head).map_or(-1, |b| b as i64);
        if newest as i64 - base > LOOKBACK_BLOCKS as i64 + 1 {
            let lo = (base + 1) as usize;
            if let Some(middle) = last(lo, newest + 1 - LOOKBACK_BLOCKS) {
                candidates.push(middle);
            }
        }
    }
    if let (Some(_), Some(tool)) = (last_system, last_tool) {
        candidates.push(tool);
    }
    let mut chosen: Vec<(usize, &str)> = Vec::new();
    for position in candidates {
        if chosen.len() >= MAX_BREAKPOINTS {
            break;
        }
        if position < reached || chosen.iter().any(|(p, _)| *p == position) {
            continue;
        }
        chosen.push((position, ttl));
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(model: &str) -> Option<ModelFacts> {
        Some(ModelFacts {
            model: model.to_owned(),
            default_max_tokens: 4096,
            thinks: false,
            strict_tools: true,
            temperature_ok: true,
            top_p_ok: true,
            exclusive: false,
            forced_tool_choice: true,
            min_cache_tokens: 10,
        })
    }

    fn files() -> FileTools {
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        FileTools {
            words: list(&["read", "edit", "notebook", "file"])
                .into_iter()
                .collect(),
            programs: list(&["cat", "head", "grep", "egrep"]),
            git: list(&["diff", "show"]),
        }
    }

    fn opts(files: &FileTools) -> Options<'_> {
        Options {
            mode: "lossless",
            ttl: Some("5m"),
            sampling: true,
            files,
        }
    }

    #[test]
    fn words_split_like_the_regex() {
        let got: Vec<&str> = words("HTTPServer_readFile2NotebookEdit").collect();
        assert_eq!(got, ["HTTP", "Server", "read", "File", "Notebook", "Edit"]);
        assert_eq!(words("ABC").collect::<Vec<_>>(), ["ABC"]);
    }

    #[test]
    fn file_commands() {
        let f = files();
        assert!(runs_file_command("cat x", &f));
        assert!(runs_file_command("ls; head -n 3 f", &f));
        assert!(runs_file_command("git  diff", &f));
        assert!(!runs_file_command("catalog x", &f));
        assert!(!runs_file_command("git diffs", &f));
        assert!(runs_file_command("(grep", &f));
        assert!(runs_file_command("x|egrep y", &f));
        assert!(!runs_file_command("tail x", &f)); // not in this list
        let read = Json::Obj(vec![]);
        assert_eq!(tool_kind("NotebookEdit", &read, &f), Kind::File);
        assert_eq!(tool_kind("bash", &read, &f), Kind::ToolResult);
    }

    #[test]
    fn a_plain_request() {
        let raw = r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there"}],"user":"u1"}"#;
        let Some(p) = prepare(raw, facts, opts(&files())) else {
            panic!("declined");
        };
        assert_eq!(
            String::from_utf8_lossy(&p.payload),
            r#"{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hello there","cache_control":{"type":"ephemeral"}}]}],"system":[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}],"metadata":{"user_id":"u1"}}"#
        );
    }

    #[test]
    fn declines_what_python_translates() {
        let raw =
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"low"}"#;
        assert!(prepare(raw, facts, opts(&files())).is_none());
        let raw = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":"https://x"}]}]}"#;
        assert!(prepare(raw, facts, opts(&files())).is_none());
    }
}
