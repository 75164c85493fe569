//! An Anthropic Messages answer (JSON) to an OpenAI `chat.completion` (JSON) in one call, with
//! the usage counts the ledger needs: the native twin of `ferrule._pure.answer`, which is
//! `orjson.dumps(to_openai(orjson.loads(raw), ...))` (../shared/reference/translation.md,
//! "Response"). The rules, and where they differ from a naive reading, are the twin's:
//! - a field of the wrong JSON type reads as absent (`isinstance` there);
//! - a tool call's `id` and `name` are written as whatever JSON the answer holds (`block.get`),
//!   its `arguments` are `orjson.dumps(block.get("input", {}))`;
//! - the forced tool of JSON mode (`json_tool`) is the answer's text, not a tool call.

use crate::payload::{parse_json, Json};
use crate::stream::{finish_reason_for, push_json_str};

/// A translated answer.
#[derive(Debug)]
pub struct Answer {
    pub body: Vec<u8>,
    /// `(input, cache_creation, cache_read, output, 5m writes, 1h writes)`, as
    /// `StreamTranslator.usage` reports a stream's.
    pub usage: [u64; 6],
}

/// `None` when `raw` is not a JSON object as orjson reads it, or when a usage sum would not fit
/// 64 bits (orjson cannot write it): the caller's general path then answers.
pub fn to_openai(raw: &[u8], model: &str, created: i64, json_tool: Option<&str>) -> Option<Answer> {
    let text = std::str::from_utf8(raw).ok()?;
    let msg = parse_json(text).ok()?;
    if !matches!(msg, Json::Obj(_)) {
        return None;
    }
    let usage = msg.get("usage");
    let counts = usage_counts(usage);
    let mut body = Vec::with_capacity(raw.len() + 256);
    body.extend_from_slice(b"{\"id\":\"chatcmpl-");
    if let Some(Json::Str(id)) = msg.get("id") {
        push_json_str_body(&mut body, id);
    }
    body.extend_from_slice(b"\",\"object\":\"chat.completion\",\"created\":");
    body.extend_from_slice(itoa::Buffer::new().format(created).as_bytes());
    body.extend_from_slice(b",\"model\":");
    push_json_str(&mut body, model);
    body.extend_from_slice(b",\"choices\":[{\"index\":0,\"message\":");
    let finish = write_message(&mut body, &msg, json_tool);
    body.extend_from_slice(b",\"finish_reason\":\"");
    body.extend_from_slice(finish.as_bytes());
    body.extend_from_slice(b"\",\"logprobs\":null}],\"usage\":");
    write_usage(&mut body, usage)?;
    body.push(b'}');
    Some(Answer {
        body,
        usage: counts,
    })
}

/// The usage counts of an answer relayed as it is (`/v1/messages`): `None` when `raw` is not a
/// JSON object as orjson reads it.
pub fn usage_of(raw: &[u8]) -> Option<[u64; 6]> {
    let text = std::str::from_utf8(raw).ok()?;
    let payload = crate::payload::parse(text).ok()??;
    let mut counts = [0u64; 6];
    if let Some(usage) = &payload.usage {
        crate::stream::take_usage(&mut counts, usage);
    }
    Some(counts)
}

/// The string's JSON escape without its quotes.
fn push_json_str_body(out: &mut Vec<u8>, s: &str) {
    crate::stream::push_json_str_body(out, s);
}

