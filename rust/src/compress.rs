//! Prompt compression kernel (native twin of `ferrule._pure.compress`).
//!
//! The Python twin is the source of truth and documents the rules; this file follows it step by
//! step, in the same order and with the same names. Python counts sizes in code points, so every
//! size here is counted in `char`s too; every rule is about ASCII bytes, so scanning the UTF-8
//! bytes finds exactly what Python's `re` finds in the code points.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use aho_corasick::AhoCorasick;

use foldhash::fast::RandomState;
use memchr::{memchr, memchr2, memchr_iter, memmem};

pub const DEDUP_MIN_CHARS: usize = 200;
pub const DEFAULT_CUT_AT: i64 = 24_000;
pub const MIN_CUT_AT: usize = 1_000;
/// Room kept for one "[ferrule: N lines cut]" marker line in the cut budget (N < 10**12).
const MARKER_RESERVE: usize = 48;

const POINTER_HEAD: &str = "[ferrule: same as ";
const POINTER_TAIL: &str = " above]";

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// Lines kept from the middle of a cut output (ASCII case-insensitive substring match).
const IMPORTANT: [&[u8]; 11] = [
    b"error",
    b"exception",
    b"traceback",
    b"fail",
    b"fatal",
    b"panic",
    b"critical",
    b"assert",
    b"abort",
    b"segmentation fault",
    b"denied",
];
const TRACEBACK: &str = "Traceback (most recent call last)";

/// A bad argument; becomes a `ValueError` in Python, as in the twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompressError {
    Mode(String),
    Kind(String),
    CutAt(i64),
}

impl fmt::Display for CompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mode(m) => write!(
                f,
                "compression mode must be off, lossless or aggressive, not {m:?}"
            ),
            Self::Kind(k) => write!(f, "block kind must be tool_result, file or text, not {k:?}"),
            Self::CutAt(n) => write!(f, "cut_at must be at least {MIN_CUT_AT}, not {n}"),
        }
    }
}

impl std::error::Error for CompressError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Lossless,
    Aggressive,
}

impl Mode {
    pub fn parse(mode: &str) -> Result<Self, CompressError> {
        match mode {
            "off" => Ok(Self::Off),
            "lossless" => Ok(Self::Lossless),
            "aggressive" => Ok(Self::Aggressive),
            _ => Err(CompressError::Mode(mode.to_owned())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ToolResult,
    File,
    Text,
}

impl Kind {
    pub fn parse(kind: &str) -> Result<Self, CompressError> {
        match kind {
            "tool_result" => Ok(Self::ToolResult),
            "file" => Ok(Self::File),
            "text" => Ok(Self::Text),
            _ => Err(CompressError::Kind(kind.to_owned())),
        }
    }
}

/// Compress the content blocks of one request, in order.
#[derive(Debug)]
pub struct Compressor {
    mode: Mode,
    cut_at: usize,
    /// Compressed text -> ref of its first block.
    seen: HashMap<String, String, RandomState>,
}

impl Compressor {
    /// `mode` is "off", "lossless" or "aggressive"; `cut_at` (at least `MIN_CUT_AT`) is the size
    /// in characters above which aggressive mode cuts a tool output.
    pub fn new(mode: &str, cut_at: i64) -> Result<Self, CompressError> {
        let mode = Mode::parse(mode)?;
        let cut_at = match usize::try_from(cut_at) {
            Ok(n) if n >= MIN_CUT_AT => n,
            _ => return Err(CompressError::CutAt(cut_at)),
        };
        Ok(Self {
            mode,
            cut_at,
            seen: HashMap::default(),
        })
    }

    /// Whether `compress` returns every text as it is.
    pub fn is_off(&self) -> bool {
        self.mode == Mode::Off
    }

    /// The compressed text of the next block; `at` names this block in later pointers.
    pub fn compress<'a>(&mut self, text: &'a str, kind: Kind, at: &str) -> Cow<'a, str> {
        if self.mode == Mode::Off || is_pointer(text) {
            return Cow::Borrowed(text);
        }
        let mut owned: Option<String> = None;
        if kind != Kind::File && !is_listing(text) {
            owned = strip_ansi(text);
            if kind == Kind::ToolResult {
                if let Some(s) = clean_tool_output(owned.as_deref().unwrap_or(text)) {
                    owned = Some(s);
                }
                if self.mode == Mode::Aggressive {
                    if let Some(s) = aggressive(owned.as_deref().unwrap_or(text), self.cut_at) {
                        owned = Some(s);
                    }
                }
            }
            if owned.as_deref() == Some("") {
                return Cow::Borrowed(text); // never leave an empty block
            }
        }
        let out = owned.as_deref().unwrap_or(text);
        // chars <= bytes: most short blocks are ruled out without counting.
        if out.len() >= DEDUP_MIN_CHARS && chars(out) >= DEDUP_MIN_CHARS {
            match self.seen.get(out) {
                None => {
                    self.seen.insert(out.to_owned(), at.to_owned());
                }
                Some(first) => {
                    let pointer = format!("{POINTER_HEAD}{first}{POINTER_TAIL}");
                    if chars(&pointer) < chars(out) {
                        return Cow::Owned(pointer);
                    }
                }
            }
        }
        match owned {
            Some(s) => Cow::Owned(s),
            None => Cow::Borrowed(text),
        }
    }
}

/// Code points in `s` (Python's `len`).
fn chars(s: &str) -> usize {
    s.chars().count()
}

/// `text.split('\n')`, found with memchr (several times faster on short lines).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    memchr_iter(b'\n', text.as_bytes())
        .chain(std::iter::once(text.len()))
        .map(move |end| {
            let line = &text[start..end];
            start = end + 1;
            line
        })
}

