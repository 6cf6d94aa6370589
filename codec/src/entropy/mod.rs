//! Entropy coding layer: symbol streams of up to [`model::MAX_SYMBOL_BITS`] bits, cut into
//! chunks that decode independently (FORMAT.md §5).
//!
//! * [`model`]: quantised frequency tables and their lookup tables.
//! * [`rans`]: the interleaved rANS coder for one chunk.
//! * [`bitpack`]: fixed-width bit packing for streams that do not compress.
//! * [`stream`]: a whole field stream (mode, tables, chunk index, payloads).

pub mod bitpack;
pub mod model;
pub mod rans;
pub mod stream;

/// Errors of the entropy layer. Each carries the numbers that were found.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntropyError {
    /// A structure ended before its declared size.
    #[error("truncated {what}: needs {needed} bytes, has {have}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// A frequency table is malformed.
    #[error("bad frequency table: {0}")]
    BadTable(String),
    /// A chunk payload does not decode to a valid end state.
    #[error("corrupt rANS chunk: {0}")]
    BadChunk(String),
    /// The stream header or chunk index is malformed.
    #[error("bad stream: {0}")]
    BadStream(String),
}
