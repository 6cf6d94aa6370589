//! Field streams (FORMAT.md §5.5): `n` symbols of `symbol_bits` bits, cut into chunks of
//! `chunk_len` symbols, stored in one of six modes (packed, constant, four rANS forms).
//!
//! ```text
//! Packed: u8 0 | bit-packed symbols (chunk c starts at byte c·chunk_len·bits/8)
//! Const:  u8 1 | u16 value
//! Rans:   u8 2 | u8 T | u8 block_log2 | T frequency tables
//!              | n_blocks × u8 table id | n_chunks × u32 payload length
//!              | zero padding to a multiple of 4
//!              | payloads, each starting at a multiple of 4 from the stream start
//! ```
//!
//! Mode 3 (format 1.2) stores the tables in the compact form of `table_code`; mode 4
//! (1.3) continues that bit string with the block ids as runs instead of a byte per
//! block; mode 5 (1.4) is mode 4 with raw blocks, whose symbols are stored bit-packed in
//! their chunk's payload instead of coded. The writer emits mode 5 for streams with raw
//! blocks and mode 4 for the other rANS streams.
//!
//! A chunk is the unit of parallel decoding: its payload, its offset (a prefix sum of the
//! lengths) and the table ids of its blocks are all a CPU thread or GPU warp needs.
//! Blocks (`1 << block_log2` symbols, a multiple of the lane count) are the unit of model
//! choice: weights drift in scale along a tensor (embedding rows, say), and letting every
//! block pick the best of a few tables follows that drift for one byte per block.
//!
//! Files: `encode.rs` the encoder (one coding decision per stream, then its chunks),
//! `plan.rs` the model planning it calls (block histograms clustered into tables, each
//! block's table chosen), `decode.rs` the parser and chunk decoder.

use super::model::FreqTable;
use super::rans::LANES;
use super::table_code;

mod decode;
mod encode;
mod plan;
#[cfg(test)]
mod tests;

pub use decode::{StreamDecoder, StreamKind, StreamLayout};
pub use encode::{CodedStream, StreamEncoder};
pub(crate) use plan::{sparse_entropy_bits, Coarse, SparseHist};
use plan::{sparse_entropy_bits_fast, Sparse};

const MODE_PACKED: u8 = 0;
const MODE_CONST: u8 = 1;
const MODE_RANS: u8 = 2;
/// rANS with the compact table encoding of format 1.2 (FORMAT.md §5.2.1); otherwise laid
/// out as [`MODE_RANS`]. The writer emits this mode for every rANS stream.
const MODE_RANS_COMPACT: u8 = 3;
/// rANS with compact tables and the block ids run-coded in the same bit string (format
/// 1.3, FORMAT.md §5.2.2); otherwise laid out as [`MODE_RANS`]. The writer emits this
/// mode for every rANS stream: ids that cost a bit or less a block let the encoder plan
/// shorter blocks where they pay.
const MODE_RANS_RUN_IDS: u8 = 4;
/// Mode 4 with raw blocks (format 1.4, FORMAT.md §5.5.1): a block id equal to the table
/// count marks a block whose symbols are stored bit-packed in its chunk's raw area, after
/// the states, and skipped by the rANS lanes. The writer emits it for streams with raw
/// blocks, mode 4 for the others.
const MODE_RANS_RAW: u8 = 5;

/// What [`StreamDecoder::decode_chunks_to_bytes_in_place`] gives back: the two chunks'
/// payloads (which raw-run offsets index) and the leading symbols of each merged.
pub(crate) type BytesDecoded<'a> = ([&'a [u8]; 2], [usize; 2]);

/// Bytes the stream header spends on `tables` (the compact form the writer emits).
fn tables_bytes(tables: &[FreqTable]) -> usize {
    table_code::tables_len(tables)
}

/// Bytes the run-coded block `ids` of a stream with `n_tables` tables take (mode 4).
fn ids_bytes(ids: &[u8], n_tables: usize) -> f64 {
    table_code::ids_bits(ids, n_tables) as f64 / 8.0
}

/// Smallest block: one symbol per lane.
pub const MIN_BLOCK_LOG2: u8 = LANES.trailing_zeros() as u8;

/// How hard the encoder searches for a good model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Effort {
    /// Up to 8 tables per stream, added while they pay, each change of table from one
    /// block to the next also weighed for the decoder (`plan_sparse`).
    #[default]
    Default,
    /// Up to 32 tables and more clustering rounds.
    Max,
    /// The fast level: one table per stream wherever a sample says that more cannot pay
    /// (the tensor encoder then counts one histogram per chunk instead of one per
    /// block), up to 4 planned on long blocks, in fewer clustering rounds and without
    /// refinement, elsewhere.
    Fast,
}

impl Effort {
    fn max_tables(self) -> usize {
        match self {
            // Each doubling is one more clustering, tried only while the last one
            // gained. On MiniLM 4 instead of 2 make the BF16 and F32 files 19 KB smaller
            // for 3 % and 8 % more encode instructions; a tensor with more regimes than
            // 2 tables can follow (a test's 5 scales) came out 7 % larger than by default.
            Self::Fast => 4,
            Self::Default => 8,
            Self::Max => 32,
        }
    }

    fn rounds(self) -> usize {
        match self {
            Self::Fast => 3,
            Self::Default => 6,
            Self::Max => 16,
        }
    }

    /// Whether the table search stops early where more tables gain little (every
    /// effort but [`Self::Max`]).
    fn stops_early(self) -> bool {
        self != Self::Max
    }

    /// The blocks' entropy for the planner's checks: [`Effort::Fast`] takes the
    /// table-driven form (its rounding differs in the last bits, so the other efforts,
    /// whose plans must not change, keep theirs).
    fn entropy(self) -> fn(&Sparse) -> f64 {
        match self {
            Self::Fast => sparse_entropy_bits_fast,
            _ => sparse_entropy_bits,
        }
    }
}