fn is_pointer(text: &str) -> bool {
    text.starts_with(POINTER_HEAD)
        && text.ends_with(POINTER_TAIL)
        && memchr(b'\n', text.as_bytes()).is_none()
}

// -- recognising file listings ----------------------------------------------------------------

/// The number of a listing line: spaces, 1-9 digits, then ":", TAB, "→", "|" or " |".
fn line_number(line: &[u8]) -> Option<i64> {
    let mut i = 0;
    while i < line.len() && line[i] == b' ' {
        i += 1;
    }
    let start = i;
    while i < line.len() && line[i].is_ascii_digit() {
        i += 1;
    }
    if i == start || i - start > 9 {
        return None;
    }
    let rest = &line[i..];
    let separated = matches!(rest.first(), Some(b':' | b'\t' | b'|'))
        || rest.starts_with("→".as_bytes())
        || rest.starts_with(b" |");
    if !separated {
        return None;
    }
    Some(
        line[start..i]
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0')),
    )
}

/// Three consecutive lines numbered n, n+1, n+2.
fn is_listing(text: &str) -> bool {
    let b = text.as_bytes();
    let (mut run, mut prev_line, mut prev_num) = (0, -2i64, -2i64);
    let starts = std::iter::once(0).chain(memchr_iter(b'\n', b).map(|i| i + 1));
    for (line, start) in (0i64..).zip(starts) {
        let Some(num) = line_number(&b[start..]) else {
            continue;
        };
        run = if line == prev_line + 1 && num == prev_num + 1 {
            run + 1
        } else {
            1
        };
        if run >= 3 {
            return true;
        }
        (prev_line, prev_num) = (line, num);
    }
    false
}

// -- lossless ---------------------------------------------------------------------------------