/// The `message` object; returns the finish reason.
fn write_message(out: &mut Vec<u8>, msg: &Json, json_tool: Option<&str>) -> &'static str {
    let mut texts: Vec<&str> = Vec::new();
    let mut thinking: Vec<&str> = Vec::new();
    let mut calls: Vec<(Option<&Json>, Option<&Json>, Vec<u8>)> = Vec::new();
    let mut json_text: Option<Vec<u8>> = None;
    if let Some(Json::Arr(blocks)) = msg.get("content") {
        for block in blocks {
            if !matches!(block, Json::Obj(_)) {
                continue;
            }
            match block.get("type") {
                Some(Json::Str(kind)) if kind == "text" => {
                    if let Some(Json::Str(text)) = block.get("text") {
                        texts.push(text);
                    }
                }
                Some(Json::Str(kind)) if kind == "thinking" => {
                    if let Some(Json::Str(text)) = block.get("thinking") {
                        thinking.push(text);
                    }
                }
                Some(Json::Str(kind)) if kind == "tool_use" => {
                    let mut args = Vec::new();
                    match block.get("input") {
                        Some(input) => input.write(&mut args),
                        None => args.extend_from_slice(b"{}"),
                    }
                    let name = block.get("name");
                    if let (Some(tool), Some(Json::Str(name))) = (json_tool, name) {
                        if tool == name {
                            json_text = Some(args);
                            continue;
                        }
                    }
                    calls.push((block.get("id"), name, args));
                }
                _ => {}
            }
        }
    }
    let stop_reason = match msg.get("stop_reason") {
        Some(Json::Str(s)) => Some(s.as_str()),
        _ => None,
    };
    let mut finish = finish_reason_for(stop_reason);
    let json_mode = json_text.is_some();
    if json_mode && calls.is_empty() && finish == "tool_calls" {
        finish = "stop";
    }
    out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":");
    if let Some(args) = &json_text {
        // the text is the arguments' JSON text, written as a JSON string
        let text = String::from_utf8_lossy(args);
        push_json_str(out, &text);
    } else if !texts.is_empty() || calls.is_empty() {
        out.push(b'"');
        for text in &texts {
            push_json_str_body(out, text);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b",\"refusal\":null");
    if !calls.is_empty() {
        out.extend_from_slice(b",\"tool_calls\":[");
        for (i, (id, name, args)) in calls.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"id\":");
            write_or_empty(out, *id);
            out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
            write_or_empty(out, *name);
            out.extend_from_slice(b",\"arguments\":");
            push_json_str(out, &String::from_utf8_lossy(args));
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
    }
    if !thinking.is_empty() {
        out.extend_from_slice(b",\"reasoning_content\":\"");
        for text in &thinking {
            push_json_str_body(out, text);
        }
        out.push(b'"');
    }
    out.push(b'}');
    finish
}

/// `block.get(key, "")` written as JSON.
fn write_or_empty(out: &mut Vec<u8>, value: Option<&Json>) {
    match value {
        Some(v) => v.write(out),
        None => out.extend_from_slice(b"\"\""),
    }
}

/// A count as the twin's `_count` reads it: an integer in `0..2**64` (orjson reads larger ones
/// as doubles, which are not counts), else 0.
fn count(value: Option<&Json>) -> u64 {
    match value {
        Some(Json::UInt(n)) => *n,
        Some(Json::Int(n)) if *n >= 0 => n.unsigned_abs(),
        _ => 0,
    }
}

/// `openai_usage(usage)`; `None` when a sum does not fit 64 bits.
fn write_usage(out: &mut Vec<u8>, usage: Option<&Json>) -> Option<()> {
    let u = match usage {
        Some(u @ Json::Obj(_)) => Some(u),
        _ => None,
    };
    let field = |name: &str| count(u.and_then(|u| u.get(name)));
    let uncached = field("input_tokens");
    let written = field("cache_creation_input_tokens");
    let read = field("cache_read_input_tokens");
    let output = field("output_tokens");
    let prompt = uncached.checked_add(written)?.checked_add(read)?;
    let total = prompt.checked_add(output)?;
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"prompt_tokens\":");
    out.extend_from_slice(n.format(prompt).as_bytes());
    out.extend_from_slice(b",\"completion_tokens\":");
    out.extend_from_slice(n.format(output).as_bytes());
    out.extend_from_slice(b",\"total_tokens\":");
    out.extend_from_slice(n.format(total).as_bytes());
    out.extend_from_slice(b",\"prompt_tokens_details\":{\"cached_tokens\":");
    out.extend_from_slice(n.format(read).as_bytes());
    out.extend_from_slice(b"},\"cache_creation_input_tokens\":");
    out.extend_from_slice(n.format(written).as_bytes());
    out.extend_from_slice(b",\"cache_read_input_tokens\":");
    out.extend_from_slice(n.format(read).as_bytes());
    out.push(b'}');
    Some(())
}

