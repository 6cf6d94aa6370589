//! The native module of the `mcodec` Python package (`mcodec._native`).
//!
//! A thin layer over the Rust crates: the Python modules (`mcodec/torch.py`,
//! `mcodec/numpy.py`, ...) allocate the output tensors and hand their memory here, where
//! tensors are decoded straight into it, on all cores, with the GIL released. Nothing in
//! this module is public API: the Python modules are.

mod archive;
mod errors;
mod files;
mod gpu;
mod pool;
mod save;
mod store;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<archive::PyArchive>()?;
    m.add_class::<store::PyStore>()?;
    m.add_function(wrap_pyfunction!(save::save_file, m)?)?;
    m.add_function(wrap_pyfunction!(save::save_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(save::safetensors_header, m)?)?;
    m.add_function(wrap_pyfunction!(files::pack, m)?)?;
    m.add_function(wrap_pyfunction!(files::unpack, m)?)?;
    m.add_function(wrap_pyfunction!(files::cli_main, m)?)?;
    m.add("LEVELS", files::level_names())?;
    m.add("KERNEL_SOURCE", gpu::KERNEL_SOURCE)?;
    m.add(
        "STORE_DEFAULT_GRACE_S",
        mcodec_store::DEFAULT_GRACE.as_secs_f64(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
