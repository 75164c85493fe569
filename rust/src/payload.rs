//! The JSON payload of one Anthropic event, read the way the Python twin reads it: the native
//! side of `orjson.loads(data)` followed by `obj.get(key)` and `isinstance` checks.
//!
//! Two things must agree with orjson exactly:
//! - which documents are valid: the whole document is validated, ignored fields included (lone
//!   surrogates in any string, numbers too large for a double, more than 1024 nested containers
//!   are errors there too); duplicate keys are fine and the last one wins;
//! - what each kept field holds: a field of the wrong JSON type reads as absent, as the twin's
//!   `isinstance` check would; a count is an integer in `0..2**64` as orjson would produce it
//!   (so `-0` is the count 0, while `1.0`, `true` and `18446744073709551616` are not counts).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// orjson accepts 1024 nested arrays/objects and rejects 1025.
const MAX_DEPTH: usize = 1024;

/// The document is not valid JSON as orjson sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// Parse one event's data: `Ok(None)` for valid JSON that is not an object.
pub fn parse(data: &str) -> Result<Option<Payload<'_>>, Invalid> {
    from_str(data, MAX_DEPTH, ObjSeed::<Payload<'_>>::new(1)).map(|obj| obj.0)
}

/// The fields of an event object that some event type uses (`obj.get(...)` in the twin).
#[derive(Debug, Default)]
pub struct Payload<'a> {
    pub index: Option<u64>,
    pub message: Option<Message<'a>>,
    pub content_block: Option<Block<'a>>,
    pub delta: Option<Delta<'a>>,
    pub usage: Option<Usage>,
    pub error: Option<ErrorBody<'a>>,
}

/// `message_start.message`.
#[derive(Debug, Default)]
pub struct Message<'a> {
    pub id: Option<Cow<'a, str>>,
    pub usage: Option<Usage>,
}

/// `content_block_start.content_block`.
#[derive(Debug, Default)]
pub struct Block<'a> {
    pub kind: Option<Cow<'a, str>>,
    pub id: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
    /// A `redacted_thinking` block's `data`, whatever its JSON type (`None` when absent).
    pub data: Option<Json>,
}

/// `content_block_delta.delta` and `message_delta.delta`.
#[derive(Debug, Default)]
pub struct Delta<'a> {
    pub kind: Option<Cow<'a, str>>,
    pub text: Option<Cow<'a, str>>,
    pub thinking: Option<Cow<'a, str>>,
    pub partial_json: Option<Cow<'a, str>>,
    pub stop_reason: Option<Cow<'a, str>>,
    pub signature: Option<Cow<'a, str>>,
    pub citation: Option<Citation<'a>>,
}

/// `citations_delta.citation`: the fields a `url_citation` annotation takes.
#[derive(Debug, Default)]
pub struct Citation<'a> {
    pub kind: Option<Cow<'a, str>>,
    pub url: Option<Cow<'a, str>>,
    pub title: Option<Cow<'a, str>>,
}

/// A `usage` object: each count is `None` when absent or not a count.
#[derive(Debug, Default)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_creation: Option<CacheCreation>,
}

/// `usage.cache_creation`.
#[derive(Debug, Default)]
pub struct CacheCreation {
    pub ephemeral_5m_input_tokens: Option<u64>,
    pub ephemeral_1h_input_tokens: Option<u64>,
}

/// The `error` object of an `error` event.
#[derive(Debug, Default)]
pub struct ErrorBody<'a> {
    pub kind: Option<Cow<'a, str>>,
    pub message: Option<Cow<'a, str>>,
}