/// Length of the escape sequence at `at` (an ESC): a CSI, an OSC/DCS/SOS/PM/APC string ended by
/// BEL or ST on the same line, intermediates and a final byte, else the ESC alone. The three are
/// tried in this order, as the alternatives of the twin's regular expression.
fn escape_len(b: &[u8], at: usize) -> usize {
    let n = b.len();
    let j = at + 1;
    if j < n && b[j] == b'[' {
        let mut k = j + 1;
        while k < n && (0x30..=0x3f).contains(&b[k]) {
            k += 1;
        }
        while k < n && (0x20..=0x2f).contains(&b[k]) {
            k += 1;
        }
        if k < n && (0x40..=0x7e).contains(&b[k]) {
            return k + 1 - at;
        }
    }
    if j < n && matches!(b[j], b']' | b'P' | b'X' | b'^' | b'_') {
        let mut k = j + 1;
        while k < n && !matches!(b[k], BEL | ESC | b'\n') {
            k += 1;
        }
        if k < n && b[k] == BEL {
            return k + 1 - at;
        }
        if k + 1 < n && b[k] == ESC && b[k + 1] == b'\\' {
            return k + 2 - at;
        }
    }
    let mut k = j;
    while k < n && (0x20..=0x2f).contains(&b[k]) {
        k += 1;
    }
    if k < n && (0x30..=0x7e).contains(&b[k]) {
        return k + 1 - at;
    }
    1
}

fn strip_ansi(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let first = memchr(ESC, b)?;
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut at = first;
    loop {
        // Every cut is at an ESC or just after an ASCII byte: always a char boundary.
        out.push_str(&text[last..at]);
        last = at + escape_len(b, at);
        match memchr(ESC, &b[last..]) {
            Some(next) => at = last + next,
            None => break,
        }
    }
    out.push_str(&text[last..]);
    Some(out)
}

fn clean_tool_output(text: &str) -> Option<String> {
    if let Some(minified) = minify_json(text) {
        return minified;
    }
    let b = text.as_bytes();
    let has_cr = memchr(b'\r', b).is_some();
    let dirty = has_cr
        || b.first() == Some(&b'\n')
        || matches!(b.last(), Some(b' ' | b'\t' | b'\n'))
        || memmem::find(b, b" \n").is_some()
        || memmem::find(b, b"\t\n").is_some()
        || memmem::find(b, b"\n\n\n").is_some();
    if !dirty {
        return None; // no carriage return, trailing blank or blank run: nothing to do
    }
    let mut out = String::with_capacity(text.len());
    let (mut any, mut blank) = (false, false);
    for line in lines(text) {
        let line = if has_cr && memchr(b'\r', line.as_bytes()).is_some() {
            final_segment(line)
        } else {
            line
        };
        let line = line.trim_end_matches([' ', '\t']);
        if line.is_empty() {
            blank = any;
            continue;
        }
        if any {
            out.push('\n');
            if blank {
                out.push('\n');
            }
        }
        out.push_str(line);
        (any, blank) = (true, false);
    }
    if out == text {
        return None;
    }
    match minify_json(&out) {
        Some(Some(minified)) => Some(minified),
        _ => Some(out),
    }
}

/// What a terminal shows of a line redrawn with carriage returns: the last non-empty part.
fn final_segment(line: &str) -> &str {
    line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("")
}

/// What the next JSON token may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Value,
    ValueOrClose,
    Key,
    KeyOrClose,
    Colon,
    CommaOrClose,
    End,
}

fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// End of the string token starting at `at` (a quote), if it is a valid JSON string.
fn json_string_end(b: &[u8], at: usize) -> Option<usize> {
    let mut k = at + 1;
    loop {
        // Jump to the next quote or backslash; nothing before it may be a control character.
        let skip = memchr2(b'"', b'\\', b.get(k..)?)?;
        if b[k..k + skip].iter().any(|&c| c < 0x20) {
            return None;
        }
        k += skip;
        if b[k] == b'"' {
            return Some(k + 1);
        }
        // A backslash: one of the escapes JSON allows.
        match *b.get(k + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => k += 2,
            b'u' => {
                let hex = b.get(k + 2..k + 6)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                k += 6;
            }
            _ => return None,
        }
    }
}

/// End of the number token starting at `at`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn json_number_end(b: &[u8], at: usize) -> Option<usize> {
    let digit = |k: usize| b.get(k).is_some_and(u8::is_ascii_digit);
    let mut k = at;
    if b.get(k) == Some(&b'-') {
        k += 1;
    }
    match b.get(k) {
        Some(b'0') => k += 1,
        Some(b'1'..=b'9') => {
            while digit(k) {
                k += 1;
            }
        }
        _ => return None,
    }
    if b.get(k) == Some(&b'.') && digit(k + 1) {
        k += 1;
        while digit(k) {
            k += 1;
        }
    }
    if matches!(b.get(k), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(k + 1), Some(b'+' | b'-')));
        if digit(k + 1 + sign) {
            k += 1 + sign;
            while digit(k) {
                k += 1;
            }
        }
    }
    Some(k)
}

