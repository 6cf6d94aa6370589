//! Entropy coding layer: symbol streams of up to [`model::MAX_SYMBOL_BITS`] bits, cut into
//! chunks that decode independently (FORMAT.md §5).
//!
//! * [`model`]: quantised frequency tables and their lookup tables.
//! * [`rans`]: the interleaved rANS coder for one chunk.
//! * [`bitpack`]: fixed-width bit packing for streams that do not compress.
//! * [`stream`]: a whole field stream (mode, tables, chunk index, payloads).

pub mod bitpack;
mod block_costs;
pub mod model;
pub mod rans;
pub mod stream;
pub mod table_code;

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
    /// A frequency table holds no symbol or more than the table size allows.
    #[error("bad frequency table: table holds {count} symbols, allowed 1..={max}")]
    TableSize {
        /// Symbols the table holds.
        count: usize,
        /// Most symbols a table may hold.
        max: usize,
    },
    /// A frequency table's frequencies do not sum to the probability scale.
    #[error("bad frequency table: frequencies sum to {total}, expected {expected}")]
    TableSum {
        /// Their sum.
        total: u32,
        /// The probability scale.
        expected: u32,
    },
    /// A frequency table lists a symbol wider than the stream's symbols.
    #[error("bad frequency table: symbol {symbol} does not fit in {bits} bits")]
    TableSymbolWidth {
        /// The symbol.
        symbol: u16,
        /// The stream's symbol width.
        bits: u32,
    },
    /// A frequency table's symbols are not strictly increasing.
    #[error("bad frequency table: symbols not strictly increasing at {symbol}")]
    TableOrder {
        /// The first symbol out of order.
        symbol: u16,
    },
    /// A frequency table lists a symbol with frequency 0.
    #[error("bad frequency table: symbol {symbol} has frequency 0")]
    TableZeroFrequency {
        /// The symbol.
        symbol: u16,
    },
    /// A chunk payload is shorter than its states or not whole 16-bit words.
    #[error(
        "corrupt rANS chunk: payload of {len} bytes: needs {state_bytes} bytes of states and whole 16-bit words"
    )]
    PayloadSize {
        /// Payload bytes.
        len: usize,
        /// Bytes of the state header.
        state_bytes: usize,
    },
    /// A chunk's initial state lies below the normalisation interval.
    #[error("corrupt rANS chunk: initial state {state:#x} below {min:#x}")]
    InitialState {
        /// The state.
        state: u32,
        /// The interval's lower bound.
        min: u32,
    },
    /// A chunk with raw blocks (stream mode 5) is too short for its raw area and states,
    /// or an all-raw chunk is not exactly its raw area.
    #[error("corrupt chunk with raw blocks: payload of {len} bytes, needs {expected}")]
    RawChunkSize {
        /// Payload bytes.
        len: usize,
        /// Bytes needed (all-raw chunk: exactly; else at least).
        expected: usize,
    },
    /// A chunk's decode did not consume exactly its words.
    #[error("corrupt rANS chunk: decoder consumed {consumed} of {words} words")]
    WordsConsumed {
        /// Words the decoder read (more than there are when it overran).
        consumed: usize,
        /// Words in the payload.
        words: usize,
    },
    /// A lane of a chunk did not end in the encoder's initial state.
    #[error("corrupt rANS chunk: lane {lane} ended in state {state:#x}, expected {expected:#x}")]
    EndState {
        /// The lane.
        lane: usize,
        /// Its final state.
        state: u32,
        /// The state a correct chunk ends in.
        expected: u32,
    },
    /// A stream is declared with a symbol width or chunk length no stream can have.
    #[error("bad stream: unsupported symbol width {bits} or chunk length {chunk_len}")]
    StreamParams {
        /// Symbol width.
        bits: u32,
        /// Chunk length.
        chunk_len: usize,
    },
    /// A packed stream's declared symbols overflow a byte count.
    #[error("bad stream: {symbols} symbols of {bits} bits overflow a packed size")]
    PackedOverflow {
        /// Declared symbols.
        symbols: usize,
        /// Symbol width.
        bits: u32,
    },
    /// A packed or constant stream has the wrong length.
    #[error("bad stream: {kind} stream is {found} bytes, expected {expected}")]
    StreamSize {
        /// `"packed"` or `"constant"`.
        kind: &'static str,
        /// Bytes found.
        found: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// A constant stream's value is wider than its symbols.
    #[error("bad stream: constant {value} wider than {bits} bits")]
    ConstWidth {
        /// The constant.
        value: u16,
        /// Symbol width.
        bits: u32,
    },
    /// A stream's mode byte is none of packed, constant, rANS.
    #[error("bad stream: unknown stream mode {mode}")]
    UnknownMode {
        /// The mode byte.
        mode: u8,
    },
    /// A rANS stream declares no table.
    #[error("bad stream: rANS stream with no table")]
    NoTables,
    /// A rANS stream's block length exponent is outside what its chunks allow.
    #[error("bad stream: block length exponent {found} outside {min}..={max}")]
    BlockLog2 {
        /// The exponent.
        found: u8,
        /// Smallest allowed.
        min: u8,
        /// Largest allowed (the chunk's).
        max: u8,
    },
    /// A block names a table the stream does not have.
    #[error("bad stream: block uses table {table} of {tables}")]
    TableId {
        /// The table id.
        table: u8,
        /// Tables in the stream.
        tables: usize,
    },
    /// A chunk's payload length is impossible for its symbols.
    #[error("bad stream: chunk {chunk} payload of {len} bytes outside {min}..={max}")]
    ChunkLength {
        /// The chunk.
        chunk: usize,
        /// Its declared length.
        len: usize,
        /// Shortest possible.
        min: usize,
        /// Longest possible.
        max: usize,
    },
    /// Padding before a chunk payload is not zero.
    #[error("bad stream: nonzero padding before chunk {chunk} at byte {at}")]
    ChunkPadding {
        /// The chunk.
        chunk: usize,
        /// Where the padding starts.
        at: usize,
    },
    /// The chunk payloads do not end where the stream does.
    #[error("bad stream: chunk payloads end at byte {end}, stream has {len}")]
    StreamEnd {
        /// Where the payloads end.
        end: usize,
        /// Stream length.
        len: usize,
    },
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
    /// Compact frequency tables (format 1.2) that do not decode to valid tables.
    #[error("bad compact frequency tables: {problem}")]
    CompactTable {
        /// What was wrong.
        problem: &'static str,
    },
}

/// A xorshift64 generator from `seed` (not zero): the entropy tests' random data.
#[cfg(test)]
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