/// Any JSON value as orjson loads it and dumps it again: objects keep their first key's place
/// with the last duplicate's value (a Python dict), integers stay exact in `-2**63..2**64`,
/// larger ones become doubles (as orjson reads them).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// `value.get(key)` on an object (`None` for other types or a missing key).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Self::Obj(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// `orjson.dumps(value)`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Null => out.extend_from_slice(b"null"),
            Self::Bool(true) => out.extend_from_slice(b"true"),
            Self::Bool(false) => out.extend_from_slice(b"false"),
            Self::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Self::UInt(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Self::Float(f) => push_float(out, *f),
            Self::Str(s) => crate::stream::push_json_str(out, s),
            Self::Arr(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Self::Obj(pairs) => {
                out.push(b'{');
                for (i, (key, value)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    crate::stream::push_json_str(out, key);
                    out.push(b':');
                    value.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// A finite double as orjson writes it: the shortest digits that read back the same, plain
/// between `1e-5` and `1e16` (with `.0` on a whole number), else `d.ddde+X` / `d.ddde-X`.
pub fn push_float(out: &mut Vec<u8>, f: f64) {
    let sci = format!("{f:e}"); // shortest round-trip digits, e.g. "-1.25e-7", "1e16", "0e0"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if negative {
        out.push(b'-');
    }
    if digits == "0" {
        out.extend_from_slice(b"0.0");
        return;
    }
    let digits = digits.as_bytes();
    if (-5..16).contains(&exp) {
        if exp >= 0 {
            let whole = exp as usize + 1;
            if digits.len() <= whole {
                out.extend_from_slice(digits);
                out.resize(out.len() + whole - digits.len(), b'0');
                out.extend_from_slice(b".0");
            } else {
                out.extend_from_slice(&digits[..whole]);
                out.push(b'.');
                out.extend_from_slice(&digits[whole..]);
            }
        } else {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + (-exp - 1) as usize, b'0');
            out.extend_from_slice(digits);
        }
    } else {
        out.extend_from_slice(&digits[..1]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.extend_from_slice(if exp < 0 { b"e-" } else { b"e+" });
        out.extend_from_slice(itoa::Buffer::new().format(exp.unsigned_abs()).as_bytes());
    }
}

/// `orjson.loads(text)` for any JSON document.
pub fn parse_json(text: &str) -> Result<Json, Invalid> {
    match int_negative_zeros(text) {
        Some(fixed) => from_str(&fixed, MAX_DEPTH, PhantomData::<Json>),
        None => from_str(text, MAX_DEPTH, PhantomData::<Json>),
    }
}

/// `text` with each integer literal `-0` spelled ` 0`, or `None` when it has none. orjson reads
/// `-0` as the int 0 but serde_json as the double -0.0, which would print as `-0.0`.
fn int_negative_zeros(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    memchr::memmem::find(bytes, b"-0")?;
    let mut fixed: Option<Vec<u8>> = None;
    let mut i = 0;
    // Outside strings, jump from quote to minus sign; inside, from quote to backslash (the
    // byte after a backslash is skipped): a text-heavy document is crossed in long strides.
    while let Some(off) = memchr::memchr2(b'"', b'-', &bytes[i..]) {
        i += off;
        if bytes[i] == b'"' {
            i += 1;
            loop {
                match memchr::memchr2(b'"', b'\\', &bytes[i.min(bytes.len())..]) {
                    None => return fixed.and_then(|f| String::from_utf8(f).ok()),
                    Some(off) if bytes[i + off] == b'\\' => i += off + 2,
                    Some(off) => {
                        i += off + 1;
                        break;
                    }
                }
            }
            continue;
        }
        if bytes.get(i + 1) == Some(&b'0')
            && !matches!(bytes.get(i + 2), Some(b'0'..=b'9' | b'.' | b'e' | b'E'))
            && !matches!(
                i.checked_sub(1).and_then(|j| bytes.get(j)),
                Some(b'e' | b'E')
            )
        {
            fixed.get_or_insert_with(|| bytes.to_vec())[i] = b' ';
        }
        i += 1;
    }
    // Only ASCII bytes outside strings were changed: still UTF-8.
    fixed.and_then(|f| String::from_utf8(f).ok())
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Int(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::UInt(n))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Json, E> {
        Ok(Json::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::Str(s))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Json>()? {
            items.push(item);
        }
        Ok(Json::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut pairs: Vec<(String, Json)> = Vec::new();
        // Duplicates are looked for by scanning while the object is small, through an index
        // once it is not: a scan per key would make an object of n keys cost n^2.
        let mut index: Option<foldhash::HashMap<String, usize>> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let value = map.next_value::<Json>()?;
            let found = match &index {
                Some(ix) => ix.get(key.0.as_ref()).copied(),
                None => pairs.iter().position(|(k, _)| *k == key.0),
            };
            match found {
                Some(i) => pairs[i].1 = value, // a dict: the first place, the last value
                None => {
                    if let Some(ix) = &mut index {
                        ix.insert(key.0.to_string(), pairs.len());
                    }
                    pairs.push((key.0.into_owned(), value));
                    if index.is_none() && pairs.len() > 32 {
                        index = Some(
                            pairs
                                .iter()
                                .enumerate()
                                .map(|(i, (k, _))| (k.clone(), i))
                                .collect(),
                        );
                    }
                }
            }
        }
        Ok(Json::Obj(pairs))
    }
}

// -- parsing ------------------------------------------------------------------------------------

/// Parse a whole document that may nest `allowed` containers deep. serde_json's own nesting
/// limit (128) is kept on the fast path; a document it rejects is parsed again without it when
/// it nests no deeper than allowed.
fn from_str<'a, S>(s: &'a str, allowed: usize, seed: S) -> Result<S::Value, Invalid>
where
    S: DeserializeSeed<'a> + Copy,
{
    match parse_with_limit(s, true, seed) {
        Ok(value) => Ok(value),
        Err(_) if max_depth(s) <= allowed => parse_with_limit(s, false, seed).map_err(|_| Invalid),
        Err(_) => Err(Invalid),
    }
}

fn parse_with_limit<'a, S>(s: &'a str, limited: bool, seed: S) -> serde_json::Result<S::Value>
where
    S: DeserializeSeed<'a>,
{
    let mut de = serde_json::Deserializer::from_str(s);
    if !limited {
        de.disable_recursion_limit();
    }
    let value = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// The deepest nesting of arrays and objects in `s` (exact for valid JSON; any number for
/// invalid JSON, which is rejected either way).
fn max_depth(s: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in s.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A count as the twin's `_count` sees it, from the number's source text; the value sits in an
/// object nested `parent` deep.
fn count_from_raw<E: de::Error>(raw: &RawValue, parent: usize) -> Result<Option<u64>, E> {
    let text = raw.get();
    if text == "-0" {
        return Ok(Some(0)); // orjson reads `-0` as the int 0
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<u64>() {
            return Ok(Some(n));
        }
    }
    // Not a count. The raw value was only checked for syntax: validate it as orjson would
    // (an integer too large for a double, a lone surrogate in a string, ...).
    from_str(text, MAX_DEPTH.saturating_sub(parent), PhantomData::<Skip>)
        .map(|_| None)
        .map_err(|_| E::custom("invalid value"))
}

/// Any JSON value, validated and dropped. Unlike `serde::de::IgnoredAny`, strings are decoded
/// (so lone surrogates are errors, as in orjson) and numbers are range-checked.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// A string field: `None` for any other JSON type (still validated).
#[derive(Default)]
struct Str<'a>(Option<Cow<'a, str>>);

/// An object field: `None` for any other JSON type (still validated).
struct Obj<T>(Option<T>);

/// An object type read key by key; duplicate keys overwrite, so the last one wins.
trait Fields<'de>: Default {
    /// Read the value of `key` in an object nested `depth` deep (every key must consume its
    /// value).
    fn field<A>(&mut self, key: &str, map: &mut A, depth: usize) -> Result<(), A::Error>
    where
        A: MapAccess<'de>;
}

/// Reads an `Obj<T>` nested `depth` deep (the top-level object is at depth 1).
struct ObjSeed<T> {
    depth: usize,
    kind: PhantomData<T>,
}

impl<T> ObjSeed<T> {
    fn new(depth: usize) -> Self {
        Self {
            depth,
            kind: PhantomData,
        }
    }
}

impl<T> Clone for ObjSeed<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ObjSeed<T> {}

/// Reads a count field (`_count(obj.get(key))` in the twin) of an object nested `parent` deep.
#[derive(Clone, Copy)]
struct CountSeed {
    parent: usize,
}

/// A map key, borrowed from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(StrVisitor)
            .map(|s| Key(s.0.unwrap_or_default()))
    }
}

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrVisitor)
    }
}

