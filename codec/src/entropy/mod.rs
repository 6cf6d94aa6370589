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
    /// A symbol given to an encoder is not in the model it is to be coded with (zero
    /// frequency, wider than the table, or not the constant of a constant stream).
    #[error("symbol {symbol} at position {index} is not in its model")]
    SymbolNotInModel {
        /// Position of the symbol in the chunk.
        index: usize,
        /// Its value.
        symbol: u16,
    },
    /// An encoder was given a block length that is not a positive multiple of the lane
    /// count.
    #[error("block length {block_len} is not a positive multiple of {lanes}")]
    BlockLength {
        /// The block length given.
        block_len: usize,
        /// The lane count it must be a multiple of.
        lanes: usize,
    },
    /// An encoder was given fewer tables than the chunk has blocks.
    #[error("{have} tables for {needed} blocks")]
    MissingTables {
        /// Blocks in the chunk.
        needed: usize,
        /// Tables given.
        have: usize,
    },
    /// A chunk number beyond the stream's chunks.
    #[error("chunk {chunk} of a stream with {chunks} chunks")]
    NoSuchChunk {
        /// The chunk asked for.
        chunk: usize,
        /// Chunks in the stream.
        chunks: usize,
    },
}
