//! The PyO3 binding layer: converts types and maps errors, nothing else. Docstrings live in
//! `python/ferrule/_native.pyi`; behaviour lives in the core modules.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::responses_stream::{self, Sealer};
use crate::{answer, chat_request, compress, meter, sse, stream};

create_exception!(
    ferrule._native,
    SseError,
    PyValueError,
    "An SSE stream broke a configured size limit."
);

/// The one place core errors become Python exceptions. `events` are the ones the chunk completed
/// before the limit broke: the error carries them, as the twin's does.
fn to_py_err(py: Python<'_>, err: sse::SseError, events: &Bound<'_, PyList>) -> PyErr {
    let err = SseError::new_err(err.to_string());
    if let Err(failed) = err.value(py).setattr("events", events) {
        return failed;
    }
    err
}

/// Compression errors are bad arguments: `ValueError`, as the twin raises.
fn compress_err(err: compress::CompressError) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// A flag read as Python reads `if flag:` (the twin takes any truthy value).
struct Truthy(bool);

impl<'a, 'py> FromPyObject<'a, 'py> for Truthy {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        obj.is_truthy().map(Truthy)
    }
}

#[pyclass(name = "SseDecoder", module = "ferrule._native", subclass)]
struct PySseDecoder {
    inner: sse::SseDecoder,
}

#[pymethods]
impl PySseDecoder {
    #[new]
    #[pyo3(signature = (*, max_line_bytes = 0, max_event_bytes = 0))]
    fn new(max_line_bytes: usize, max_event_bytes: usize) -> Self {
        Self {
            inner: sse::SseDecoder::new(max_line_bytes, max_event_bytes),
        }
    }

    #[getter]
    fn retry(&self) -> Option<u64> {
        self.inner.retry()
    }

    fn feed<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyList>> {
        // Python objects are built straight from the borrowed event, with no Rust copy between.
        let events = PyList::empty(py);
        let mut failed = None;
        let decoded = self.inner.feed(chunk, |e| {
            let event = (
                PyString::new(py, e.event),
                PyString::new(py, e.data),
                PyString::new(py, e.id),
            );
            if let Err(err) = events.append(event) {
                failed.get_or_insert(err);
            }
        });
        if let Err(err) = decoded {
            return Err(to_py_err(py, err, &events));
        }
        match failed {
            Some(err) => Err(err),
            None => Ok(events),
        }
    }
}

#[pyclass(name = "StreamTranslator", module = "ferrule._native", subclass)]
struct PyStreamTranslator {
    inner: stream::StreamTranslator,
    /// Reused output buffer: one allocation per translator, one copy into the returned bytes.
    out: Vec<u8>,
}

#[pymethods]
impl PyStreamTranslator {
    #[new]
    #[pyo3(signature = (model, created, *, include_usage = Truthy(false), max_event_bytes = 0, json_tool = None))]
    #[pyo3(
        text_signature = "(model, created, *, include_usage=False, max_event_bytes=0, json_tool=None)"
    )]
    fn new(
        model: &str,
        created: i64,
        include_usage: Truthy,
        max_event_bytes: usize,
        json_tool: Option<&str>,
    ) -> Self {
        Self {
            inner: stream::StreamTranslator::new(
                model,
                created,
                include_usage.0,
                max_event_bytes,
                json_tool,
            ),
            out: Vec::new(),
        }
    }

    fn feed<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> Bound<'py, PyBytes> {
        self.out.clear();
        self.inner.feed(chunk, &mut self.out);
        PyBytes::new(py, &self.out)
    }

    fn finish<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.out.clear();
        self.inner.finish(&mut self.out);
        PyBytes::new(py, &self.out)
    }

    #[getter]
    fn started(&self) -> bool {
        self.inner.started()
    }
    #[getter]
    fn done(&self) -> bool {
        self.inner.done()
    }
    #[getter]
    fn outcome(&self) -> &'static str {
        self.inner.outcome().as_str()
    }
    #[getter]
    fn error(&self) -> Option<(&str, &str)> {
        self.inner.error()
    }
    #[getter]
    fn message_id(&self) -> Option<&str> {
        self.inner.message_id()
    }
    #[getter]
    fn stop_reason(&self) -> Option<&str> {
        self.inner.stop_reason()
    }
    #[getter]
    fn usage(&self) -> (u64, u64, u64, u64, u64, u64) {
        let [a, b, c, d, e, f] = self.inner.usage();
        (a, b, c, d, e, f)
    }
}