/// `Some(out)` when `text` is a JSON array or object: `Some(None)` if it has no whitespace
/// outside strings, else `Some(Some(text without it))`. `None` when it is not JSON.
///
/// A strict RFC 8259 check over the source text: tokens are copied as they are spelled.
fn minify_json(text: &str) -> Option<Option<String>> {
    let b = text.as_bytes();
    let n = b.len();
    let first = b.iter().position(|&c| !is_json_ws(c))?;
    if b[first] != b'{' && b[first] != b'[' {
        return None;
    }
    // Tokens are copied in spans: from the end of one whitespace run to the start of the next.
    let mut out = String::new();
    let mut span = first;
    let mut stack: Vec<u8> = Vec::new();
    let mut state = Expect::Value;
    let mut i = first;
    let mut last = first; // end of the last token
    loop {
        if i < n && is_json_ws(b[i]) {
            if span < i {
                if out.capacity() == 0 {
                    out.reserve(n);
                }
                out.push_str(&text[span..i]);
            }
            while i < n && is_json_ws(b[i]) {
                i += 1;
            }
            span = i;
        }
        if i == n {
            break;
        }
        let done = |stack: &[u8]| {
            if stack.is_empty() {
                Expect::End
            } else {
                Expect::CommaOrClose
            }
        };
        let value_ok = matches!(state, Expect::Value | Expect::ValueOrClose);
        let end = match b[i] {
            b'"' => {
                let end = json_string_end(b, i)?;
                state = if value_ok {
                    done(&stack)
                } else if matches!(state, Expect::Key | Expect::KeyOrClose) {
                    Expect::Colon
                } else {
                    return None;
                };
                end
            }
            c @ (b'{' | b'[') => {
                if !value_ok {
                    return None;
                }
                stack.push(c);
                state = if c == b'{' {
                    Expect::KeyOrClose
                } else {
                    Expect::ValueOrClose
                };
                i + 1
            }
            b'}' => {
                if !matches!(state, Expect::KeyOrClose | Expect::CommaOrClose)
                    || stack.pop() != Some(b'{')
                {
                    return None;
                }
                state = done(&stack);
                i + 1
            }
            b']' => {
                if !matches!(state, Expect::ValueOrClose | Expect::CommaOrClose)
                    || stack.pop() != Some(b'[')
                {
                    return None;
                }
                state = done(&stack);
                i + 1
            }
            b',' => {
                if state != Expect::CommaOrClose {
                    return None;
                }
                state = if stack.last() == Some(&b'{') {
                    Expect::Key
                } else {
                    Expect::Value
                };
                i + 1
            }
            b':' => {
                if state != Expect::Colon {
                    return None;
                }
                state = Expect::Value;
                i + 1
            }
            _ => {
                let end = if b[i..].starts_with(b"true") {
                    i + 4
                } else if b[i..].starts_with(b"false") {
                    i + 5
                } else if b[i..].starts_with(b"null") {
                    i + 4
                } else {
                    json_number_end(b, i)?
                };
                if !value_ok {
                    return None;
                }
                state = done(&stack);
                end
            }
        };
        i = end;
        last = end;
    }
    if state != Expect::End {
        return None;
    }
    if first == 0 && last == n && out.is_empty() {
        return Some(None); // no whitespace outside strings
    }
    if span < last {
        out.push_str(&text[span..last]);
    }
    Some(Some(out))
}

// -- aggressive ---------------------------------------------------------------------------------