impl<'de> DeserializeSeed<'de> for CountSeed {
    type Value = Option<u64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        count_from_raw(raw, self.parent)
    }
}

impl<'de, T: Fields<'de>> DeserializeSeed<'de> for ObjSeed<T> {
    type Value = Obj<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(ObjVisitor(self))
    }
}

/// Visitor methods for the JSON types a lenient field does not keep: validate, keep nothing.
macro_rules! drop_other_types {
    () => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            SkipVisitor.visit_seq(seq).map(|_| Default::default())
        }
    };
}

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Str(Some(Cow::Borrowed(s))))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Str(Some(Cow::Owned(s.to_owned()))))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Str(Some(Cow::Owned(s))))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_map(map).map(|_| Str(None))
    }
    drop_other_types!();
}

struct ObjVisitor<T>(ObjSeed<T>);

impl<'de, T: Fields<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Obj(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut value = T::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            value.field(&key.0, &mut map, self.0.depth)?;
        }
        Ok(Obj(Some(value)))
    }
    drop_other_types!();
}

fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<Skip>().map(|_| ())
}

fn string<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    map.next_value::<Str<'de>>().map(|s| s.0)
}

fn count<'de, A: MapAccess<'de>>(map: &mut A, depth: usize) -> Result<Option<u64>, A::Error> {
    map.next_value_seed(CountSeed { parent: depth })
}