/// The caller's sealer (`Seals.seal`); the first error is kept and raised after the call.
struct PySealer<'a, 'py> {
    sealer: &'a Bound<'py, PyAny>,
    err: Option<PyErr>,
}

impl Sealer for PySealer<'_, '_> {
    fn seal(&mut self, plaintext: &[u8], context: &[u8]) -> String {
        if self.err.is_some() {
            return String::new();
        }
        let py = self.sealer.py();
        let args = (PyBytes::new(py, plaintext), PyBytes::new(py, context));
        match self
            .sealer
            .call_method1("seal", args)
            .and_then(|token| token.extract::<String>())
        {
            Ok(token) => token,
            Err(err) => {
                self.err = Some(err);
                String::new()
            }
        }
    }
}

/// `mapping.items()` as a list of pairs.
fn items<'py>(mapping: &Bound<'py, PyAny>) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    let mut pairs = Vec::new();
    for pair in mapping.call_method0("items")?.try_iter()? {
        pairs.push(pair?.extract::<(String, Bound<'py, PyAny>)>()?);
    }
    Ok(pairs)
}

fn bytes_of(obj: Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    Ok(obj.extract::<Bound<'_, PyBytes>>()?.as_bytes().to_vec())
}

/// The encoder's config from a `ResponsesTranslated` and the route's arguments.
fn responses_config(
    tr: &Bound<'_, PyAny>,
    response_id: &str,
    created_at: i64,
    tenant: &str,
    max_event_bytes: usize,
) -> PyResult<responses_stream::Config> {
    let py = tr.py();
    let mut tools = std::collections::HashMap::new();
    for (wire, tool) in items(&tr.getattr("tools")?)? {
        let kind: String = tool.getattr("kind")?.extract()?;
        let tool = responses_stream::ToolRef {
            custom: kind == "custom",
            name: tool.getattr("name")?.extract()?,
            namespace: tool.getattr("namespace")?.extract()?,
        };
        tools.insert(wire, tool);
    }
    // The echo values are the request's own JSON: orjson writes them, as in the twin.
    let dumps = py.import("orjson")?.getattr("dumps")?;
    let mut echo = Vec::new();
    for (key, value) in items(&tr.getattr("echo")?)? {
        echo.push((key, bytes_of(dumps.call1((value,))?)?));
    }
    let request = py.import("ferrule.translate.responses_request")?;
    let context = |name: &str| bytes_of(request.getattr(name)?.call1((tenant,))?);
    Ok(responses_stream::Config {
        response_id: response_id.to_owned(),
        created_at,
        model: tr.getattr("model")?.extract()?,
        summary: tr.getattr("summary")?.is_truthy()?,
        compact: tr.getattr("compact")?.is_truthy()?,
        json_tool: tr.getattr("json_tool")?.extract()?,
        tools,
        echo,
        reasoning_context: context("reasoning_context")?,
        compaction_context: context("compaction_context")?,
        max_event_bytes,
    })
}

#[pyclass(name = "ResponsesStreamEncoder", module = "ferrule._native", subclass)]
struct PyResponsesStreamEncoder {
    inner: responses_stream::ResponsesStreamEncoder,
    sealer: Py<PyAny>,
    /// Reused output buffer, as in `StreamTranslator`.
    out: Vec<u8>,
}

#[pymethods]
impl PyResponsesStreamEncoder {
    #[new]
    #[pyo3(signature = (tr, *, response_id, created_at, sealer, tenant, max_event_bytes = 0))]
    #[pyo3(text_signature = "(tr, *, response_id, created_at, sealer, tenant, max_event_bytes=0)")]
    fn new(
        tr: &Bound<'_, PyAny>,
        response_id: &str,
        created_at: i64,
        sealer: Py<PyAny>,
        tenant: &str,
        max_event_bytes: usize,
    ) -> PyResult<Self> {
        let cfg = responses_config(tr, response_id, created_at, tenant, max_event_bytes)?;
        Ok(Self {
            inner: responses_stream::ResponsesStreamEncoder::new(cfg),
            sealer,
            out: Vec::new(),
        })
    }

    fn feed<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        self.out.clear();
        let sealer = self.sealer.bind(py);
        let mut seal = PySealer { sealer, err: None };
        self.inner.feed(chunk, &mut self.out, &mut seal);
        match seal.err {
            Some(err) => Err(err),
            None => Ok(PyBytes::new(py, &self.out)),
        }
    }

    fn finish<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.out.clear();
        self.inner.finish(&mut self.out);
        PyBytes::new(py, &self.out)
    }

    #[pyo3(signature = (message, etype = "api_error"))]
    fn fail<'py>(&mut self, py: Python<'py>, message: &str, etype: &str) -> Bound<'py, PyBytes> {
        self.out.clear();
        self.inner.fail(&mut self.out, message, etype);
        PyBytes::new(py, &self.out)
    }

    #[getter]
    fn started(&self) -> bool {
        self.inner.started()
    }
    #[getter]
    fn done(&self) -> bool {
        self.inner.done()
    }
    #[getter]
    fn outcome(&self) -> &'static str {
        self.inner.outcome().as_str()
    }
    #[getter]
    fn error(&self) -> Option<(&str, &str)> {
        self.inner.error()
    }
    #[getter]
    fn message_id(&self) -> Option<&str> {
        self.inner.message_id()
    }
    #[getter]
    fn stop_reason(&self) -> Option<&str> {
        self.inner.stop_reason()
    }
    #[getter]
    fn usage(&self) -> (u64, u64, u64, u64, u64, u64) {
        let [a, b, c, d, e, f] = self.inner.usage();
        (a, b, c, d, e, f)
    }
}