fn aggressive(text: &str, cut_at: usize) -> Option<String> {
    let long = text.len() > cut_at && chars(text) > cut_at;
    if !long && !has_run(text) {
        return None; // nothing to cut and no run to collapse (the common case, found fast)
    }
    let mut split: Vec<Cow<'_, str>> = lines(text).map(Cow::Borrowed).collect();
    if long {
        split = split.into_iter().map(|l| cap_line(l, cut_at)).collect();
    }
    let lines = collapse_runs(split);
    let mut out = lines.join("\n");
    if chars(&out) > cut_at {
        out = cut(&lines, cut_at).join("\n");
    }
    if out == text {
        return None;
    }
    // A cut inside a long JSON string can leave valid JSON.
    match minify_json(&out) {
        Some(Some(minified)) => Some(minified),
        _ => Some(out),
    }
}

/// Three identical non-empty lines in a row (what `collapse_runs` may collapse).
fn has_run(text: &str) -> bool {
    let (mut prev, mut count) = ("", 0);
    for line in lines(text) {
        if line == prev && !line.is_empty() {
            count += 1;
            if count >= 3 {
                return true;
            }
        } else {
            (prev, count) = (line, 1);
        }
    }
    false
}

/// A line longer than cut_at/6 keeps its first cut_at/10 and last cut_at/24 characters.
fn cap_line(line: Cow<'_, str>, cut_at: usize) -> Cow<'_, str> {
    let len = chars(&line);
    if len <= cut_at / 6 {
        return line;
    }
    let (head, tail) = (cut_at / 10, cut_at / 24);
    let byte_at = |c: usize| line.char_indices().nth(c).map_or(line.len(), |(i, _)| i);
    let (head_end, tail_start) = (byte_at(head), byte_at(len - tail));
    Cow::Owned(format!(
        "{} [ferrule: {} chars cut] {}",
        &line[..head_end],
        len - head - tail,
        &line[tail_start..]
    ))
}

/// Runs of 3+ identical non-empty lines become the line and a count, while that is shorter;
/// repeated until nothing changes.
fn collapse_runs(mut lines: Vec<Cow<'_, str>>) -> Vec<Cow<'_, str>> {
    loop {
        let mut out: Vec<Cow<'_, str>> = Vec::with_capacity(lines.len());
        let mut changed = false;
        let mut rest = lines.into_iter().peekable();
        while let Some(line) = rest.next() {
            let mut count = 1;
            while rest.peek() == Some(&line) {
                rest.next();
                count += 1;
            }
            if count >= 3 && !line.is_empty() {
                let marker = format!("[ferrule: previous line repeated {} more times]", count - 1);
                let len = chars(&line);
                if len + 1 + marker.len() < count * (len + 1) - 1 {
                    out.push(line);
                    out.push(Cow::Owned(marker));
                    changed = true;
                    continue;
                }
            }
            for _ in 1..count {
                out.push(line.clone());
            }
            out.push(line);
        }
        if !changed || !out.windows(3).any(|w| w[0] == w[1] && w[1] == w[2]) {
            return out;
        }
        lines = out;
    }
}

/// The error keywords, ASCII case-insensitive (as the twin's `re.I | re.A`).
static KEYWORDS: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(IMPORTANT)
        .ok()
});