/// The usage tuple, read as `StreamTranslator` reads a `usage` object (absent or invalid
/// counts stay 0).
fn usage_counts(usage: Option<&Json>) -> [u64; 6] {
    let mut counts = [0u64; 6];
    let Some(u @ Json::Obj(_)) = usage else {
        return counts;
    };
    let names = [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    ];
    for (slot, name) in counts.iter_mut().zip(names) {
        *slot = count(u.get(name));
    }
    if let Some(c @ Json::Obj(_)) = u.get("cache_creation") {
        counts[4] = count(c.get("ephemeral_5m_input_tokens"));
        counts[5] = count(c.get("ephemeral_1h_input_tokens"));
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(raw: &str, json_tool: Option<&str>) -> String {
        let answer = to_openai(raw.as_bytes(), "gpt-x", 7, json_tool);
        String::from_utf8(answer.map(|a| a.body).unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn text_answer() {
        let raw = r#"{"id":"msg_1","content":[{"type":"text","text":"hi \"there\""}],
            "stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}"#;
        assert_eq!(
            body(raw, None),
            concat!(
                r#"{"id":"chatcmpl-msg_1","object":"chat.completion","created":7,"#,
                r#""model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","#,
                r#""content":"hi \"there\"","refusal":null},"finish_reason":"stop","#,
                r#""logprobs":null}],"usage":{"prompt_tokens":3,"completion_tokens":2,"#,
                r#""total_tokens":5,"prompt_tokens_details":{"cached_tokens":0},"#,
                r#""cache_creation_input_tokens":0,"cache_read_input_tokens":0}}"#
            )
        );
    }

    #[test]
    fn tool_calls_and_json_mode() {
        let raw = r#"{"content":[{"type":"tool_use","id":5,"name":"f","input":{"a":1.50}},
            {"type":"tool_use","name":"json_out","input":{"x":[true,null]}}],
            "stop_reason":"tool_use"}"#;
        let out = body(raw, Some("json_out"));
        assert!(out.contains(r#""content":"{\"x\":[true,null]}""#), "{out}");
        assert!(
            out.contains(r#""tool_calls":[{"id":5,"type":"function","#),
            "{out}"
        );
        assert!(out.contains(r#""arguments":"{\"a\":1.5}""#), "{out}");
        assert!(out.contains(r#""finish_reason":"tool_calls""#), "{out}");
    }

    #[test]
    fn not_an_object_or_too_large_usage() {
        assert!(to_openai(b"[1]", "m", 0, None).is_none());
        assert!(to_openai(b"{", "m", 0, None).is_none());
        let big = r#"{"usage":{"input_tokens":18446744073709551615,"output_tokens":1}}"#;
        assert!(to_openai(big.as_bytes(), "m", 0, None).is_none());
    }

    #[test]
    fn usage_of_a_relayed_answer() {
        let raw = br#"{"usage":{"input_tokens":2,"output_tokens":5,"cache_creation":[1]}}"#;
        assert_eq!(usage_of(raw), Some([2, 0, 0, 5, 0, 0]));
        assert_eq!(usage_of(b"[]"), None);
        assert_eq!(usage_of(b"{\"usage\":1}"), Some([0; 6]));
        assert_eq!(usage_of(b"{\"a\":\"\\ud800\"}"), None); // a lone surrogate
    }

    #[test]
    fn usage_counts_follow_the_stream_translator() {
        let raw = r#"{"usage":{"input_tokens":1,"cache_creation_input_tokens":9,
            "cache_read_input_tokens":3,"output_tokens":4,
            "cache_creation":{"ephemeral_5m_input_tokens":6,"ephemeral_1h_input_tokens":3}}}"#;
        let answer = to_openai(raw.as_bytes(), "m", 0, None);
        assert_eq!(answer.map(|a| a.usage), Some([1, 9, 3, 4, 6, 3]));
    }
}