#[pyclass(name = "Compressor", module = "ferrule._native", subclass)]
struct PyCompressor {
    inner: compress::Compressor,
}

#[pymethods]
impl PyCompressor {
    #[new]
    #[pyo3(signature = (mode, *, cut_at = compress::DEFAULT_CUT_AT))]
    #[pyo3(text_signature = "(mode, *, cut_at=24000)")]
    fn new(mode: &str, cut_at: i64) -> PyResult<Self> {
        compress::Compressor::new(mode, cut_at)
            .map(|inner| Self { inner })
            .map_err(compress_err)
    }

    fn compress<'py>(
        &mut self,
        text: &Bound<'py, PyString>,
        kind: &str,
        r#ref: &str,
    ) -> PyResult<Bound<'py, PyString>> {
        let kind = compress::Kind::parse(kind).map_err(compress_err)?;
        if self.inner.is_off() {
            return Ok(text.clone()); // not even converted to UTF-8
        }
        let source = text.to_str()?;
        Ok(match self.inner.compress(source, kind, r#ref) {
            // Unchanged: hand back the same object (no copy).
            std::borrow::Cow::Borrowed(_) => text.clone(),
            std::borrow::Cow::Owned(out) => PyString::new(text.py(), &out),
        })
    }
}

type Counts = (u64, u64, u64, u64, u64, u64);

/// Answers smaller than this are translated holding the GIL: giving it up and taking it back
/// costs more than they take (another thread may run in between), and a worker has one loop.
const DETACH_ABOVE: usize = 64 * 1024;

#[pyfunction]
#[pyo3(signature = (raw, model, created, json_tool = None))]
fn answer_to_openai<'py>(
    py: Python<'py>,
    raw: &[u8],
    model: &str,
    created: i64,
    json_tool: Option<&str>,
) -> Option<(Bound<'py, PyBytes>, Counts)> {
    let answer = if raw.len() < DETACH_ABOVE {
        answer::to_openai(raw, model, created, json_tool)?
    } else {
        // without the GIL: a large answer takes a while, and the bytes are immutable
        py.detach(|| answer::to_openai(raw, model, created, json_tool))?
    };
    let [a, b, c, d, e, f] = answer.usage;
    Some((PyBytes::new(py, &answer.body), (a, b, c, d, e, f)))
}

#[pyfunction]
fn answer_usage(py: Python<'_>, raw: &[u8]) -> Option<Counts> {
    let [a, b, c, d, e, f] = if raw.len() < DETACH_ABOVE {
        answer::usage_of(raw)?
    } else {
        py.detach(|| answer::usage_of(raw))?
    };
    Some((a, b, c, d, e, f))
}

type BucketArg = Option<(i64, i64, f64)>;

fn bucket(b: BucketArg) -> Option<meter::Bucket> {
    b.map(|(limit, remaining, reset_us)| meter::Bucket {
        limit,
        remaining,
        reset_us,
    })
}

