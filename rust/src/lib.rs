//! Ferrule's native kernels. The core modules are plain Rust; `python` (behind the `python` cargo
//! feature) is the thin PyO3 layer that exposes them as `ferrule._native`.

pub mod answer;
pub mod chat_request;
pub mod compress;
pub mod meter;
pub(crate) mod payload;
pub mod responses_stream;
pub mod sse;
pub mod stream;

#[cfg(feature = "python")]
mod python;
#[cfg(feature = "python")]
mod upstream_engine;

#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _native(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    python::init_pymodule(m)
}
