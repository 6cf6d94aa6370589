//! Rust errors as the exceptions of `mcodec.errors`, all under `mcodec.Error`; each
//! message names the file and the problem.

use std::io;
use std::path::Path;

use mcodec::container::ContainerError;
use pyo3::prelude::*;

/// Which exception class of `mcodec.errors` an error becomes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// Damaged or foreign data (`CorruptError`, a `ValueError`).
    Corrupt,
    /// A size beyond the reader's limits (`LimitError`, a `ValueError`).
    Limit,
    /// A missing input (`MissingFileError`, a `FileNotFoundError`).
    Missing,
    /// An output that exists and may not be overwritten (`OutputExistsError`).
    Exists,
    /// Any other file-system failure (`FileError`, an `OSError`).
    File,
    /// A bad argument (`ArgumentError`, a `ValueError`).
    Argument,
    /// A tensor name the file does not have (`TensorNotFoundError`, a `KeyError`).
    NoTensor,
    /// The GPU decoder cannot run here: no device, driver or usable kernel image
    /// (`GpuUnavailableError`, a `GpuError`); callers fall back to the CPU.
    GpuUnavailable,
    /// The GPU failed while decoding (`GpuError`, a `RuntimeError`).
    Gpu,
}

impl Kind {
    fn class(self) -> &'static str {
        match self {
            Kind::Corrupt => "CorruptError",
            Kind::Limit => "LimitError",
            Kind::Missing => "MissingFileError",
            Kind::Exists => "OutputExistsError",
            Kind::File => "FileError",
            Kind::Argument => "ArgumentError",
            Kind::NoTensor => "TensorNotFoundError",
            Kind::GpuUnavailable => "GpuUnavailableError",
            Kind::Gpu => "GpuError",
        }
    }

    /// The kind of an I/O failure.
    pub(crate) fn of_io(e: &io::Error) -> Kind {
        match e.kind() {
            io::ErrorKind::NotFound => Kind::Missing,
            io::ErrorKind::AlreadyExists => Kind::Exists,
            _ => Kind::File,
        }
    }
}

/// An exception of class `kind` with `message`.
pub(crate) fn error(kind: Kind, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| {
        let class = match py
            .import("mcodec.errors")
            .and_then(|m| m.getattr(kind.class()))
        {
            Ok(class) => class,
            Err(e) => return e,
        };
        match class.call1((message,)) {
            Ok(value) => PyErr::from_value(value),
            Err(e) => e,
        }
    })
}

/// A container error about the file at `path`.
pub(crate) fn container(path: &Path, e: ContainerError) -> PyErr {
    let kind = match &e {
        ContainerError::Io(io) => Kind::of_io(io),
        ContainerError::Limit { .. } => Kind::Limit,
        ContainerError::Unsupported(_) => Kind::Argument,
        _ => Kind::Corrupt,
    };
    error(kind, format!("{}: {e}", path.display()))
}