fn header_list<'py>(
    py: Python<'py>,
    headers: Vec<(&'static [u8], Vec<u8>)>,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for (name, value) in headers {
        out.append((PyBytes::new(py, name), PyBytes::new(py, &value)))?;
    }
    Ok(out)
}

#[pyclass(name = "AllowanceMeter", module = "ferrule._native")]
struct PyAllowanceMeter {
    inner: meter::Meter,
}

#[pymethods]
impl PyAllowanceMeter {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        requests: Option<i64>,
        tokens: Option<i64>,
        slots: Option<i64>,
        budget_nano: Option<i64>,
        rpm: BucketArg,
        tpm: BucketArg,
        taken_s: f64,
        until: f64,
    ) -> Self {
        Self {
            inner: meter::Meter::new(
                requests,
                tokens,
                slots,
                budget_nano,
                bucket(rpm),
                bucket(tpm),
                taken_s,
                until,
            ),
        }
    }

    #[getter]
    fn requests(&self) -> i64 {
        self.inner.requests
    }
    #[getter]
    fn tokens_in_flight(&self) -> i64 {
        self.inner.tokens_in_flight
    }
    #[getter]
    fn tokens_used(&self) -> i64 {
        self.inner.tokens_used
    }
    #[getter]
    fn in_flight(&self) -> i64 {
        self.inner.in_flight
    }
    #[getter]
    fn reserved_in_flight(&self) -> i64 {
        self.inner.reserved_in_flight
    }
    #[getter]
    fn spent(&self) -> i64 {
        self.inner.spent
    }
    #[getter]
    fn exhausted(&self) -> bool {
        self.inner.exhausted
    }
    #[setter]
    fn set_exhausted(&mut self, value: bool) {
        self.inner.exhausted = value;
    }
    #[getter]
    fn returned(&self) -> bool {
        self.inner.returned
    }
    #[setter]
    fn set_returned(&mut self, value: bool) {
        self.inner.returned = value;
    }

    fn take(&mut self, tokens: i64, reserve_nano: i64, now_mono: f64) -> bool {
        self.inner.take(tokens, reserve_nano, now_mono)
    }

    fn view(&self, now_s: f64) -> meter::View {
        self.inner.view(now_s)
    }

    fn admit<'py>(
        &mut self,
        py: Python<'py>,
        tokens: i64,
        reserve_nano: i64,
        now_mono: f64,
        now_s: f64,
        anthropic: Truthy,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        if !self.inner.take(tokens, reserve_nano, now_mono) {
            return Ok(None);
        }
        let (rpm, tpm) = self.inner.limits();
        let headers = meter::rate_headers(anthropic.0, rpm, tpm, now_s, self.inner.view(now_s));
        header_list(py, headers).map(Some)
    }

    fn settle(&mut self, reserved_nano: i64, tokens: i64, used: i64, cost_nano: i64) -> bool {
        self.inner.settle(reserved_nano, tokens, used, cost_nano)
    }

    fn unused(&self) -> (i64, i64, i64, i64) {
        self.inner.unused()
    }
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn rate_headers<'py>(
    py: Python<'py>,
    anthropic: Truthy,
    rpm_limit: Option<i64>,
    tpm_limit: Option<i64>,
    now_s: f64,
    rpm_left: i64,
    rpm_reset_us: f64,
    tpm_left: i64,
    tpm_reset_us: f64,
) -> PyResult<Bound<'py, PyList>> {
    let view = (rpm_left, rpm_reset_us, tpm_left, tpm_reset_us);
    header_list(
        py,
        meter::rate_headers(anthropic.0, rpm_limit, tpm_limit, now_s, view),
    )
}

/// The facts tuple of `ChatRequests(facts)`: (model, default_max_tokens, thinks, strict_tools,
/// temperature_ok, top_p_ok, exclusive, forced_tool_choice, min_cache_tokens).
type FactsTuple = (String, u64, bool, bool, bool, bool, bool, bool, u64);

/// Models remembered per worker (the facts of a model never change while it runs); past this
/// many distinct names the memo starts again, so a client cannot grow it without bound.
const FACTS_MEMO: usize = 256;