fn object<'de, T, A>(map: &mut A, depth: usize) -> Result<Option<T>, A::Error>
where
    T: Fields<'de>,
    A: MapAccess<'de>,
{
    map.next_value_seed(ObjSeed::<T>::new(depth + 1))
        .map(|o| o.0)
}

impl<'de> Fields<'de> for Payload<'de> {
    fn field<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        depth: usize,
    ) -> Result<(), A::Error> {
        match key {
            "index" => self.index = count(map, depth)?,
            "message" => self.message = object(map, depth)?,
            "content_block" => self.content_block = object(map, depth)?,
            "delta" => self.delta = object(map, depth)?,
            "usage" => self.usage = object(map, depth)?,
            "error" => self.error = object(map, depth)?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for Message<'de> {
    fn field<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        depth: usize,
    ) -> Result<(), A::Error> {
        match key {
            "id" => self.id = string(map)?,
            "usage" => self.usage = object(map, depth)?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for Block<'de> {
    fn field<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        _depth: usize,
    ) -> Result<(), A::Error> {
        match key {
            "type" => self.kind = string(map)?,
            "id" => self.id = string(map)?,
            "name" => self.name = string(map)?,
            "data" => self.data = Some(map.next_value::<Json>()?),
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for Delta<'de> {
    fn field<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        depth: usize,
    ) -> Result<(), A::Error> {
        match key {
            "type" => self.kind = string(map)?,
            "text" => self.text = string(map)?,
            "thinking" => self.thinking = string(map)?,
            "partial_json" => self.partial_json = string(map)?,
            "stop_reason" => self.stop_reason = string(map)?,
            "signature" => self.signature = string(map)?,
            "citation" => self.citation = object(map, depth)?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for Citation<'de> {
    fn field<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        _depth: usize,
    ) -> Result<(), A::Error> {
        match key {
            "type" => self.kind = string(map)?,
            "url" => self.url = string(map)?,
            "title" => self.title = string(map)?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for Usage {
    fn field<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        depth: usize,
    ) -> Result<(), A::Error> {
        match key {
            "input_tokens" => self.input_tokens = count(map, depth)?,
            "cache_creation_input_tokens" => self.cache_creation_input_tokens = count(map, depth)?,
            "cache_read_input_tokens" => self.cache_read_input_tokens = count(map, depth)?,
            "output_tokens" => self.output_tokens = count(map, depth)?,
            "cache_creation" => self.cache_creation = object(map, depth)?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for CacheCreation {
    fn field<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        depth: usize,
    ) -> Result<(), A::Error> {
        match key {
            "ephemeral_5m_input_tokens" => self.ephemeral_5m_input_tokens = count(map, depth)?,
            "ephemeral_1h_input_tokens" => self.ephemeral_1h_input_tokens = count(map, depth)?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

impl<'de> Fields<'de> for ErrorBody<'de> {
    fn field<A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
        _depth: usize,
    ) -> Result<(), A::Error> {
        match key {
            "type" => self.kind = string(map)?,
            "message" => self.message = string(map)?,
            _ => skip(map)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(doc: &str) -> Result<Option<u64>, Invalid> {
        parse(doc).map(|p| p.and_then(|p| p.index))
    }

    #[test]
    fn validity_matches_orjson() {
        let valid = [
            "{}",
            " {}\n",
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":1e-400}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":1.7976931348623157e308}"#,
            "{\"a\":\"\x7f\"}",
            r#"{"a":"\u0000"}"#,
        ];
        for doc in valid {
            assert!(parse(doc).is_ok(), "{doc}");
        }
        let invalid = [
            "",
            "{",
            "{} x",
            "\u{feff}{}",
            "{}\x0c",
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"\ud800":1}"#,
            r#"{"index":"\ud800"}"#,
            r#"{"index":1e400}"#,
            r#"{"a":1e400}"#,
            r#"{"a":-1e400}"#,
            r#"{"a":1.7976931348623159e308}"#,
            "{\"a\":\"\x1f\"}",
            r#"{"a":1,}"#,
            r#"{"a":NaN}"#,
            r#"{"a":01}"#,
        ];
        for doc in invalid {
            assert_eq!(parse(doc).map(|_| ()), Err(Invalid), "{doc}");
        }
        let long_int = format!("{{\"index\":1{}}}", "0".repeat(400));
        assert_eq!(parse(&long_int).map(|_| ()), Err(Invalid));
        assert!(matches!(parse("[1]"), Ok(None)));
        assert!(matches!(parse("\"x\""), Ok(None)));
    }

    #[test]
    fn nesting_limit_is_orjsons() {
        for (depth, ok) in [(128, true), (129, true), (1024, true), (1025, false)] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(parse(&arrays).is_ok(), ok, "arrays {depth}");
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            assert_eq!(parse(&objects).is_ok(), ok, "objects {depth}");
            let strings = format!("{{\"s\":\"{}\"}}", "[".repeat(depth));
            assert!(parse(&strings).is_ok());
            // A count's raw value is validated on its own, but the limit counts its parents.
            let inner = depth - 2;
            let count = format!(
                "{{\"usage\":{{\"input_tokens\":{}{}}}}}",
                "[".repeat(inner),
                "]".repeat(inner)
            );
            assert_eq!(parse(&count).is_ok(), ok, "count {depth}");
        }
    }

    #[test]
    fn counts() {
        let cases = [
            ("0", Some(0)),
            ("-0", Some(0)),
            ("7", Some(7)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("-1", None),
            ("1.0", None),
            ("1e2", None),
            ("true", None),
            ("null", None),
            ("\"1\"", None),
            ("[1]", None),
            ("{\"a\":1}", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                index(&format!("{{\"index\": {text} }}")),
                Ok(expected),
                "{text}"
            );
        }
    }

    #[test]
    fn last_duplicate_wins_and_wrong_types_read_as_absent() {
        let doc = r#"{"delta":{"text":"a","text":5},"delta":{"text":"b","te\u0078t":"c"}}"#;
        let delta = parse(doc).ok().flatten().and_then(|p| p.delta);
        assert_eq!(delta.and_then(|d| d.text).as_deref(), Some("c"));
        let doc = r#"{"delta":{"text":"a"},"delta":[1]}"#;
        assert!(parse(doc).ok().flatten().and_then(|p| p.delta).is_none());
        let doc = r#"{"index":1,"index":"x"}"#;
        assert_eq!(index(doc), Ok(None));
    }
}