/// Error lines, and every line of a Python traceback up to its exception line.
fn important(lines: &[Cow<'_, str>]) -> Vec<bool> {
    let keywords = KEYWORDS.as_ref();
    let mut in_traceback = false;
    let mut flags = Vec::with_capacity(lines.len());
    for line in lines {
        flags.push(in_traceback || keywords.is_some_and(|k| k.is_match(line.as_bytes())));
        if line.contains(TRACEBACK) {
            in_traceback = true;
        } else if in_traceback && !line.starts_with([' ', '\t']) {
            in_traceback = false;
        }
    }
    flags
}

/// A head and a tail of cut_at/4 characters each, with up to cut_at/3 characters of important
/// lines (markers included) from between them; a marker counts each cut run of lines.
fn cut<'a>(lines: &[Cow<'a, str>], cut_at: usize) -> Vec<Cow<'a, str>> {
    let sizes: Vec<usize> = lines.iter().map(|l| chars(l) + 1).collect();
    let n = lines.len();
    let mut budget = cut_at / 4;
    let mut head = 0;
    while head < n && sizes[head] <= budget {
        budget -= sizes[head];
        head += 1;
    }
    budget = cut_at / 4;
    let mut tail = n;
    while tail > head && sizes[tail - 1] <= budget {
        budget -= sizes[tail - 1];
        tail -= 1;
    }
    if tail <= head {
        return lines.to_vec();
    }
    let flags = important(lines);
    let mut out: Vec<Cow<'a, str>> = lines[..head].to_vec();
    let mut budget = cut_at / 3 - MARKER_RESERVE; // the last gap's marker is paid for up front
    let mut next = head; // index after the last line kept
    for i in head..tail {
        if !flags[i] {
            continue;
        }
        let gap = i - next;
        let cost = sizes[i] + if gap > 0 { MARKER_RESERVE } else { 0 };
        if cost > budget {
            continue;
        }
        budget -= cost;
        if gap > 0 {
            out.push(Cow::Owned(format!("[ferrule: {gap} lines cut]")));
        }
        out.push(lines[i].clone());
        next = i + 1;
    }
    let gap = tail - next;
    if gap > 0 {
        out.push(Cow::Owned(format!("[ferrule: {gap} lines cut]")));
    }
    out.extend(lines[tail..].iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: &str, blocks: &[(&str, Kind)]) -> Vec<String> {
        let Ok(mut c) = Compressor::new(mode, DEFAULT_CUT_AT) else {
            panic!("bad mode {mode}");
        };
        blocks
            .iter()
            .enumerate()
            .map(|(i, (t, k))| c.compress(t, *k, &format!("block {}", i + 1)).into_owned())
            .collect()
    }

    fn one(mode: &str, text: &str, kind: Kind) -> String {
        run(mode, &[(text, kind)]).remove(0)
    }

    #[test]
    fn ansi_sequences() {
        let cases = [
            ("\x1b[1;31mred\x1b[0m", "red"),
            ("a\x1b]0;title\x07b", "ab"),
            ("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b", "alinkb"),
            ("a\x1b(Bb", "ab"),
            ("a\x1b[12", "a12"), // unterminated CSI: "ESC [" goes as a 2-byte escape
            ("a\x1b]0;t\nb", "a0;t\nb"), // OSC across a line: "ESC ]" alone
            ("a\x1b\x1b[0mb", "ab"),
            ("a\x1b", "a"),
            ("a\x1b !b", "a"), // intermediates then a final byte
            ("a\x1b \x01b", "a \x01b"),
            ("é\x1b[32mü", "éü"),
        ];
        for (input, want) in cases {
            assert_eq!(
                strip_ansi(input).as_deref().unwrap_or(input),
                want,
                "{input:?}"
            );
        }
        assert_eq!(strip_ansi("plain"), None);
    }

    #[test]
    fn carriage_returns_and_whitespace() {
        let out = one(
            "lossless",
            "\n\nstart  \n 10%\r 50%\r100%\r\nx\t\n\n\n\ny\r\n\r\n",
            Kind::ToolResult,
        );
        assert_eq!(out, "start\n100%\nx\n\ny");
    }

    #[test]
    fn json_minified_as_spelled() {
        let text = "{ \"b\" : [1 , 2.50e+3, -0, 123456789012345678901234567890],\n \"a\": \"x \\u00e9\\n\" }\n";
        assert_eq!(
            one("lossless", text, Kind::ToolResult),
            "{\"b\":[1,2.50e+3,-0,123456789012345678901234567890],\"a\":\"x \\u00e9\\n\"}"
        );
        for bad in [
            "[1,]",
            "{\"a\" 1}",
            "[01]",
            "[1.]",
            "{\"a\":tru}",
            "[\"\t\"]",
            "[1] x",
        ] {
            assert_eq!(minify_json(bad), None, "{bad}");
        }
        assert_eq!(minify_json("[1,2]"), Some(None));
        assert_eq!(minify_json("\"str\""), None); // only arrays and objects
    }

    #[test]
    fn files_and_listings_kept() {
        let file = "def f():  \n\n\n\treturn 1   \n";
        assert_eq!(one("aggressive", file, Kind::File), file);
        let listing = "     1\tdef f():  \n     2\t\n     3\t    return 1  \n";
        assert_eq!(one("aggressive", listing, Kind::ToolResult), listing);
        let swe = "[File: a.py]\n10:x  \n11:y  \n12:z  \n";
        assert_eq!(one("lossless", swe, Kind::Text), swe);
        let times = "12:00:01 a  \n12:00:02 b  \n12:00:03 c  \n";
        assert_eq!(
            one("lossless", times, Kind::ToolResult),
            "12:00:01 a\n12:00:02 b\n12:00:03 c"
        );
    }

    #[test]
    fn text_only_loses_escapes() {
        assert_eq!(
            one("lossless", "a  \r\n\x1b[1mb\x1b[0m\n\n\n", Kind::Text),
            "a  \r\nb\n\n\n"
        );
    }

    #[test]
    fn never_empty() {
        assert_eq!(one("lossless", " \n\t\n", Kind::ToolResult), " \n\t\n");
        assert_eq!(one("lossless", "\x1b[0m", Kind::Text), "\x1b[0m");
    }

    #[test]
    fn dedup_points_backwards() {
        let long = "x".repeat(300);
        let out = run(
            "lossless",
            &[
                (&long, Kind::ToolResult),
                (&long, Kind::File),
                (&format!("{long}\n\n"), Kind::ToolResult),
                ("short", Kind::Text),
                ("short", Kind::Text),
            ],
        );
        assert_eq!(out[0], long);
        assert_eq!(out[1], "[ferrule: same as block 1 above]");
        assert_eq!(out[2], "[ferrule: same as block 1 above]");
        assert_eq!(out[4], "short");
        assert_eq!(one("lossless", &out[1], Kind::ToolResult), out[1]);
    }

    #[test]
    fn off_changes_nothing() {
        let long = "x  \n".repeat(100);
        assert_eq!(
            run(
                "off",
                &[(&long, Kind::ToolResult), (&long, Kind::ToolResult)]
            ),
            [long.clone(), long]
        );
    }

    #[test]
    fn bad_arguments() {
        assert!(matches!(
            Compressor::new("max", DEFAULT_CUT_AT),
            Err(CompressError::Mode(_))
        ));
        assert!(matches!(
            Compressor::new("off", 999),
            Err(CompressError::CutAt(999))
        ));
        assert!(matches!(Kind::parse("image"), Err(CompressError::Kind(_))));
    }

    #[test]
    fn aggressive_collapses_and_cuts() {
        let line = "GET /health 200 0.4ms from 10.0.0.7";
        let runs = format!("start\n{}end", format!("{line}\n").repeat(5));
        assert_eq!(
            one("aggressive", &runs, Kind::ToolResult),
            format!("start\n{line}\n[ferrule: previous line repeated 4 more times]\nend")
        );
        let short = "start\nok\nok\nok\nok\nend"; // the marker would be longer
        assert_eq!(one("aggressive", short, Kind::ToolResult), short);
        let mut log: Vec<String> = (0..3000).map(|i| format!("line {i} ok")).collect();
        log[1500] = "Traceback (most recent call last):".into();
        log[1501] = "  File \"x.py\", line 1".into();
        log[1502] = "KeyError: 'k'".into();
        let text = log.join("\n");
        let out = one("aggressive", &text, Kind::ToolResult);
        assert!(chars(&out) <= 24_000);
        assert!(out.contains("\n[ferrule: "));
        assert!(out.contains(
            "Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'k'\n"
        ));
        assert!(out.starts_with("line 0 ok\n") && out.ends_with("line 2999 ok"));
        assert_eq!(one("aggressive", &out, Kind::ToolResult), out);
        let long_line = "é".repeat(50_000);
        let capped = one("aggressive", &long_line, Kind::ToolResult);
        assert_eq!(
            capped,
            format!(
                "{} [ferrule: 46600 chars cut] {}",
                "é".repeat(2400),
                "é".repeat(1000)
            )
        );
    }
}