#[pyclass(name = "ChatRequests", module = "ferrule._native")]
struct PyChatRequests {
    facts: Py<PyAny>,
    ttl: Option<String>,
    sampling: bool,
    files: chat_request::FileTools,
    memo: std::collections::HashMap<String, chat_request::ModelFacts>,
}

#[pymethods]
impl PyChatRequests {
    #[new]
    #[pyo3(signature = (facts, *, aliases, version, strict, ttl, file_tools))]
    fn new(
        facts: Py<PyAny>,
        aliases: Bound<'_, PyAny>,
        version: &str,
        strict: bool,
        ttl: Option<String>,
        file_tools: (std::collections::HashSet<String>, Vec<String>, Vec<String>),
    ) -> Self {
        // `facts` resolves aliases itself, and a request with a warning (what `strict` turns
        // into an error) is never prepared here: both are the twin's.
        let _ = (aliases, strict);
        Self {
            facts,
            ttl,
            sampling: version == "2023-06-01",
            files: chat_request::FileTools {
                words: file_tools.0,
                programs: file_tools.1,
                git: file_tools.2,
            },
            memo: std::collections::HashMap::new(),
        }
    }

    fn prepare<'py>(
        &mut self,
        py: Python<'py>,
        raw: &[u8],
        mode: &str,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Ok(text) = std::str::from_utf8(raw) else {
            return Ok(None);
        };
        let mut failed: Option<PyErr> = None;
        let facts_fn = &self.facts;
        let memo = &mut self.memo;
        let lookup = |asked: &str| -> Option<chat_request::ModelFacts> {
            if let Some(found) = memo.get(asked) {
                return Some(found.clone());
            }
            let got: FactsTuple = match facts_fn.bind(py).call1((asked,)).and_then(|t| t.extract())
            {
                Ok(t) => t,
                Err(err) => {
                    failed = Some(err);
                    return None;
                }
            };
            let facts = chat_request::ModelFacts {
                model: got.0,
                default_max_tokens: got.1,
                thinks: got.2,
                strict_tools: got.3,
                temperature_ok: got.4,
                top_p_ok: got.5,
                exclusive: got.6,
                forced_tool_choice: got.7,
                min_cache_tokens: got.8,
            };
            if memo.len() >= FACTS_MEMO {
                memo.clear();
            }
            memo.insert(asked.to_owned(), facts.clone());
            Some(facts)
        };
        let opts = chat_request::Options {
            mode,
            ttl: self.ttl.as_deref(),
            sampling: self.sampling,
            files: &self.files,
        };
        let prepared = chat_request::prepare(text, lookup, opts);
        if let Some(err) = failed {
            return Err(err);
        }
        let Some(p) = prepared else {
            return Ok(None);
        };
        let temperature: Option<Py<PyAny>> = match p.temperature {
            Some(crate::payload::Json::Int(i)) => Some(i.into_pyobject(py)?.into_any().unbind()),
            Some(crate::payload::Json::UInt(u)) => Some(u.into_pyobject(py)?.into_any().unbind()),
            Some(crate::payload::Json::Float(f)) => Some(f.into_pyobject(py)?.into_any().unbind()),
            _ => None,
        };
        let rewrites = PyList::empty(py);
        for (before, after) in &p.rewrites {
            rewrites.append((before, after))?;
        }
        let out = (
            PyBytes::new(py, &p.payload),
            p.asked,
            p.model,
            p.stream,
            p.include_usage,
            p.thinking,
            p.max_tokens,
            p.tools,
            temperature,
            rewrites,
            p.blocks,
            p.tool_turns,
        );
        Ok(Some(out.into_pyobject(py)?))
    }
}

/// Register the kernels on the `ferrule._native` module.
pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SseError", m.py().get_type::<SseError>())?;
    m.add_class::<PyCompressor>()?;
    m.add_class::<PySseDecoder>()?;
    m.add_class::<PyStreamTranslator>()?;
    m.add_class::<PyResponsesStreamEncoder>()?;
    m.add_class::<PyAllowanceMeter>()?;
    m.add_class::<PyChatRequests>()?;
    m.add_class::<crate::upstream_engine::PyUpstreamEngine>()?;
    m.add_function(wrap_pyfunction!(answer_to_openai, m)?)?;
    m.add_function(wrap_pyfunction!(answer_usage, m)?)?;
    m.add_function(wrap_pyfunction!(rate_headers, m)?)?;
    Ok(())
}
