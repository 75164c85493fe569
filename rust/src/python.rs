//! The PyO3 binding layer: converts types and maps errors, nothing else. Docstrings live in
//! `python/ferrule/_native.pyi`; behaviour lives in the core modules.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::{compress, sse, stream};

create_exception!(
    ferrule._native,
    SseError,
    PyValueError,
    "An SSE stream broke a configured size limit."
);

/// The one place core errors become Python exceptions.
fn to_py_err(err: sse::SseError) -> PyErr {
    SseError::new_err(err.to_string())
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
        self.inner
            .feed(chunk, |e| {
                let event = (
                    PyString::new(py, e.event),
                    PyString::new(py, e.data),
                    PyString::new(py, e.id),
                );
                if let Err(err) = events.append(event) {
                    failed.get_or_insert(err);
                }
            })
            .map_err(to_py_err)?;
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

/// Register the kernels on the `ferrule._native` module.
pub fn init_pymodule(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SseError", m.py().get_type::<SseError>())?;
    m.add_class::<PyCompressor>()?;
    m.add_class::<PySseDecoder>()?;
    m.add_class::<PyStreamTranslator>()?;
    Ok(())
}
