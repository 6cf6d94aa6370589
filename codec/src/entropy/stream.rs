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

use rayon::prelude::*;

use super::bitpack;
use super::block_costs::{bit_costs, block_cost, CostMatrix};
use super::model::{DecTable, EncTable, FreqTable, MAX_SYMBOL_BITS, MAX_TABLE_SYMBOLS};
use super::rans::{self, LANES, STATE_BYTES};
use super::{table_code, EntropyError};

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

/// Bytes the stream header spends on `tables` (the compact form the writer emits).
/// What [`StreamDecoder::decode_chunks_to_bytes_in_place`] gives back: the two chunks'
/// payloads (which raw-run offsets index) and the leading symbols of each merged.
pub(crate) type BytesDecoded<'a> = ([&'a [u8]; 2], [usize; 2]);

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
    /// Up to 8 tables per stream, added while they pay (FP8 fields also weigh each
    /// change of table for the decoder: `plan_sparse`).
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

/// The coding decision for one stream, made from per-block histograms before any chunk is
/// coded, so that chunks can then be coded in parallel.
#[derive(Clone, Debug)]
pub struct StreamEncoder {
    symbol_bits: u32,
    mode: Mode,
    /// What a change of table between neighbouring blocks costs in the plan's
    /// objective, in bits, beyond its id's (0: the plan is by size alone); see
    /// [`Self::plan_sparse`].
    switch_bits: f64,
}

#[derive(Clone, Debug)]
enum Mode {
    Packed,
    Const(u16),
    Rans {
        tables: Vec<FreqTable>,
        enc: Vec<EncTable>,
        block_tables: Vec<u8>,
        block_log2: u8,
        blocks_per_chunk: usize,
    },
}

impl StreamEncoder {
    /// Chooses the mode and tables from one histogram per block (each `1 << symbol_bits`
    /// long; block `b` covers symbols `b << block_log2 ..`). Chunks hold
    /// `1 << chunk_log2` symbols, with `MIN_BLOCK_LOG2 ≤ block_log2 ≤ chunk_log2`.
    /// The encoder plans from sparse histograms ([`Self::plan_sparse`]); this dense form is
    /// the tests' reference (this crate's and the GPU mirror's).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn plan(
        block_hists: &[Vec<u32>],
        symbol_bits: u32,
        block_log2: u8,
        chunk_log2: u8,
        effort: Effort,
    ) -> Self {
        let sparse_hists: Vec<SparseHist> = block_hists.par_iter().map(|h| sparse(h)).collect();
        Self::plan_sparse(
            &sparse_hists,
            symbol_bits,
            block_log2,
            chunk_log2,
            effort,
            0.0,
        )
    }

    /// [`Self::plan`] from the blocks' histograms in sparse form (each block's present
    /// symbols with their counts, in increasing symbol order, as
    /// [`Layout::count_sparse`](crate::float_split::Layout::count_sparse) gives them):
    /// the same plan, without a dense `1 << symbol_bits` histogram per block.
    ///
    /// `switch_bits` (0 for a plan by size alone) is for streams whose decode speed
    /// counts beside their size: where blocks are given tables (here and in
    /// [`Self::refine`]), a change of table from one block to the next costs
    /// `switch_bits` bits more than its id does, so that runs of one table are taken where
    /// they cost only a little more. The vector decoders pay for each change with the new
    /// table's slot lines, which come from L2 on the state's dependency chain
    /// (BENCHMARKS.md, twenty-third session, fp823). The format is unchanged: only the
    /// ids differ.
    pub(crate) fn plan_sparse(
        block_hists: &[SparseHist],
        symbol_bits: u32,
        block_log2: u8,
        chunk_log2: u8,
        effort: Effort,
        switch_bits: f64,
    ) -> Self {
        Self::plan_capped(
            block_hists,
            symbol_bits,
            block_log2,
            chunk_log2,
            effort,
            None,
            switch_bits,
        )
    }

    /// A plan with one table at most (or packed, or constant), from one histogram per
    /// chunk (`hists[c]` covers chunk `c`'s symbols): what [`Self::plan_sparse`] plans
    /// for a stream whose table search settles on one table, without the per-block
    /// histograms that search needs ([`Effort::Fast`]).
    pub(crate) fn plan_one_table(hists: &[SparseHist], symbol_bits: u32, chunk_log2: u8) -> Self {
        Self::plan_capped(
            hists,
            symbol_bits,
            chunk_log2,
            chunk_log2,
            Effort::Fast,
            Some(1),
            0.0,
        )
    }

    /// [`Self::plan_sparse`] with at most `max_tables` tables where given.
    fn plan_capped(
        block_hists: &[SparseHist],
        symbol_bits: u32,
        block_log2: u8,
        chunk_log2: u8,
        effort: Effort,
        max_tables: Option<usize>,
        switch_bits: f64,
    ) -> Self {
        debug_assert!(
            symbol_bits <= MAX_SYMBOL_BITS && (MIN_BLOCK_LOG2..=chunk_log2).contains(&block_log2)
        );
        let alphabet = 1usize << symbol_bits;
        let mut total = vec![0u64; alphabet];
        for h in block_hists {
            for &(s, c) in h {
                // (A dense histogram longer than the alphabet had its extra counts
                // ignored here too.)
                if let Some(t) = total.get_mut(usize::from(s)) {
                    *t += u64::from(c);
                }
            }
        }
        let n: u64 = total.iter().sum();
        let distinct: Vec<usize> = (0..alphabet).filter(|&s| total[s] > 0).collect();
        let packed = Self::packed(symbol_bits);
        let switches = Switches { bits: switch_bits };
        let mode = match distinct.len() {
            0 => return packed,
            1 => Mode::Const(distinct[0] as u16),
            d if d > MAX_TABLE_SYMBOLS => return packed,
            _ => {
                let packed_bytes = bitpack::packed_len(n as usize, symbol_bits) as f64;
                // Near-uniform fields (sign and low mantissa bits) cannot pay for a model:
                // skip the table search when even their per-block entropy does not. The
                // whole-stream entropy bounds it from above and is cheap, so the per-block
                // sum is only needed when that bound is not already low enough.
                let total_bits: f64 = total
                    .iter()
                    .filter(|&&c| c > 0)
                    .map(|&c| c as f64 * (n as f64 / c as f64).log2())
                    .sum();
                if total_bits / 8.0 >= packed_bytes * 0.995 {
                    // (The same sum, term by term, as `corrected_entropy_bits` over the
                    // dense histograms.)
                    let block_bits: f64 = block_hists.iter().map(effort.entropy()).sum();
                    if block_bits / 8.0 >= packed_bytes * 0.995 {
                        return packed;
                    }
                }
                let n_chunks = (n as usize).div_ceil(1 << chunk_log2);
                let (tables, block_tables, coded) =
                    choose_tables(block_hists, &total, effort, max_tables);
                let (tables, block_tables, block_log2, coded) = coarsen_blocks(
                    block_hists,
                    tables,
                    block_tables,
                    block_log2,
                    chunk_log2,
                    coded,
                    None,
                    None,
                    switches,
                );
                let est = coded + (n_chunks * (STATE_BYTES + 6)) as f64;
                if est >= packed_bytes * 0.995 {
                    return packed;
                }
                let enc = tables
                    .iter()
                    .map(|t| EncTable::new(t, symbol_bits))
                    .collect();
                Mode::Rans {
                    tables,
                    enc,
                    block_tables,
                    block_log2,
                    blocks_per_chunk: 1 << (chunk_log2 - block_log2),
                }
            }
        };
        Self {
            symbol_bits,
            mode,
            switch_bits,
        }
    }

    /// Whether [`Self::refine`] can change the plan: a rANS stream with several tables
    /// whose blocks are longer than `fine_log2`.
    pub(crate) fn can_refine(&self, fine_log2: u8) -> bool {
        matches!(&self.mode, Mode::Rans { tables, block_log2, .. }
            if tables.len() >= 2 && fine_log2 < *block_log2)
    }

    /// Refines a plan made on long blocks with the histograms of blocks of `1 <<
    /// fine_log2` symbols (the same stream): the short blocks take the planned tables in
    /// runs ([`assign_in_runs`]), the tables are refitted to them, [`REFINE_ROUNDS`]
    /// times, then the blocks are lengthened again where that codes smaller
    /// ([`coarsen_blocks`]). Kept when the estimate is smaller than the plan's. The table
    /// search itself runs on the long blocks: run on the short ones it made the one-thread
    /// pack 7–9 times slower (BENCHMARKS.md, fifteenth session).
    ///
    /// `coarse`, where given, holds the same stream's histograms on longer blocks: the
    /// refits sum those where a run of short blocks covers one (the same tables).
    ///
    /// Where the refined plan is kept on the short blocks themselves, returns every short
    /// block's bits under each of its tables (block-major), which
    /// [`Self::mark_raw_with_costs`] then need not compute again.
    pub(crate) fn refine(
        &mut self,
        fine: &[SparseHist],
        fine_log2: u8,
        chunk_log2: u8,
        coarse: Option<Coarse<'_>>,
    ) -> Option<Vec<f32>> {
        if !self.can_refine(fine_log2) {
            return None;
        }
        let Mode::Rans {
            tables,
            block_tables,
            block_log2,
            ..
        } = &self.mode
        else {
            return None;
        };
        let alphabet = 1usize << MAX_SYMBOL_BITS;
        let switches = Switches {
            bits: self.switch_bits,
        };
        let shift = *block_log2 - fine_log2;
        let current: Vec<u8> = (0..fine.len())
            .map(|b| block_tables.get(b >> shift).copied().unwrap_or(0))
            .collect();
        // Bytes of `tables` with the short blocks' `assign` (their bits under each table in
        // `per_block`) and the run-coded `ids`.
        let bytes_of = |per_block: &[f32], tables: &[FreqTable], assign: &[u8], ids: &[u8]| {
            let k = tables.len();
            let bits: f64 = per_block
                .par_chunks(k)
                .zip(assign)
                .map(|(bits, &a)| f64::from(bits[usize::from(a)]))
                .sum();
            bits / 8.0 + (3 + tables_bytes(tables)) as f64 + ids_bytes(ids, k)
        };
        let mut refit = tables.clone();
        let mut per_block = all_block_costs(fine, &CostMatrix::new(&refit, alphabet));
        // The first round's costs are the plan's: its size on the short blocks.
        let before = bytes_of(&per_block, tables, &current, block_tables);
        let mut round = 0;
        let (refit, assign, per_block) = loop {
            if round > 0 {
                // (Into the last round's buffer: a fresh one per round was fresh pages.)
                all_block_costs_into(fine, &CostMatrix::new(&refit, alphabet), &mut per_block);
            }
            let mut assign = assign_in_runs(&per_block, refit.len(), switches);
            if round == REFINE_ROUNDS {
                break (refit, assign, per_block);
            }
            round += 1;
            // Tables no short block takes are dropped before the refit.
            let mut taken = vec![false; refit.len()];
            for &a in &assign {
                taken[usize::from(a)] = true;
            }
            let mut used = 0u8;
            let renumber: Vec<u8> = taken
                .iter()
                .map(|&t| {
                    let id = used;
                    used += u8::from(t);
                    id
                })
                .collect();
            for a in assign.iter_mut() {
                *a = renumber[usize::from(*a)];
            }
            let next = fit_tables_runs(fine, coarse, &assign, usize::from(used), alphabet);
            if next.len() != usize::from(used) {
                return None;
            }
            if next == refit {
                // A fixed point (no table dropped, so `assign` was not renumbered): the
                // rounds left would compute these tables and this assignment again.
                break (refit, assign, per_block);
            }
            refit = next;
        };
        let coded = bytes_of(&per_block, &refit, &assign, &assign);
        let (tables, ids, log2, after) = coarsen_blocks(
            fine,
            refit,
            assign,
            fine_log2,
            chunk_log2,
            coded,
            Some(&per_block),
            coarse,
            switches,
        );
        if after >= before {
            return None;
        }
        let symbol_bits = self.symbol_bits;
        let enc = tables
            .iter()
            .map(|t| EncTable::new(t, symbol_bits))
            .collect();
        // Blocks kept short keep the refit tables (coarsening changes neither): the last
        // round's costs are theirs.
        let costs = (log2 == fine_log2).then_some(per_block);
        self.mode = Mode::Rans {
            tables,
            enc,
            block_tables: ids,
            block_log2: log2,
            blocks_per_chunk: 1 << (chunk_log2 - log2),
        };
        costs
    }

    /// Whether [`Self::mark_raw`] may find raw blocks on blocks of the histograms' length:
    /// a rANS plan with a block of `hists` (on blocks of `1 << hist_log2` symbols, at
    /// most the plan's) that its table codes in at least [`RAW_HINT`] of its packed bits.
    /// (Only such near-uniform regions can hold shorter blocks worth storing raw; the
    /// tensor encoder counts those blocks' histograms only then.)
    pub(crate) fn may_have_raw(&self, hists: &[SparseHist], hist_log2: u8) -> bool {
        self.raw_ids(hists, hist_log2, RAW_HINT, None)
            .is_some_and(|(ids, raw)| ids.contains(&raw))
    }

    /// Each block of `hists` (on blocks of `1 << hist_log2` symbols, at most the plan's):
    /// its plan table, or the raw id (the table count, returned too) where that table
    /// codes it in at least `share` of its packed bits. `None` for a plan that is not
    /// rANS or whose blocks are shorter than the histograms'. `known`: each block's bits
    /// under each of the plan's tables where the caller has them (block-major, as
    /// [`Self::refine`] returns them), used where they fit the plan's blocks and tables.
    fn raw_ids(
        &self,
        hists: &[SparseHist],
        hist_log2: u8,
        share: f64,
        known: Option<&[f32]>,
    ) -> Option<(Vec<u8>, u8)> {
        let symbol_bits = self.symbol_bits;
        let Mode::Rans {
            tables,
            block_tables,
            block_log2,
            ..
        } = &self.mode
        else {
            return None;
        };
        if *block_log2 < hist_log2 || tables.len() >= usize::from(u8::MAX) {
            return None;
        }
        let shift = block_log2 - hist_log2;
        let alphabet = 1usize << symbol_bits;
        let k = tables.len();
        // The same values as `block_cost` gives (a cost matrix's lanes are bit-identical
        // to it).
        let known = known.filter(|c| shift == 0 && c.len() == hists.len() * k);
        let costs: Vec<Vec<f32>> = match known {
            Some(_) => Vec::new(),
            None => tables.iter().map(|t| bit_costs(t, alphabet)).collect(),
        };
        let raw_id = tables.len() as u8;
        let ids = hists
            .par_iter()
            .enumerate()
            .map(|(i, h)| {
                let t = block_tables.get(i >> shift).copied().unwrap_or(0);
                let coded = f64::from(match known {
                    Some(known) => known[i * k + usize::from(t)],
                    None => block_cost(h, &costs[usize::from(t)]),
                });
                let n: u64 = h.iter().map(|&(_, c)| u64::from(c)).sum();
                if n > 0 && coded >= share * (n * u64::from(symbol_bits)) as f64 {
                    raw_id
                } else {
                    t
                }
            })
            .collect();
        Some((ids, raw_id))
    }

    /// Marks as raw (format 1.4, stream mode 5) every block of `hists` (on blocks of
    /// `1 << hist_log2` symbols, at most the plan's) that its table does not code in
    /// meaningfully fewer bits than packing (at least [`RAW_SHARE`] of them): such a block
    /// costs the same stored raw, and the decoder copies it instead of running the rANS
    /// step over it. Where a block turns raw the plan takes the histograms' blocks (each
    /// coded one keeping its table; the run-coded ids cost a few bits per run), and the
    /// tables are refitted to the blocks still coded; a plan whose blocks all turn raw
    /// becomes [`Mode::Packed`].
    pub(crate) fn mark_raw(&mut self, hists: &[SparseHist], hist_log2: u8) {
        self.mark_raw_with_costs(hists, hist_log2, None);
    }

    /// [`Self::mark_raw`] with the blocks' bits under each table where the caller has
    /// them ([`Self::refine`]'s; ignored unless they are for these blocks and tables).
    pub(crate) fn mark_raw_with_costs(
        &mut self,
        hists: &[SparseHist],
        hist_log2: u8,
        costs: Option<&[f32]>,
    ) {
        let symbol_bits = self.symbol_bits;
        let Some((ids, raw_id)) = self.raw_ids(hists, hist_log2, RAW_SHARE, costs) else {
            return;
        };
        if !ids.contains(&raw_id) {
            return;
        }
        let Mode::Rans {
            block_log2,
            blocks_per_chunk,
            ..
        } = &self.mode
        else {
            return;
        };
        let blocks_per_chunk = *blocks_per_chunk << (*block_log2 - hist_log2);
        let block_log2 = hist_log2;
        let alphabet = 1usize << symbol_bits;
        // Refit the tables to the coded blocks; tables only raw blocks took are dropped.
        let k = usize::from(raw_id);
        let mut used = vec![false; k];
        for &t in ids.iter().filter(|&&t| t != raw_id) {
            used[usize::from(t)] = true;
        }
        let mut renumber = vec![0u8; k + 1];
        let mut next = 0u8;
        for (r, &u) in renumber.iter_mut().zip(&used) {
            *r = next;
            next += u8::from(u);
        }
        if next == 0 {
            *self = Self::packed(symbol_bits);
            return;
        }
        renumber[k] = next;
        let ids: Vec<u8> = ids.iter().map(|&t| renumber[usize::from(t)]).collect();
        let (coded_hists, assign): (Vec<&SparseHist>, Vec<u8>) = hists
            .iter()
            .zip(&ids)
            .filter(|&(_, &id)| id != next)
            .map(|(h, &id)| (h, id))
            .unzip();
        let tables = fit_tables(
            coded_hists.into_iter(),
            &assign,
            usize::from(next),
            alphabet,
        );
        if tables.len() != usize::from(next) {
            return;
        }
        let enc = tables
            .iter()
            .map(|t| EncTable::new(t, symbol_bits))
            .collect();
        self.mode = Mode::Rans {
            tables,
            enc,
            block_tables: ids,
            block_log2,
            blocks_per_chunk,
        };
    }

    /// Bit packing (also used when the coded stream turned out no smaller).
    pub fn packed(symbol_bits: u32) -> Self {
        Self {
            symbol_bits,
            mode: Mode::Packed,
            switch_bits: 0.0,
        }
    }

    /// True if the stream stores its symbols bit-packed.
    pub fn is_packed(&self) -> bool {
        matches!(self.mode, Mode::Packed)
    }

    /// Codes chunk `c` (its symbols) into the piece that [`Self::assemble`] expects.
    ///
    /// Symbols the plan's model cannot code (absent from the chunk's tables, wider than
    /// the stream's symbols, or not the value of a constant stream) and chunks past the
    /// plan's blocks are refused with an error, before anything is coded.
    pub fn encode_chunk(&self, c: usize, symbols: &[u16]) -> Result<Vec<u8>, EntropyError> {
        let mut out = Vec::new();
        match &self.mode {
            Mode::Packed => {
                out = crate::recycle::buffer(bitpack::packed_len(symbols.len(), self.symbol_bits));
                let limit = 1u32 << self.symbol_bits;
                // One OR over the chunk (vectorised) decides; the search names the culprit.
                let any_wide = u32::from(symbols.iter().fold(0, |m, &s| m | s)) >= limit;
                if let Some(index) = symbols
                    .iter()
                    .position(|&s| any_wide && u32::from(s) >= limit)
                {
                    return Err(EntropyError::SymbolNotInModel {
                        index,
                        symbol: symbols[index],
                    });
                }
                bitpack::pack(symbols, self.symbol_bits, &mut out)
            }
            Mode::Const(v) => {
                if let Some(index) = symbols.iter().position(|s| s != v) {
                    return Err(EntropyError::SymbolNotInModel {
                        index,
                        symbol: symbols[index],
                    });
                }
            }
            Mode::Rans {
                enc,
                block_tables,
                block_log2,
                blocks_per_chunk,
                ..
            } => {
                let chunks = block_tables.len().div_ceil(*blocks_per_chunk);
                if c >= chunks && !(c == 0 && symbols.is_empty()) {
                    return Err(EntropyError::NoSuchChunk { chunk: c, chunks });
                }
                let first = (c * blocks_per_chunk).min(block_tables.len());
                let last = (first + blocks_per_chunk).min(block_tables.len());
                let ids = &block_tables[first..last];
                let block_len = 1usize << block_log2;
                if ids.iter().any(|&t| usize::from(t) >= enc.len()) {
                    return self.encode_raw_chunk(symbols, ids, enc, block_len);
                }
                let tables: Vec<&EncTable> = ids.iter().map(|&t| &enc[usize::from(t)]).collect();
                rans::encode_chunk(symbols, &tables, block_len, &mut out)?
            }
        }
        Ok(out)
    }

    /// [`Self::encode_chunk`] for a chunk with raw blocks (ids `enc.len()`, mode 5): the
    /// coded blocks, taken together, are coded as one chunk (each keeps its lanes: the raw
    /// blocks before it hold whole groups), and the raw blocks' symbols are packed into
    /// the raw area, placed after that chunk's states (FORMAT.md §5.5.1). An all-raw chunk
    /// is its raw area alone.
    fn encode_raw_chunk(
        &self,
        symbols: &[u16],
        ids: &[u8],
        enc: &[EncTable],
        block_len: usize,
    ) -> Result<Vec<u8>, EntropyError> {
        let limit = 1u32 << self.symbol_bits;
        // The raw and the coded symbols' counts first: both buffers are sized once (no
        // reallocation and copy as they grow).
        let blocks = || symbols.chunks(block_len).zip(ids);
        let raw_len: usize = blocks()
            .filter(|&(_, &id)| usize::from(id) >= enc.len())
            .map(|(block, _)| block.len())
            .sum();
        let area_len = rans::raw_area_len(raw_len, self.symbol_bits);
        // An all-raw chunk's piece is its area: a spare buffer if there is one.
        let mut area = match raw_len == symbols.len() {
            true => crate::recycle::buffer(area_len),
            false => Vec::with_capacity(area_len),
        };
        let mut coded = Vec::with_capacity(symbols.len() - raw_len);
        // Where each coded symbol is in the chunk, by runs: (start in `coded`, in chunk).
        let mut starts = Vec::new();
        let mut tables = Vec::new();
        for (b, (block, &id)) in blocks().enumerate() {
            match enc.get(usize::from(id)) {
                Some(table) => {
                    starts.push((coded.len(), b * block_len));
                    coded.extend_from_slice(block);
                    tables.push(table);
                }
                None => {
                    // One OR over the block (vectorised) decides, as for packed streams
                    // (`limit` is a power of two); the search names the culprit.
                    let any_wide = u32::from(block.iter().fold(0, |m, &s| m | s)) >= limit;
                    if let Some(k) = block
                        .iter()
                        .position(|&s| any_wide && u32::from(s) >= limit)
                    {
                        return Err(EntropyError::SymbolNotInModel {
                            index: b * block_len + k,
                            symbol: block[k],
                        });
                    }
                    // Packed block by block, straight from the chunk: every block but
                    // the chunk's last holds a multiple of 32 symbols, i.e. whole bytes,
                    // so the bits are those of packing the raw symbols in one run.
                    bitpack::pack(block, self.symbol_bits, &mut area);
                }
            }
        }
        area.resize(area_len, 0);
        if coded.is_empty() {
            return Ok(area);
        }
        let mut payload = Vec::new();
        rans::encode_chunk(&coded, &tables, block_len, &mut payload).map_err(|e| match e {
            EntropyError::SymbolNotInModel { index, symbol } => {
                // The position in the chunk of the compacted chunk's symbol `index`.
                let at = starts.partition_point(|&(c, _)| c <= index) - 1;
                EntropyError::SymbolNotInModel {
                    index: starts[at].1 + index - starts[at].0,
                    symbol,
                }
            }
            e => e,
        })?;
        let mut out = Vec::with_capacity(payload.len() + area.len());
        out.extend_from_slice(&payload[..STATE_BYTES]);
        out.extend_from_slice(&area);
        out.extend_from_slice(&payload[STATE_BYTES..]);
        Ok(out)
    }

    /// Joins the header and the pieces of every chunk, in chunk order, without copying the
    /// pieces: the stream is returned as its segments.
    pub fn assemble(&self, pieces: Vec<Vec<u8>>) -> CodedStream {
        let mut segments = Vec::with_capacity(pieces.len() + 1);
        match &self.mode {
            Mode::Packed => {
                segments.push(vec![MODE_PACKED]);
                segments.extend(pieces);
            }
            Mode::Const(v) => {
                let [lo, hi] = v.to_le_bytes();
                segments.push(vec![MODE_CONST, lo, hi]);
            }
            Mode::Rans {
                tables,
                block_tables,
                block_log2,
                ..
            } => {
                let raw = block_tables.iter().any(|&t| usize::from(t) >= tables.len());
                let mode = if raw {
                    MODE_RANS_RAW
                } else {
                    MODE_RANS_RUN_IDS
                };
                let mut head = vec![mode, tables.len() as u8, *block_log2];
                let n_ids = tables.len() + usize::from(raw);
                head.extend_from_slice(&table_code::write_tables_and_ids(
                    tables,
                    block_tables,
                    n_ids,
                ));
                for p in &pieces {
                    head.extend_from_slice(&(p.len() as u32).to_le_bytes());
                }
                segments.push(head);
                let mut len = segments[0].len();
                for p in pieces {
                    // Payloads start at multiples of 4: pad the segment before this one.
                    let aligned = len.next_multiple_of(4);
                    let last = segments.last_mut().expect("the header segment is first");
                    last.resize(last.len() + aligned - len, 0);
                    len = aligned + p.len();
                    segments.push(p);
                }
            }
        }
        CodedStream { segments }
    }
}

/// A coded stream held as consecutive segments (header, chunk payloads), so that large
/// streams are written out without first being copied into one buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodedStream {
    segments: Vec<Vec<u8>>,
}

impl CodedStream {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.segments.iter().map(Vec::len).sum()
    }

    /// True if the stream has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Vec<u8>] {
        &self.segments
    }

    /// The stream as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        self.segments.concat()
    }

    /// Hands the segments' buffers to the encoder's spare buffers once the stream has
    /// been written out.
    pub(crate) fn recycle(self) {
        for segment in self.segments {
            crate::recycle::give_back(segment);
        }
    }
}

impl From<Vec<u8>> for CodedStream {
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            segments: vec![bytes],
        }
    }
}

/// Order-0 entropy of a histogram in bits (total, not per symbol), with the Miller–Madow
/// correction for the bias of small samples: `(distinct - 1) / (2 n ln 2)` bits per symbol.
/// (The encoder uses the sparse form, [`sparse_entropy_bits`]; this dense one is what the
/// tests check it against.)
#[cfg(test)]
pub fn corrected_entropy_bits(hist: &[u32]) -> f64 {
    let n: f64 = hist.iter().map(|&c| f64::from(c)).sum();
    if n == 0.0 {
        return 0.0;
    }
    let distinct = hist.iter().filter(|&&c| c > 0).count() as f64;
    let plain: f64 = hist
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| f64::from(c) * (n / f64::from(c)).log2())
        .sum();
    plain + (distinct - 1.0) / (2.0 * std::f64::consts::LN_2)
}

/// A block histogram reduced to its present symbols, `(symbol, count)` in increasing
/// symbol order: clustering evaluates every block against every table many times, and a
/// block uses few of the alphabet's symbols.
pub(crate) type SparseHist = Vec<(u16, u32)>;
type Sparse = SparseHist;

#[cfg(any(test, feature = "fuzzing"))]
fn sparse(hist: &[u32]) -> Sparse {
    hist.iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(s, &c)| (s as u16, c))
        .collect()
}

/// Picks the tables and each block's table; returns them with the estimated bytes of
/// tables, block ids and coded symbols. Table counts 1, 2, 4, … are tried while the
/// estimate keeps improving.
fn choose_tables(
    block_hists: &[Sparse],
    total: &[u64],
    effort: Effort,
    max_tables: Option<usize>,
) -> (Vec<FreqTable>, Vec<u8>, f64) {
    let single =
        FreqTable::from_counts(&saturate(total)).expect("caller checked 2..=256 distinct symbols");
    let cost_of = |tables: &[FreqTable], assign: &[u8]| -> f64 {
        let costs: Vec<Vec<f32>> = tables.iter().map(|t| bit_costs(t, total.len())).collect();
        let bits: f64 = block_hists
            .par_iter()
            .zip(assign)
            .map(|(h, &a)| f64::from(block_cost(h, &costs[usize::from(a)])))
            .sum();
        let header: usize = 3 + tables_bytes(tables);
        bits / 8.0 + header as f64 + ids_bytes(assign, tables.len())
    };
    let assign = vec![0u8; block_hists.len()];
    let mut best_size = cost_of(std::slice::from_ref(&single), &assign);
    let mut best = (vec![single], assign);
    let max_tables = max_tables
        .unwrap_or(effort.max_tables())
        .min(effort.max_tables())
        .min(block_hists.len());
    if effort.stops_early() && max_tables > 1 {
        // No set of tables codes a block in fewer bits than its own entropy, and a second
        // table costs about as many bytes as the first: when that floor is within
        // MIN_POTENTIAL of one table, clustering cannot gain enough to pay for its search
        // (on MiniLM those tensors gain 0.1 % at most from it).
        let floor: f64 = block_hists.par_iter().map(effort.entropy()).sum::<f64>() / 8.0
            + tables_bytes(&best.0[..1]) as f64;
        if floor > best_size * (1.0 - MIN_POTENTIAL) {
            return (best.0, best.1, best_size);
        }
    }
    let mut k = 2;
    while k <= max_tables {
        let (tables, assign) = cluster(block_hists, total, k, effort);
        let size = cost_of(&tables, &assign);
        if size < best_size {
            let gain = 1.0 - size / best_size;
            best_size = size;
            best = (tables, assign);
            // Each doubling gains a fraction of the one before (on MiniLM's embedding
            // 1.1 %, 0.3 %, 0.06 %): after a small gain the next is not worth its search.
            if effort.stops_early() && gain < MIN_DOUBLING_GAIN {
                break;
            }
        } else if effort.stops_early() {
            break;
        }
        k *= 2;
    }
    (best.0, best.1, best_size)
}

/// Longer blocks need fewer table ids (one byte per block): picks the block length, from
/// the planned one up to the chunk length, that codes the stream smallest with the chosen
/// tables, each longer block taking the table that codes its symbols in the fewest bits.
/// A stream with one table needs no ids at all: its blocks become chunks (one id per
/// chunk, the least the format allows). Returns the tables (refitted to the new blocks,
/// without any no block uses), the ids, the block length exponent and the estimated
/// bytes, as [`choose_tables`] does.
///
/// Decoders read any block length up to the chunk length; longer blocks only mean fewer
/// table switches. On MiniLM nearly every exponent stream has one table, and the ids
/// were a fifth of the stream overheads.
// (The last two arguments are what the refinement already has; a struct for them would
// only be unpacked again here.)
#[allow(clippy::too_many_arguments)]
fn coarsen_blocks(
    block_hists: &[Sparse],
    tables: Vec<FreqTable>,
    assign: Vec<u8>,
    block_log2: u8,
    chunk_log2: u8,
    coded: f64,
    per_block: Option<&[f32]>,
    coarse: Option<Coarse<'_>>,
    switches: Switches,
) -> (Vec<FreqTable>, Vec<u8>, u8, f64) {
    let levels = chunk_log2 - block_log2;
    if levels == 0 {
        return (tables, assign, block_log2, coded);
    }
    if tables.len() == 1 {
        // One table: the ids cost nothing (mode 4) and the blocks become chunks.
        let blocks = assign.len().div_ceil(1 << levels);
        return (tables, vec![0; blocks], chunk_log2, coded);
    }
    let alphabet = 1usize << MAX_SYMBOL_BITS;
    let k = tables.len();
    // Bits of every block under every table (infinite where the table lacks a symbol),
    // `k` per block: the caller's where it has them for these tables.
    let computed;
    let per_block = match per_block.filter(|p| p.len() == block_hists.len() * k) {
        Some(p) => p,
        None => {
            computed = all_block_costs(block_hists, &CostMatrix::new(&tables, alphabet));
            &computed[..]
        }
    };
    // (level, bytes, ids, objective in bytes: the bytes, plus the switches' where they count)
    let mut best = (0u8, f64::INFINITY, Vec::new(), f64::INFINITY);
    if switches.count() {
        let mut sums = vec![0.0f64; k];
        for up in 0..=levels {
            let (ids, bits, objective) =
                charged_level_choice(per_block, k, up, switches, &mut sums);
            let id_bytes = ids_bytes(&ids, k);
            if objective / 8.0 + id_bytes < best.3 {
                best = (up, bits / 8.0 + id_bytes, ids, objective / 8.0 + id_bytes);
            }
        }
    } else {
        for (up, (ids, bits)) in (0..=levels).zip(level_choices(per_block, k, levels)) {
            let size = bits / 8.0 + ids_bytes(&ids, k);
            if size < best.3 {
                best = (up, size, ids, size);
            }
        }
    }
    if best.0 == 0 && switches.count() {
        // The blocks stay as they are, with the ids chosen for them here.
        let coded = 3.0 + tables_bytes(&tables) as f64 + best.1;
        return (tables, best.2, block_log2, coded);
    }
    let (best, ids) = ((best.0, best.1), best.2);
    if best.0 == 0 {
        return (tables, assign, block_log2, coded);
    }
    // Drop the tables no block takes any more and refit the rest to their blocks.
    let mut used = vec![false; tables.len()];
    for &t in &ids {
        used[usize::from(t)] = true;
    }
    let mut renumber = vec![0u8; tables.len()];
    let mut next = 0u8;
    for (r, &u) in renumber.iter_mut().zip(&used) {
        *r = next;
        next += u8::from(u);
    }
    let ids: Vec<u8> = ids.iter().map(|&t| renumber[usize::from(t)]).collect();
    let fine: Vec<u8> = (0..assign.len()).map(|b| ids[b >> best.0]).collect();
    let tables = fit_tables_runs(block_hists, coarse, &fine, usize::from(next), alphabet);
    let coded = 3.0 + tables_bytes(&tables) as f64 + best.1;
    (tables, ids, block_log2 + best.0, coded)
}

/// For each block length `block << up`, `up` in `0..=levels`, the table each group of
/// `1 << up` consecutive blocks codes in the fewest bits (the first of equals) and the
/// sum of those groups' bits: `per_block` holds each block's bits under each of `k`
/// tables, block-major.
fn level_choices(per_block: &[f32], k: usize, levels: u8) -> Vec<(Vec<u8>, f64)> {
    if sums_are_exact(per_block, k << levels, k) {
        level_choices_pairwise(per_block, k, levels)
    } else {
        level_choices_in_order(per_block, k, levels)
    }
}

/// The ids on blocks `up` levels longer when each change of table also costs
/// `switches.bits` ([`assign_in_runs`] over the groups' per-table sums, added block by
/// block), their bits, and the plan's objective: the bits plus the changes' charges.
fn charged_level_choice(
    per_block: &[f32],
    k: usize,
    up: u8,
    switches: Switches,
    sums: &mut [f64],
) -> (Vec<u8>, f64, f64) {
    let mut all: Vec<f32> = Vec::with_capacity(per_block.len().div_ceil(k << up) * k);
    for group in per_block.chunks(k << up) {
        sum_in_order(group, sums);
        all.extend(sums.iter().map(|&b| b as f32));
    }
    let ids = assign_in_runs(&all, k, switches);
    let bits: f64 = all
        .chunks_exact(k)
        .zip(&ids)
        .map(|(g, &t)| f64::from(g[usize::from(t)]))
        .sum();
    let changes = ids.windows(2).filter(|w| w[0] != w[1]).count();
    (ids, bits, bits + switches.bits * changes as f64)
}

/// Each table's sum over a group's blocks (`group` block-major, `sums.len()` tables),
/// added in block order: the order that the plan's figures are defined by.
fn sum_in_order(group: &[f32], sums: &mut [f64]) {
    sums.fill(0.0);
    for block in group.chunks_exact(sums.len()) {
        for (sum, &b) in sums.iter_mut().zip(block) {
            *sum += f64::from(b);
        }
    }
}

/// The least of a group's per-table sums: its table and bits.
fn least(sums: &[f64]) -> (usize, f64) {
    sums.iter()
        .copied()
        .enumerate()
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .expect("at least two tables")
}

/// [`level_choices`], each group's per-table sums added block by block.
fn level_choices_in_order(per_block: &[f32], k: usize, levels: u8) -> Vec<(Vec<u8>, f64)> {
    let mut sums = vec![0.0f64; k];
    (0..=levels)
        .map(|up| {
            let mut bits = 0.0;
            let ids = per_block
                .chunks(k << up)
                .map(|group| {
                    sum_in_order(group, &mut sums);
                    let (t, b) = least(&sums);
                    bits += b;
                    t as u8
                })
                .collect();
            (ids, bits)
        })
        .collect()
}

/// [`level_choices_in_order`] where [`sums_are_exact`]: a group's per-table sums are
/// then its two halves' sums added (the same values, every sum being exact), so each
/// length is summed from the one below instead of from every block again (the eleven
/// lengths of 256-symbol blocks in 2^18-symbol chunks read `per_block` eleven times).
/// `bits` adds the same values in the same order.
fn level_choices_pairwise(per_block: &[f32], k: usize, levels: u8) -> Vec<(Vec<u8>, f64)> {
    let mut level: Vec<f64> = per_block.iter().map(|&b| 0.0 + f64::from(b)).collect();
    (0..=levels)
        .map(|up| {
            if up > 0 {
                level = level
                    .chunks(2 * k)
                    .flat_map(|pair| {
                        let (a, b) = pair.split_at(k.min(pair.len()));
                        (0..a.len()).map(move |t| match b.get(t) {
                            Some(&b) => a[t] + b,
                            None => a[t],
                        })
                    })
                    .collect();
            }
            let mut bits = 0.0;
            let ids = level
                .chunks_exact(k)
                .map(|sums| {
                    let (t, b) = least(sums);
                    bits += b;
                    t as u8
                })
                .collect();
            (ids, bits)
        })
        .collect()
}

/// Whether every sum in `f64` of one table's finite values (`values` holds `k` tables'
/// per block, block-major) over blocks within one group of `group` values (any subset, in
/// any order) is exact: each finite value is a nonnegative multiple of the smallest unit
/// in the last place among them all, `2^q`, and each group's total per table stays below
/// `2^(52 + q)`, so that every partial sum is a multiple of `2^q` that `f64`'s 53 bits
/// hold. (Infinities add to infinity in any order.) Block costs pass unless a block costs
/// next to nothing (under 2^-7 bits for groups of 1024 blocks of 256 symbols).
fn sums_are_exact(values: &[f32], group: usize, k: usize) -> bool {
    if k == 0 || group == 0 || !group.is_multiple_of(k) {
        return false;
    }
    let mut min_exp = i32::MAX;
    let mut max_total = 0.0f64;
    let mut totals = vec![0.0f64; k];
    for g in values.chunks(group) {
        totals.fill(0.0);
        for block in g.chunks(k) {
            for (total, &v) in totals.iter_mut().zip(block) {
                if v == f32::INFINITY {
                    continue;
                }
                if !(v >= 0.0 && v.is_finite()) {
                    return false;
                }
                if v > 0.0 {
                    // The unit in the last place of `v`: 2^(e − 150) for a biased
                    // exponent e (subnormals: 2^−149).
                    let e = ((v.to_bits() >> 23) & 0xFF).max(1) as i32;
                    min_exp = min_exp.min(e - 150);
                }
                *total += f64::from(v);
            }
        }
        max_total = totals.iter().copied().fold(max_total, f64::max);
    }
    if min_exp == i32::MAX {
        return true;
    }
    // (The totals are rounded themselves, by far less than the factor of 2 of margin.)
    max_total < (2.0f64).powi(52 + min_exp)
}

/// A block is stored raw (format 1.4) where its table codes it in at least this share of
/// its packed bits (by the order-0 estimate with the table's quantised frequencies): no
/// smaller coded, and a raw block decodes as a copy. On MiniLM (BENCHMARKS.md, eighteenth
/// session, raw18) 1.0 stores 87,615 of F32's 93,102 low-byte blocks raw (81.4792 %);
/// 0.98 adds 287 (81.4787 %, 0.9 81.4763 %) but makes F16 and E5M2 24 and 32 bytes larger
/// where 1.0 leaves them as they were.
const RAW_SHARE: f64 = 1.0;

/// [`StreamEncoder::may_have_raw`]'s share: blocks this close to packing may hold shorter
/// blocks at [`RAW_SHARE`] (a block of 2048 symbols with one row of zeros in five).
const RAW_HINT: f64 = 0.7;

/// [`Effort::Default`] searches for several tables only when the blocks' own entropies
/// are at least this fraction below one table's cost.
const MIN_POTENTIAL: f64 = 0.008;
/// [`Effort::Default`] tries twice as many tables only after the last doubling gained at
/// least this fraction. 0.005 while a table cost `2 + 4k` bytes; with format 1.2's compact
/// tables (about a fifth of that) smaller gains pay for the next doubling: 0.001 makes
/// MiniLM F16 4.1 KB smaller (84.5069 → 84.4977 %, under #12's 84.5 %) for about a fifth
/// more one-thread F16 encode time (BF16 and F32 within noise), BENCHMARKS.md fourteenth
/// session.
const MIN_DOUBLING_GAIN: f64 = 0.001;

/// [`corrected_entropy_bits`] of a sparse histogram: the same value, term by term (the
/// dense form's zero counts add nothing to its sums).
pub(crate) fn sparse_entropy_bits(hist: &Sparse) -> f64 {
    let n: f64 = hist.iter().map(|&(_, c)| f64::from(c)).sum();
    if n == 0.0 {
        return 0.0;
    }
    let plain: f64 = if n == PLAN_BLOCK_N {
        // A whole planning block: each term from the table, which holds the very value
        // the expression below computes (the same operations on the same operands), so
        // the sum is bit-identical, without a logarithm per present symbol (they were
        // 6 % of the default F32 pack's instructions).
        let terms = &*PLAN_BLOCK_TERMS;
        hist.iter()
            .map(|&(_, c)| match terms.get(c as usize) {
                Some(&t) => t,
                None => f64::from(c) * (n / f64::from(c)).log2(),
            })
            .sum()
    } else {
        hist.iter()
            .map(|&(_, c)| f64::from(c) * (n / f64::from(c)).log2())
            .sum()
    };
    plain + (hist.len() as f64 - 1.0) / (2.0 * std::f64::consts::LN_2)
}

/// Symbols of the blocks the encoder plans on and samples (2048: the tensor encoder's
/// planning block), whose entropies [`sparse_entropy_bits`] takes from [`PLAN_BLOCK_TERMS`].
const PLAN_BLOCK_N: f64 = 2048.0;

/// `c · log2(PLAN_BLOCK_N / c)` for every count `c ≤ PLAN_BLOCK_N`, computed exactly as
/// [`sparse_entropy_bits`] computes its terms (index 0 as that expression gives it).
static PLAN_BLOCK_TERMS: std::sync::LazyLock<Vec<f64>> = std::sync::LazyLock::new(|| {
    (0..=PLAN_BLOCK_N as u32)
        .map(|c| f64::from(c) * (PLAN_BLOCK_N / f64::from(c)).log2())
        .collect()
});

/// Counts below this take `c·log2(c)` from [`C_LOG2_C`]: blocks of up to 2048 symbols,
/// the fast level's planning blocks.
const C_LOG2_C_LEN: usize = 2049;

/// `c·log2(c)` for every `c < C_LOG2_C_LEN`.
static C_LOG2_C: std::sync::LazyLock<Vec<f64>> = std::sync::LazyLock::new(|| {
    (0..C_LOG2_C_LEN)
        .map(|c| {
            if c == 0 {
                0.0
            } else {
                c as f64 * (c as f64).log2()
            }
        })
        .collect()
});

/// [`sparse_entropy_bits`] as `n·log2(n) − Σ c·log2(c)`, the terms looked up: one
/// logarithm per block instead of one per present symbol, which made the entropy checks
/// of the fast level's planning an eighth of its F32 encode (blocks of 8-bit mantissa
/// bytes hold ~250 distinct values). Equal up to rounding.
fn sparse_entropy_bits_fast(hist: &Sparse) -> f64 {
    let lut = &*C_LOG2_C;
    let mut n = 0u64;
    let mut sum = 0.0;
    for &(_, c) in hist {
        n += u64::from(c);
        sum += match lut.get(c as usize) {
            Some(&t) => t,
            None => f64::from(c) * f64::from(c).log2(),
        };
    }
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    (n * n.log2() - sum).max(0.0) + (hist.len() as f64 - 1.0) / (2.0 * std::f64::consts::LN_2)
}

/// Scales counts down to fit u32, keeping every present symbol present.
fn saturate(counts: &[u64]) -> Vec<u32> {
    let max = counts.iter().copied().max().unwrap_or(0);
    let shift = (64 - max.leading_zeros()).saturating_sub(31);
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0
            } else {
                ((c >> shift) as u32).max(1)
            }
        })
        .collect()
}

/// k-means over block histograms with coded size as the distance. Each table holds only
/// the symbols of its cluster (padding tables with absent symbols costs every block their
/// minimum frequencies), so a block can only move to a table that has all its symbols;
/// its own cluster's table always qualifies.
fn cluster(
    block_hists: &[Sparse],
    total: &[u64],
    k: usize,
    effort: Effort,
) -> (Vec<FreqTable>, Vec<u8>) {
    let alphabet = total.len();
    // Fit on at most ~1024 evenly spread blocks; the full set is assigned once at the end.
    let step = block_hists.len().div_ceil(1024).max(1);
    let sample: Vec<&Sparse> = block_hists.iter().step_by(step).collect();
    // Seed: order blocks by their mean symbol (for exponents, their scale) and cut the
    // order into k groups of equal size.
    let mut order: Vec<(f64, usize)> = sample
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let n: u64 = h.iter().map(|&(_, c)| u64::from(c)).sum();
            let s: u64 = h
                .iter()
                .map(|&(sym, c)| u64::from(sym) * u64::from(c))
                .sum();
            (s as f64 / n.max(1) as f64, i)
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut assign = vec![0u8; sample.len()];
    for (rank, &(_, i)) in order.iter().enumerate() {
        assign[i] = (rank * k / order.len()) as u8;
    }
    for _ in 0..effort.rounds() {
        let tables = fit_tables(sample.iter().copied(), &assign, k, alphabet);
        if !assign_blocks(sample.iter().copied(), &tables, alphabet, &mut assign) {
            break;
        }
    }
    // Every block picks among the fitted tables, then the tables are refitted on the full
    // assignment, so each table holds every symbol of every block that uses it.
    let fitted = fit_tables(sample.iter().copied(), &assign, k, alphabet);
    let mut full = vec![0u8; block_hists.len()];
    let matrix = CostMatrix::new(&fitted, alphabet);
    full.par_iter_mut()
        .zip(block_hists)
        .for_each(|(a, h)| *a = matrix.best(h));
    let mut used = vec![false; fitted.len()];
    for &a in &full {
        used[usize::from(a)] = true;
    }
    // Drop tables no block chose and renumber the rest.
    let mut renumber = vec![0u8; fitted.len()];
    let mut next = 0u8;
    for (t, &u) in used.iter().enumerate() {
        renumber[t] = next;
        next += u8::from(u);
    }
    for a in &mut full {
        *a = renumber[usize::from(*a)];
    }
    let tables = fit_tables(block_hists.iter(), &full, usize::from(next), alphabet);
    (tables, full)
}

/// Builds table `t` from the summed histograms of the blocks assigned to `t`, for every
/// `t < k` that has blocks (tables of empty clusters are left out).
fn fit_tables<'h>(
    hists: impl Iterator<Item = &'h Sparse>,
    assign: &[u8],
    k: usize,
    alphabet: usize,
) -> Vec<FreqTable> {
    debug_assert!(alphabet <= 1 << MAX_SYMBOL_BITS);
    // Fixed-size sums, so the masked index needs no bounds check (symbols are at most
    // MAX_SYMBOL_BITS wide): this runs over every entry of every block, per refit.
    let mut sums = vec![[0u64; 1 << MAX_SYMBOL_BITS]; k];
    for (h, &a) in hists.zip(assign) {
        add_hist(&mut sums[usize::from(a)], h);
    }
    tables_of_sums(&sums, alphabet)
}

/// Adds a block's counts to a table's sums.
#[inline(always)]
fn add_hist(sum: &mut [u64; 1 << MAX_SYMBOL_BITS], h: &Sparse) {
    for &(s, c) in h {
        sum[usize::from(s) & ((1 << MAX_SYMBOL_BITS) - 1)] += u64::from(c);
    }
}

/// [`fit_tables`]'s tables from the per-table sums.
fn tables_of_sums(sums: &[[u64; 1 << MAX_SYMBOL_BITS]], alphabet: usize) -> Vec<FreqTable> {
    sums.iter()
        .filter_map(|acc| FreqTable::from_counts(&saturate(&acc[..alphabet])))
        .collect()
}

/// Histograms of the same stream on blocks `1 << shift` times as long as the ones being
/// refitted: block `b` covers the short blocks `b << shift ..` (the last one the rest).
#[derive(Clone, Copy)]
pub(crate) struct Coarse<'h> {
    /// One histogram per long block.
    pub hists: &'h [SparseHist],
    /// How many times longer, as a power of two.
    pub shift: u8,
}

/// [`fit_tables`] of the short blocks `fine`, where each run of short blocks that make
/// up one of `coarse`'s long blocks and share a table adds the long block's histogram
/// instead of theirs: the same integer sums, hence the same tables, from a fraction of
/// the entries (the refinement's runs are long; the refits went over every short block's
/// entries, a twelfth of the default F32 pack's instructions).
fn fit_tables_runs(
    fine: &[Sparse],
    coarse: Option<Coarse<'_>>,
    assign: &[u8],
    k: usize,
    alphabet: usize,
) -> Vec<FreqTable> {
    let Some(coarse) = coarse.filter(|c| {
        assign.len() == fine.len()
            && c.shift < 16
            && c.hists.len() == fine.len().div_ceil(1 << c.shift)
    }) else {
        return fit_tables(fine.iter(), assign, k, alphabet);
    };
    debug_assert!(alphabet <= 1 << MAX_SYMBOL_BITS);
    let mut sums = vec![[0u64; 1 << MAX_SYMBOL_BITS]; k];
    let run = 1usize << coarse.shift;
    for ((long, ids), shorts) in coarse
        .hists
        .iter()
        .zip(assign.chunks(run))
        .zip(fine.chunks(run))
    {
        let a = ids[0];
        if ids.iter().all(|&t| t == a) {
            add_hist(&mut sums[usize::from(a)], long);
        } else {
            for (h, &t) in shorts.iter().zip(ids) {
                add_hist(&mut sums[usize::from(t)], h);
            }
        }
    }
    tables_of_sums(&sums, alphabet)
}

/// Rounds of assignment and refit of [`StreamEncoder::refine`].
const REFINE_ROUNDS: usize = 3;

/// Every block's bits under every table of `matrix`, `matrix.tables()` per block in one
/// buffer (block-major).
fn all_block_costs(hists: &[Sparse], matrix: &CostMatrix) -> Vec<f32> {
    let mut per_block = Vec::new();
    all_block_costs_into(hists, matrix, &mut per_block);
    per_block
}

/// [`all_block_costs`] into `per_block` (resized to fit).
fn all_block_costs_into(hists: &[Sparse], matrix: &CostMatrix, per_block: &mut Vec<f32>) {
    let k = matrix.tables();
    per_block.resize(hists.len() * k, 0.0);
    per_block
        .par_chunks_mut(k)
        .zip(hists)
        .for_each(|(bits, h)| matrix.costs(h, bits));
}

/// What a change of table between neighbouring blocks costs a plan beyond its id, in
/// bits (0 for plans by size alone; see [`StreamEncoder::plan_sparse`]).
#[derive(Clone, Copy, Debug)]
struct Switches {
    bits: f64,
}

impl Switches {
    /// Whether changes of table count beyond their ids.
    fn count(self) -> bool {
        self.bits > 0.0
    }
}

/// Gives every block a table so that the blocks' bits plus a charge per change of table
/// (what a run costs in the run-coded ids, about `log2(T − 1) + 6` bits) are least: a
/// Viterbi pass over the blocks, `per_block` their bits under each of the `k` tables
/// ([`all_block_costs`]). Short blocks picked one by one change tables at random where
/// two tables code them alike, and every change costs ids and a table switch in the
/// decoder. Each step keeps, per table, the better of staying and switching from the best
/// table so far: `O(k)` per block. `switches` adds its bits to each change's charge.
fn assign_in_runs(per_block: &[f32], k: usize, switches: Switches) -> Vec<u8> {
    let change = change_charge(k, switches);
    // The same steps with the table count a constant: the per-table loops unrolled, the
    // running totals in registers.
    match k {
        2 => return assign_in_runs_of::<2>(per_block, change),
        3 => return assign_in_runs_of::<3>(per_block, change),
        4 => return assign_in_runs_of::<4>(per_block, change),
        5 => return assign_in_runs_of::<5>(per_block, change),
        6 => return assign_in_runs_of::<6>(per_block, change),
        7 => return assign_in_runs_of::<7>(per_block, change),
        8 => return assign_in_runs_of::<8>(per_block, change),
        _ => {}
    }
    assign_in_runs_any(per_block, k, change)
}

/// What [`assign_in_runs`] charges a change between `k` tables, in bits: a run in the
/// run-coded ids, plus `switches`' bits.
fn change_charge(k: usize, switches: Switches) -> f64 {
    f64::from(usize::BITS - k.saturating_sub(2).leading_zeros()) + 6.0 + switches.bits
}

/// [`assign_in_runs`] for any table count, `change` the charge per change of table.
fn assign_in_runs_any(per_block: &[f32], k: usize, change: f64) -> Vec<u8> {
    let n = per_block.len() / k;
    let mut total = vec![0.0f64; k];
    let mut from = vec![0u8; n * k];
    for (b, (bits, from)) in per_block
        .chunks_exact(k)
        .zip(from.chunks_exact_mut(k))
        .enumerate()
    {
        run_step(&mut total, from, bits, b == 0, change);
    }
    let mut assign = vec![0u8; n];
    let mut t = least_total(&total);
    for b in (0..n).rev() {
        assign[b] = t as u8;
        t = usize::from(from[b * k + t]);
    }
    assign
}

/// [`assign_in_runs`] for `K` tables: the same operations in the same order, on arrays
/// whose length the compiler knows (the per-table loops unrolled).
fn assign_in_runs_of<const K: usize>(per_block: &[f32], change: f64) -> Vec<u8> {
    let n = per_block.len() / K;
    let mut total = [0.0f64; K];
    let mut from = vec![[0u8; K]; n];
    let (blocks, _) = per_block.as_chunks::<K>();
    for (b, (bits, from)) in blocks.iter().zip(from.iter_mut()).enumerate() {
        run_step(&mut total, from, bits, b == 0, change);
    }
    let mut assign = vec![0u8; n];
    let mut t = least_total(&total);
    for b in (0..n).rev() {
        assign[b] = t as u8;
        t = usize::from(from[b][t % K]);
    }
    assign
}

/// One block of [`assign_in_runs`]' forward pass: per table, the better of staying on it
/// and switching from the best table so far (not on the `first` block), its choice into
/// `from` and the block's `bits` added to its `total`.
// (Inlined into each table count's loop, so that the lengths are constants there.)
#[inline(always)]
fn run_step(total: &mut [f64], from: &mut [u8], bits: &[f32], first: bool, change: f64) {
    let (best, best_total) = total
        .iter()
        .copied()
        .enumerate()
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap_or((0, 0.0));
    let switch = best_total + change;
    for (t, ((acc, from), &bits)) in total.iter_mut().zip(from).zip(bits).enumerate() {
        let (prev, base) = if !first && switch < *acc {
            (best, switch)
        } else {
            (t, *acc)
        };
        *from = prev as u8;
        *acc = base + f64::from(bits);
    }
}

/// The table with the least total after [`assign_in_runs`]' forward pass (the first of
/// equals): where its backward pass starts.
fn least_total(total: &[f64]) -> usize {
    total
        .iter()
        .enumerate()
        .min_by(|x, y| x.1.total_cmp(y.1))
        .map_or(0, |(t, _)| t)
}

/// Gives every block the table that codes it in the fewest bits; returns whether any
/// assignment changed.
fn assign_blocks<'h>(
    hists: impl Iterator<Item = &'h Sparse>,
    tables: &[FreqTable],
    alphabet: usize,
    assign: &mut [u8],
) -> bool {
    let matrix = CostMatrix::new(tables, alphabet);
    let mut changed = false;
    for (h, a) in hists.zip(assign.iter_mut()) {
        let best = matrix.best(h);
        changed |= *a != best;
        *a = best;
    }
    changed
}

/// A parsed, validated field stream ready for chunk-parallel decoding.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    symbol_bits: u32,
    chunk_len: usize,
    n_symbols: usize,
    body: Body<'a>,
}

#[derive(Debug)]
enum Body<'a> {
    Packed(&'a [u8]),
    Const(u16),
    Rans {
        tables: Vec<DecTable>,
        /// The tables as parsed, for [`StreamDecoder::layout`].
        freq_tables: Vec<FreqTable>,
        /// One table id per block: in the stream (modes 2, 3) or decoded from its runs
        /// (mode 4).
        block_tables: std::borrow::Cow<'a, [u8]>,
        block_log2: u8,
        /// The id of raw blocks (the table count) in mode 5 streams.
        raw_id: Option<u8>,
        offsets: Vec<(usize, usize)>,
        bytes: &'a [u8],
    },
}

/// A field stream's layout as the CPU decoder's parser checked it: what a decoder outside
/// this crate (the GPU kernel) needs to find every chunk, so that it uses the same parser
/// and checks as the CPU decoder instead of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamLayout {
    /// Bit-packed symbols after the mode byte.
    Packed,
    /// One value repeated.
    Const(u16),
    /// rANS-coded chunks.
    Rans {
        /// The frequency tables.
        tables: Vec<FreqTable>,
        /// Block length exponent.
        block_log2: u8,
        /// The table id of every block (stored as bytes in modes 2 and 3, run-coded in
        /// modes 4 and 5: a decoder outside this crate uploads these, not the stream's
        /// bytes). In a mode 5 stream an id equal to `tables.len()` marks a raw block,
        /// and the payloads of chunks with raw blocks are laid out as FORMAT.md §5.5.1
        /// says (the raw area after the states; an all-raw chunk is the raw area alone).
        block_ids: Vec<u8>,
        /// Offset and length in the stream of each chunk's payload.
        payloads: Vec<(usize, usize)>,
    },
}

impl StreamLayout {
    /// Parses and checks a stream of `n_symbols` symbols of `symbol_bits` bits in chunks
    /// of `chunk_len` (FORMAT.md §5.5, §6 check 10), exactly as the decoder does.
    pub fn parse(
        bytes: &[u8],
        symbol_bits: u32,
        n_symbols: usize,
        chunk_len: usize,
    ) -> Result<Self, EntropyError> {
        let decoder = StreamDecoder::parse(bytes, symbol_bits, n_symbols, chunk_len)?;
        decoder.check_padding()?;
        Ok(decoder.layout())
    }
}

/// What a stream stores, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// Bit-packed symbols.
    Packed,
    /// One repeated value.
    Const,
    /// rANS-coded chunks with this many tables.
    Rans(usize),
}

/// Whether every byte is zero (padding).
fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

impl<'a> StreamDecoder<'a> {
    /// Parses and validates a stream of `n_symbols` symbols. All sizes are checked against
    /// `bytes` before anything is allocated from them.
    pub fn parse(
        bytes: &'a [u8],
        symbol_bits: u32,
        n_symbols: usize,
        chunk_len: usize,
    ) -> Result<Self, EntropyError> {
        if symbol_bits == 0
            || symbol_bits > MAX_SYMBOL_BITS
            || !chunk_len.is_power_of_two()
            || chunk_len < LANES
        {
            return Err(EntropyError::StreamParams {
                bits: symbol_bits,
                chunk_len,
            });
        }
        let mode = *bytes.first().ok_or(EntropyError::Truncated {
            what: "stream header",
            needed: 1,
            have: 0,
        })?;
        let body = match mode {
            MODE_PACKED => {
                let need = bitpack::checked_packed_len(n_symbols, symbol_bits)
                    .and_then(|n| n.checked_add(1))
                    .ok_or(EntropyError::PackedOverflow {
                        symbols: n_symbols,
                        bits: symbol_bits,
                    })?;
                if bytes.len() != need {
                    return Err(EntropyError::StreamSize {
                        kind: "packed",
                        found: bytes.len(),
                        expected: need,
                    });
                }
                Body::Packed(&bytes[1..])
            }
            MODE_CONST => {
                if bytes.len() != 3 {
                    return Err(EntropyError::StreamSize {
                        kind: "constant",
                        found: bytes.len(),
                        expected: 3,
                    });
                }
                let v = u16::from_le_bytes([bytes[1], bytes[2]]);
                if u32::from(v) >= 1 << symbol_bits {
                    return Err(EntropyError::ConstWidth {
                        value: v,
                        bits: symbol_bits,
                    });
                }
                Body::Const(v)
            }
            MODE_RANS | MODE_RANS_COMPACT | MODE_RANS_RUN_IDS | MODE_RANS_RAW => {
                Self::parse_rans(bytes, symbol_bits, n_symbols, chunk_len)?
            }
            mode => return Err(EntropyError::UnknownMode { mode }),
        };
        Ok(Self {
            symbol_bits,
            chunk_len,
            n_symbols,
            body,
        })
    }

    fn parse_rans(
        bytes: &'a [u8],
        symbol_bits: u32,
        n_symbols: usize,
        chunk_len: usize,
    ) -> Result<Body<'a>, EntropyError> {
        let header = bytes.get(..3).ok_or(EntropyError::Truncated {
            what: "stream header",
            needed: 3,
            have: bytes.len(),
        })?;
        let (n_tables, block_log2) = (usize::from(header[1]), header[2]);
        if n_tables == 0 {
            return Err(EntropyError::NoTables);
        }
        let chunk_log2 = chunk_len.trailing_zeros() as u8;
        if !(MIN_BLOCK_LOG2..=chunk_log2).contains(&block_log2) {
            return Err(EntropyError::BlockLog2 {
                found: block_log2,
                min: MIN_BLOCK_LOG2,
                max: chunk_log2,
            });
        }
        let mut pos = 3;
        let n_blocks = n_symbols.div_ceil(1 << block_log2);
        let mut run_ids = None;
        let n_chunks = n_symbols.div_ceil(chunk_len);
        // Every chunk takes a 4-byte length and at least its 32 states: a stream too short
        // for its chunks is refused before its run-coded ids (up to `chunk_len / 32` per
        // chunk) are expanded.
        let run_coded = matches!(header[0], MODE_RANS_RUN_IDS | MODE_RANS_RAW);
        let raw_mode = header[0] == MODE_RANS_RAW;
        // (In mode 5 an all-raw chunk has no states: it takes its raw area, at least
        // `raw_area_len(m, bits)` bytes for its `m` symbols, where that is shorter.)
        let least_chunk = |m: usize| {
            4 + if raw_mode {
                STATE_BYTES.min(rans::raw_area_len(m, symbol_bits))
            } else {
                STATE_BYTES
            }
        };
        let full_chunks = n_symbols / chunk_len;
        let least = full_chunks
            .saturating_mul(least_chunk(chunk_len))
            .saturating_add(match n_symbols % chunk_len {
                0 => 0,
                m => least_chunk(m),
            })
            .saturating_add(3);
        if run_coded && bytes.len() < least {
            return Err(EntropyError::Truncated {
                what: "block and chunk index",
                needed: least,
                have: bytes.len(),
            });
        }
        let freq_tables = if run_coded {
            // Mode 5's ids have one value more than there are tables: raw.
            let n_ids = n_tables + usize::from(raw_mode);
            let (tables, ids, used) = table_code::read_tables_and_ids(
                &bytes[pos..],
                n_tables,
                symbol_bits,
                n_blocks,
                n_ids,
            )?;
            pos += used;
            run_ids = Some(ids);
            tables
        } else if header[0] == MODE_RANS_COMPACT {
            let (tables, used) = table_code::read_tables(&bytes[pos..], n_tables, symbol_bits)?;
            pos += used;
            tables
        } else {
            let mut tables = Vec::with_capacity(n_tables);
            for _ in 0..n_tables {
                let (t, used) = FreqTable::parse(&bytes[pos..], symbol_bits)?;
                tables.push(t);
                pos += used;
            }
            tables
        };
        let tables = freq_tables.iter().map(DecTable::new).collect();
        let stored_ids = if run_ids.is_some() { 0 } else { n_blocks };
        // Both counts come from a size the file claims: check the sum before slicing.
        let index_end = n_chunks
            .checked_mul(4)
            .and_then(|c| c.checked_add(stored_ids))
            .and_then(|i| i.checked_add(pos))
            .unwrap_or(usize::MAX);
        let index = bytes.get(pos..index_end).ok_or(EntropyError::Truncated {
            what: "block and chunk index",
            needed: index_end,
            have: bytes.len(),
        })?;
        let index_len = index_end - pos;
        let (stored, lens) = index.split_at(stored_ids);
        let block_tables = match run_ids {
            Some(ids) => std::borrow::Cow::Owned(ids),
            None => std::borrow::Cow::Borrowed(stored),
        };
        let n_ids = n_tables + usize::from(raw_mode);
        if let Some(&bad) = block_tables.iter().find(|&&t| usize::from(t) >= n_ids) {
            return Err(EntropyError::TableId {
                table: bad,
                tables: n_ids,
            });
        }
        let raw_id = raw_mode.then_some(n_tables as u8);
        let blocks_per_chunk = chunk_len >> block_log2;
        let mut offsets = Vec::with_capacity(n_chunks);
        let mut at = pos + index_len;
        for (c, len) in lens.chunks_exact(4).enumerate() {
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            // A symbol costs at most one 16-bit word, plus the states.
            let symbols = chunk_len.min(n_symbols - c * chunk_len);
            // Mode 5: the chunk's raw area comes first, and an all-raw chunk is only that.
            let raw_count = match raw_id {
                Some(raw) => {
                    let ids = &block_tables[c * blocks_per_chunk..];
                    let flags = ids.iter().take(symbols.div_ceil(1 << block_log2));
                    let flags: Vec<bool> = flags.map(|&t| t == raw).collect();
                    rans::raw_symbols(&flags, 1 << block_log2, symbols)
                }
                None => 0,
            };
            let area = rans::raw_area_len(raw_count, symbol_bits);
            let (min, max) = if raw_count == symbols {
                (area, area)
            } else {
                (
                    STATE_BYTES + area,
                    STATE_BYTES + area + 2 * (symbols - raw_count),
                )
            };
            // (Modes 2–4 leave an odd length to the chunk's decode, as before 1.4.)
            if len < min || len > max || (raw_id.is_some() && !(len - min).is_multiple_of(2)) {
                return Err(EntropyError::ChunkLength {
                    chunk: c,
                    len,
                    min,
                    max,
                });
            }
            // The gap before a payload is zero padding (FORMAT.md §5.5), refused if it is
            // anything else so that no byte of a stream is left unchecked. The first one,
            // after the header, is checked here; each later one when the chunk before it
            // is decoded ([`Self::rans_chunk`]), from that payload's last page: a loader can
            // then decode a stream while the disk is still reading it, instead of waiting
            // here for every page of the stream.
            let aligned = at.next_multiple_of(4);
            if c == 0 && !is_zero(bytes.get(at..aligned).unwrap_or(&[])) {
                return Err(EntropyError::ChunkPadding { chunk: c, at });
            }
            at = aligned;
            offsets.push((at, len));
            at += len;
        }
        if at != bytes.len() {
            return Err(EntropyError::StreamEnd {
                end: at,
                len: bytes.len(),
            });
        }
        Ok(Body::Rans {
            tables,
            freq_tables,
            block_tables,
            block_log2,
            raw_id,
            offsets,
            bytes,
        })
    }

    /// Number of chunks.
    pub fn n_chunks(&self) -> usize {
        self.n_symbols.div_ceil(self.chunk_len)
    }

    /// What the stream stores.
    pub fn kind(&self) -> StreamKind {
        match &self.body {
            Body::Packed(_) => StreamKind::Packed,
            Body::Const(_) => StreamKind::Const,
            Body::Rans { tables, .. } => StreamKind::Rans(tables.len()),
        }
    }

    /// The stream's layout, for decoders outside this crate.
    pub fn layout(&self) -> StreamLayout {
        match &self.body {
            Body::Packed(_) => StreamLayout::Packed,
            Body::Const(v) => StreamLayout::Const(*v),
            Body::Rans {
                freq_tables,
                block_tables,
                block_log2,
                offsets,
                ..
            } => StreamLayout::Rans {
                tables: freq_tables.clone(),
                block_log2: *block_log2,
                block_ids: block_tables.to_vec(),
                payloads: offsets.clone(),
            },
        }
    }

    /// The byte range of the stream that holds chunks `..c` (`c` capped at the chunk
    /// count) and nothing that a later chunk is decoded from: the payloads of coded
    /// chunks, the symbols of a packed stream; empty for a constant stream and for
    /// `c == 0`. Headers, tables and the chunk index before the first payload are not in
    /// it. A loader drops these bytes from memory once the chunks are decoded.
    pub fn chunks_payload(&self, c: usize) -> std::ops::Range<usize> {
        let c = c.min(self.n_chunks());
        match &self.body {
            Body::Packed(bytes) => {
                // The mode byte comes first; a chunk holds a whole number of bytes
                // (`chunk_len` is a power of two of at least `LANES`), and the last one
                // reaches the end.
                let end = if c == self.n_chunks() {
                    bytes.len()
                } else {
                    c * self.chunk_len * self.symbol_bits as usize / 8
                };
                1..1 + end
            }
            Body::Const(_) => 0..0,
            Body::Rans { offsets, .. } => {
                let Some(&(first, _)) = offsets.first() else {
                    return 0..0;
                };
                let end = match (offsets.get(c), c.checked_sub(1).map(|p| offsets[p])) {
                    (Some(&(at, _)), _) => at,
                    (None, Some((at, len))) => at + len,
                    (None, None) => first,
                };
                first..end
            }
        }
    }

    /// The packed bytes of chunk `c` (`len` symbols) when the stream is bit-packed, so a
    /// caller can fuse unpacking into its own pass.
    pub fn packed_chunk(&self, c: usize, len: usize) -> Option<&'a [u8]> {
        match &self.body {
            Body::Packed(bytes) => {
                let from = c * self.chunk_len * self.symbol_bits as usize / 8;
                bytes.get(from..from + bitpack::packed_len(len, self.symbol_bits))
            }
            _ => None,
        }
    }

    /// Decodes chunk `c` into `out`, which must be exactly that chunk's length.
    pub fn decode_chunk(&self, c: usize, out: &mut [u16]) -> Result<(), EntropyError> {
        let start = c * self.chunk_len;
        debug_assert_eq!(out.len(), self.chunk_len.min(self.n_symbols - start));
        match &self.body {
            Body::Packed(bytes) => {
                let from = start * self.symbol_bits as usize / 8;
                bitpack::unpack(&bytes[from..], self.symbol_bits, out);
            }
            Body::Const(v) => out.fill(*v),
            Body::Rans { block_log2, .. } => {
                let (payload, tables, raw) = self.rans_chunk(c, out.len())?;
                if raw.is_empty() {
                    rans::decode_chunk(payload, &tables, 1 << block_log2, out)?;
                } else {
                    let bits = self.symbol_bits;
                    rans::decode_chunk_raw(
                        payload,
                        &tables,
                        &raw,
                        bits,
                        1 << block_log2,
                        out,
                        None,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Decodes chunks `c` and `c + 1` into `a` and `b` (each exactly its chunk's length);
    /// coded chunks are decoded interleaved where that is faster than one after the other
    /// (see `rans::decode_chunk_pair`).
    pub fn decode_chunk_pair(
        &self,
        c: usize,
        a: &mut [u16],
        b: &mut [u16],
    ) -> Result<(), EntropyError> {
        match &self.body {
            Body::Rans { block_log2, .. } => {
                let (payload_a, tables_a, raw_a) = self.rans_chunk(c, a.len())?;
                let (payload_b, tables_b, raw_b) = self.rans_chunk(c + 1, b.len())?;
                if !raw_a.is_empty() || !raw_b.is_empty() {
                    // Chunks with raw blocks are decoded one after the other.
                    self.decode_chunk(c, a)?;
                    return self.decode_chunk(c + 1, b);
                }
                rans::decode_chunk_pair(
                    [payload_a, payload_b],
                    [&tables_a, &tables_b],
                    1 << block_log2,
                    [a, b],
                )
            }
            _ => {
                self.decode_chunk(c, a)?;
                self.decode_chunk(c + 1, b)
            }
        }
    }

    /// Decodes chunk `c` into `a` and, when `b` is not empty, chunk `c + 1` into `b` (each
    /// exactly its chunk's length), writing each symbol as one byte, when the stream is
    /// rANS-coded with symbols of at most 8 bits (FP8 fields: the bytes are the tensor's);
    /// `None`, with nothing written, for any other stream.
    pub fn decode_chunks_to_bytes(
        &self,
        c: usize,
        a: &mut [u8],
        b: &mut [u8],
    ) -> Option<Result<(), EntropyError>> {
        self.decode_chunks_to_bytes_with(c, a, b, None, None)
            .map(|result| result.map(|_| ()))
    }

    /// [`Self::decode_chunks_to_bytes`], but where a chunk of 8-bit symbols has raw
    /// blocks (mode 5) their runs are left in the payload: listed in `spans[0]` (chunk
    /// `c`) and `spans[1]` (chunk `c + 1`) for the caller to read in place, their part of
    /// `a` / `b` not written. On success, the two chunks' payloads, which the spans'
    /// offsets index (the second empty when `b` is), and how many leading symbols of
    /// each chunk were merged by `merges` instead of written (see
    /// [`rans::F16Merge`]; merged only where neither chunk has raw blocks).
    pub(crate) fn decode_chunks_to_bytes_in_place(
        &self,
        c: usize,
        a: &mut [u8],
        b: &mut [u8],
        spans: &mut [Vec<rans::RawSpan>; 2],
        merges: Option<[rans::F16Merge; 2]>,
    ) -> Option<Result<BytesDecoded<'a>, EntropyError>> {
        self.decode_chunks_to_bytes_with(c, a, b, Some(spans), merges)
    }

    /// The two above: raw runs copied out without `spans`, listed there with.
    fn decode_chunks_to_bytes_with(
        &self,
        c: usize,
        a: &mut [u8],
        b: &mut [u8],
        spans: Option<&mut [Vec<rans::RawSpan>; 2]>,
        merges: Option<[rans::F16Merge; 2]>,
    ) -> Option<Result<BytesDecoded<'a>, EntropyError>> {
        let Body::Rans { block_log2, .. } = &self.body else {
            return None;
        };
        if self.symbol_bits > 8 {
            return None;
        }
        let block_len = 1 << block_log2;
        let bits = self.symbol_bits;
        let (payload_a, tables_a, raw_a) = match self.rans_chunk(c, a.len()) {
            Ok(chunk) => chunk,
            Err(e) => return Some(Err(e)),
        };
        let (spans_a, spans_b) = match spans {
            Some([x, y]) => (Some(x), Some(y)),
            None => (None, None),
        };
        // A chunk's own merge is used only where it has no raw blocks (nor its pair).
        let one = |payload, tables: &[&DecTable], raw: &[bool], out: &mut [u8], s, merge| {
            if raw.is_empty() {
                rans::decode_chunk_as(payload, tables, block_len, out, merge)
            } else {
                rans::decode_chunk_raw(payload, tables, raw, bits, block_len, out, s).map(|()| 0)
            }
        };
        if b.is_empty() {
            let merge = merges.map(|m| m[0]);
            return Some(
                one(payload_a, &tables_a, &raw_a, a, spans_a, merge)
                    .map(|merged| ([payload_a, &[]], [merged, 0])),
            );
        }
        let (payload_b, tables_b, raw_b) = match self.rans_chunk(c + 1, b.len()) {
            Ok(chunk) => chunk,
            Err(e) => return Some(Err(e)),
        };
        let result = if !raw_a.is_empty() || !raw_b.is_empty() {
            // Chunks with raw blocks are decoded one after the other.
            one(payload_a, &tables_a, &raw_a, a, spans_a, None)
                .and_then(|_| one(payload_b, &tables_b, &raw_b, b, spans_b, None).map(|_| [0; 2]))
        } else {
            rans::decode_chunk_pair_as(
                [payload_a, payload_b],
                [&tables_a, &tables_b],
                1 << block_log2,
                [a, b],
                merges,
            )
        };
        Some(result.map(|merged| ([payload_a, payload_b], merged)))
    }

    /// Checks every zero padding gap between the chunk payloads of a rANS-coded stream
    /// (parsing checks only the first; decoding a chunk checks the one after it), for
    /// decoders that take the payloads elsewhere ([`StreamLayout::parse`]).
    fn check_padding(&self) -> Result<(), EntropyError> {
        if let Body::Rans { offsets, bytes, .. } = &self.body {
            for c in 0..offsets.len() {
                Self::check_padding_after(bytes, offsets, c)?;
            }
        }
        Ok(())
    }

    /// The zero padding between payload `c` and the next one (none after the last).
    fn check_padding_after(
        bytes: &[u8],
        offsets: &[(usize, usize)],
        c: usize,
    ) -> Result<(), EntropyError> {
        if let (Some(&(at, len)), Some(&(next, _))) = (offsets.get(c), offsets.get(c + 1)) {
            // Parsing placed every payload inside the stream, each after the one before.
            if !is_zero(&bytes[at + len..next]) {
                return Err(EntropyError::ChunkPadding {
                    chunk: c + 1,
                    at: at + len,
                });
            }
        }
        Ok(())
    }

    /// The payload of coded chunk `c` (of `len` symbols), the table of each of its blocks
    /// and, where any of them is raw (mode 5), which are (empty otherwise; a raw block's
    /// table is then the first, unused), once the padding after the payload is checked
    /// (it lies on the payload's last page, or is empty).
    #[allow(clippy::type_complexity)]
    fn rans_chunk(
        &self,
        c: usize,
        len: usize,
    ) -> Result<(&'a [u8], Vec<&DecTable>, Vec<bool>), EntropyError> {
        let Body::Rans {
            tables,
            block_tables,
            block_log2,
            raw_id,
            offsets,
            bytes,
            ..
        } = &self.body
        else {
            unreachable!("rans_chunk on a stream that is not rANS-coded")
        };
        Self::check_padding_after(bytes, offsets, c)?;
        let (at, size) = offsets[c];
        let first = (c * self.chunk_len) >> block_log2;
        let count = len.div_ceil(1 << block_log2);
        let ids = &block_tables[first..first + count];
        let raw = match raw_id {
            Some(r) if ids.contains(r) => ids.iter().map(|t| t == r).collect(),
            _ => Vec::new(),
        };
        let chunk_tables = ids
            .iter()
            .map(|&t| tables.get(usize::from(t)).unwrap_or(&tables[0]))
            .collect();
        Ok((&bytes[at..at + size], chunk_tables, raw))
    }
}

#[cfg(test)]
mod tests {
    use super::super::xorshift;
    use super::*;

    /// Block costs as the refinement sees them: a few to thousands of bits, some
    /// infinite (a table without one of the block's symbols).
    fn block_costs(n: usize, k: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut x = seed;
        (0..n * k)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (x >> 40) as u32;
                if r.is_multiple_of(23) {
                    f32::INFINITY
                } else {
                    scale * (1.0 + (r % 100_000) as f32 * 0.0371)
                }
            })
            .collect()
    }

    #[test]
    fn pairwise_level_sums_choose_as_block_by_block_sums() {
        for k in 2..=8usize {
            for n in [1usize, 2, 3, 7, 64, 1000, 1025, 2048] {
                for levels in [1u8, 3, 7, 10] {
                    let costs = block_costs(n, k, (n * 31 + k) as u64, 1.0);
                    assert!(sums_are_exact(&costs, k << levels, k), "k {k} n {n}");
                    let want = level_choices_in_order(&costs, k, levels);
                    let got = level_choices_pairwise(&costs, k, levels);
                    assert_eq!(got.len(), want.len());
                    for ((gi, gb), (wi, wb)) in got.iter().zip(&want) {
                        assert_eq!(gi, wi, "k {k} n {n} levels {levels}");
                        assert_eq!(gb.to_bits(), wb.to_bits(), "k {k} n {n} levels {levels}");
                    }
                    assert_eq!(level_choices(&costs, k, levels), want);
                }
            }
        }
        // Costs so small that a group's sum could round: not exact, summed in order.
        let mut costs = block_costs(1000, 4, 7, 1.0);
        costs[5] = 1e-9;
        assert!(!sums_are_exact(&costs, 4 << 10, 4));
        assert_eq!(
            level_choices(&costs, 4, 10),
            level_choices_in_order(&costs, 4, 10)
        );
        // Totals far above the smallest cost's last place: not exact either.
        let mut costs = block_costs(1000, 4, 9, 1e12);
        costs[3] = 1.0;
        assert!(!sums_are_exact(&costs, 4 << 10, 4));
        assert_eq!(
            level_choices(&costs, 4, 10),
            level_choices_in_order(&costs, 4, 10)
        );
        assert!(!sums_are_exact(&[f32::NAN, 1.0], 2, 2));
        assert!(!sums_are_exact(&[-1.0, 1.0], 2, 2));
        assert!(sums_are_exact(&[f32::INFINITY, 0.0], 2, 2));
    }

    #[test]
    fn run_assignment_per_table_count_matches_the_general_one() {
        for k in 2..=8usize {
            for n in [0usize, 1, 5, 300] {
                for scale in [1.0f32, 40.0] {
                    let costs = block_costs(n, k, (n + 7 * k) as u64, scale);
                    for bits in [0.0, 200.0] {
                        let switches = Switches { bits };
                        assert_eq!(
                            assign_in_runs(&costs, k, switches),
                            assign_in_runs_any(&costs, k, change_charge(k, switches)),
                            "k {k} n {n} switch bits {bits}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn planning_block_entropy_table_and_long_block_refits_change_nothing() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
        // Blocks of exactly PLAN_BLOCK_N symbols (the table's case) and of one fewer:
        // bit-identical to the dense reference's logarithms.
        for round in 0..300 {
            let alphabet = 1usize << (1 + round % 9);
            let len = if round % 2 == 0 { 2048 } else { 2047 };
            let mut dense = vec![0u32; alphabet];
            let skew = 1 + next() % 4;
            for _ in 0..len {
                let r = (next() % alphabet as u64) >> (next() % skew);
                dense[r as usize] += 1;
            }
            assert_eq!(
                sparse_entropy_bits(&sparse(&dense)).to_bits(),
                corrected_entropy_bits(&dense).to_bits(),
                "round {round}"
            );
        }
        // Short blocks in runs of tables (some runs covering long blocks, some not, a
        // short last long block): the same tables from the long blocks' sums.
        for round in 0..40 {
            let shift = 1 + (round % 4) as u8;
            let n_fine = 1 + (next() % 200) as usize;
            let fine: Vec<Sparse> = (0..n_fine)
                .map(|_| {
                    let mut h = vec![0u32; 512];
                    for _ in 0..64 {
                        h[(next() % 512) as usize] += 1 + (next() % 9) as u32;
                    }
                    sparse(&h)
                })
                .collect();
            let coarse: Vec<Sparse> = fine
                .chunks(1 << shift)
                .map(|run| {
                    let mut h = vec![0u32; 512];
                    for &(s, c) in run.iter().flatten() {
                        h[usize::from(s)] += c;
                    }
                    sparse(&h)
                })
                .collect();
            let k = 1 + (next() % 4) as usize;
            let mut assign = Vec::with_capacity(n_fine);
            while assign.len() < n_fine {
                let t = (next() % k as u64) as u8;
                let run = 1 + (next() % 20) as usize;
                assign.extend(std::iter::repeat_n(t, run.min(n_fine - assign.len())));
            }
            let long = Coarse {
                hists: &coarse,
                shift,
            };
            assert_eq!(
                fit_tables_runs(&fine, Some(long), &assign, k, 512),
                fit_tables(fine.iter(), &assign, k, 512),
                "round {round}"
            );
        }
    }

    /// The sparse entropy the encoder uses is bit for bit the dense one it replaced, and
    /// planning from sparse histograms gives the plan the dense ones give.
    #[test]
    fn sparse_entropy_and_plan_match_the_dense_ones() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
        for round in 0..200 {
            let bits = 1 + (round % 9) as u32;
            let blocks: Vec<Vec<u32>> = (0..1 + round % 37)
                .map(|_| {
                    (0..1usize << bits)
                        .map(|_| match next() % 4 {
                            0 => (next() % 5000) as u32,
                            1 => (next() % 3) as u32,
                            _ => 0,
                        })
                        .collect()
                })
                .collect();
            for h in &blocks {
                assert_eq!(
                    corrected_entropy_bits(h).to_bits(),
                    sparse_entropy_bits(&sparse(h)).to_bits()
                );
            }
            for h in &blocks {
                let (exact, fast) = (
                    sparse_entropy_bits(&sparse(h)),
                    sparse_entropy_bits_fast(&sparse(h)),
                );
                assert!(
                    (exact - fast).abs() <= 1e-9 * exact.max(1.0),
                    "{exact} {fast}"
                );
            }
            let sparse_blocks: Vec<Sparse> = blocks.iter().map(|h| sparse(h)).collect();
            for effort in [Effort::Default, Effort::Max] {
                let dense = StreamEncoder::plan(&blocks, bits, 5, 10, effort);
                let from_sparse =
                    StreamEncoder::plan_sparse(&sparse_blocks, bits, 5, 10, effort, 0.0);
                assert_eq!(
                    format!("{dense:?}"),
                    format!("{from_sparse:?}"),
                    "round {round}"
                );
            }
        }
    }

    fn hist(symbols: &[u16], bits: u32) -> Vec<u32> {
        let mut h = vec![0u32; 1 << bits];
        for &s in symbols {
            h[usize::from(s)] += 1;
        }
        h
    }

    fn round_trip(
        symbols: &[u16],
        bits: u32,
        block_log2: u8,
        chunk_log2: u8,
        effort: Effort,
    ) -> (Vec<u8>, StreamKind) {
        round_trip_with(symbols, bits, block_log2, chunk_log2, effort, false)
    }

    /// [`round_trip`] with the blocks marked raw where packing costs as much
    /// ([`StreamEncoder::mark_raw`], as the tensor encoder does after planning).
    fn round_trip_raw(
        symbols: &[u16],
        bits: u32,
        block_log2: u8,
        chunk_log2: u8,
        effort: Effort,
    ) -> (Vec<u8>, StreamKind) {
        round_trip_with(symbols, bits, block_log2, chunk_log2, effort, true)
    }

    /// Plans, codes (raw blocks marked when `raw`), parses and decodes `symbols`, checks
    /// the round trip, and returns the stream with what it stores.
    fn round_trip_with(
        symbols: &[u16],
        bits: u32,
        block_log2: u8,
        chunk_log2: u8,
        effort: Effort,
        raw: bool,
    ) -> (Vec<u8>, StreamKind) {
        let chunk_len = 1usize << chunk_log2;
        let hists: Vec<Vec<u32>> = symbols
            .chunks(1 << block_log2)
            .map(|b| hist(b, bits))
            .collect();
        let mut enc = StreamEncoder::plan(&hists, bits, block_log2, chunk_log2, effort);
        if raw {
            let sparse_hists: Vec<SparseHist> = hists.iter().map(|h| sparse(h)).collect();
            enc.mark_raw(&sparse_hists, block_log2);
        }
        let pieces: Vec<Vec<u8>> = symbols
            .chunks(chunk_len)
            .enumerate()
            .map(|(c, s)| enc.encode_chunk(c, s).unwrap())
            .collect();
        let bytes = enc.assemble(pieces).to_vec();
        let dec = StreamDecoder::parse(&bytes, bits, symbols.len(), chunk_len).unwrap();
        let mut back = vec![0u16; symbols.len()];
        for (c, out) in back.chunks_mut(chunk_len).enumerate() {
            dec.decode_chunk(c, out).unwrap();
        }
        assert_eq!(back, symbols);
        let kind = dec.kind();
        drop(dec);
        (bytes, kind)
    }

    #[test]
    fn modes_are_chosen_by_content() {
        assert_eq!(
            round_trip(&[5; 100], 9, 5, 6, Effort::Default).1,
            StreamKind::Const
        );
        let uniform: Vec<u16> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 20) as u16 & 0x7F)
            .collect();
        assert_eq!(
            round_trip(&uniform, 7, 8, 10, Effort::Default).1,
            StreamKind::Packed
        );
        assert_eq!(
            round_trip(&[], 9, 5, 6, Effort::Default).1,
            StreamKind::Packed
        );
        let wide: Vec<u16> = (0..2000u16).map(|i| i % 300).collect();
        assert_eq!(
            round_trip(&wide, 9, 8, 8, Effort::Default).1,
            StreamKind::Packed
        );
    }

    /// A charge per change of table keeps runs of one table where the tables code the
    /// blocks almost alike, and the plan so made codes and decodes as any other.
    #[test]
    fn switch_charge_keeps_runs_of_one_table() {
        // Two tables, each 20 bits better on every other block.
        let per_block: Vec<f32> = (0..64)
            .flat_map(|b| {
                if b % 2 == 0 {
                    [100.0, 120.0]
                } else {
                    [120.0, 100.0]
                }
            })
            .collect();
        let changes = |ids: &[u8]| ids.windows(2).filter(|w| w[0] != w[1]).count();
        let free = assign_in_runs(&per_block, 2, Switches { bits: 0.0 });
        assert_eq!(changes(&free), 63);
        let charged = assign_in_runs(&per_block, 2, Switches { bits: 200.0 });
        assert_eq!(changes(&charged), 0);
        // A stream of 8-bit symbols drifting between two close distributions in runs of
        // 1 to 4 blocks of 256, and a far one every 64 blocks.
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        let mut symbols = Vec::new();
        let mut b = 0;
        while b < 512 {
            let run = 1 + (next() % 4) as usize;
            let far = b % 64 == 0;
            let shift = if far { 100 } else { 8 * (b / run % 2) as u16 };
            for _ in 0..run * 256 {
                let r = next();
                symbols
                    .push(shift + (r % 16) as u16 + ((r >> 8) % 3) as u16 * (r >> 20 & 1) as u16);
            }
            b += run;
        }
        let (block_log2, chunk_log2) = (8, 14);
        let hists: Vec<SparseHist> = symbols
            .chunks(1 << block_log2)
            .map(|blk| sparse(&hist(blk, 8)))
            .collect();
        let plan = |bits: f64| {
            StreamEncoder::plan_sparse(&hists, 8, block_log2, chunk_log2, Effort::Default, bits)
        };
        let ids_changes = |enc: &StreamEncoder| match &enc.mode {
            Mode::Rans {
                block_tables,
                blocks_per_chunk,
                ..
            } => block_tables
                .chunks(*blocks_per_chunk)
                .map(&changes)
                .sum::<usize>(),
            _ => 0,
        };
        let (by_size, by_speed) = (plan(0.0), plan(1000.0));
        assert!(matches!(by_size.mode, Mode::Rans { ref tables, .. } if tables.len() >= 2));
        assert!(
            ids_changes(&by_speed) < ids_changes(&by_size),
            "{} vs {}",
            ids_changes(&by_speed),
            ids_changes(&by_size)
        );
        let chunk_len = 1usize << chunk_log2;
        let pieces: Vec<Vec<u8>> = symbols
            .chunks(chunk_len)
            .enumerate()
            .map(|(c, s)| by_speed.encode_chunk(c, s).unwrap())
            .collect();
        let bytes = by_speed.assemble(pieces).to_vec();
        let dec = StreamDecoder::parse(&bytes, 8, symbols.len(), chunk_len).unwrap();
        let mut back = vec![0u16; symbols.len()];
        for (c, out) in back.chunks_mut(chunk_len).enumerate() {
            dec.decode_chunk(c, out).unwrap();
        }
        assert_eq!(back, symbols);
    }

    #[test]
    fn drifting_statistics_use_several_tables() {
        // Blocks alternate between symbols skewed low and skewed high.
        let mut symbols = Vec::new();
        for b in 0..64u32 {
            for i in 0..1024u32 {
                let r = (i.wrapping_mul(2654435761) >> 28) as u16;
                symbols.push(if b % 2 == 0 { r % 3 } else { 60 + r % 3 });
            }
        }
        let (bytes, kind) = round_trip(&symbols, 9, 10, 14, Effort::Default);
        assert!(matches!(kind, StreamKind::Rans(t) if t >= 2), "{kind:?}");
        let (one_table, _) = round_trip(&symbols, 9, 14, 14, Effort::Default);
        assert!(
            bytes.len() < one_table.len() * 2 / 3,
            "{} vs {}",
            bytes.len(),
            one_table.len()
        );
        round_trip(&symbols[..50_001], 9, 7, 12, Effort::Max);
    }

    /// A stream of near-uniform bytes with runs of blocks of one value (F32's low mantissa
    /// bytes, with rows of FP16 precision): those are coded, the rest raw (mode 5), and
    /// it round-trips through every decode entry (single chunks, pairs, bytes), with all-
    /// raw and mixed chunks, on blocks of 256 and on whole chunks (one table).
    #[test]
    fn raw_blocks_round_trip_in_mode_5() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
        let n = 70_000;
        let symbols: Vec<u16> = (0..n)
            .map(|i| {
                // Blocks 40..60 and 200..210 are all zeros; chunk 0 (4096 symbols) is raw.
                let b = i / 256;
                if (40..60).contains(&b) || (200..210).contains(&b) {
                    0
                } else {
                    (next() & 0xFF) as u16
                }
            })
            .collect();
        let (bytes, kind) = round_trip_raw(&symbols, 8, 8, 12, Effort::Default);
        assert_eq!(bytes[0], MODE_RANS_RAW);
        assert!(matches!(kind, StreamKind::Rans(_)));
        // The zero blocks cost nothing: the stream is about the raw bytes.
        let raw_bytes = n - 30 * 256;
        assert!(bytes.len() < raw_bytes + 2000, "{} bytes", bytes.len());
        let dec = StreamDecoder::parse(&bytes, 8, n, 4096).unwrap();
        let chunks = n.div_ceil(4096);
        let mut back = vec![0u16; n];
        let mut by_pairs = back.chunks_mut(4096).collect::<Vec<_>>();
        for c in (0..chunks - 1).step_by(2) {
            let (a, b) = by_pairs.split_at_mut(c + 1);
            dec.decode_chunk_pair(c, a[c], b[0]).unwrap();
        }
        if chunks % 2 == 1 {
            dec.decode_chunk(chunks - 1, by_pairs[chunks - 1]).unwrap();
        }
        assert!(back == symbols);
        let mut bytes_back = vec![0u8; n];
        for c in (0..chunks).step_by(2) {
            let (a, rest) = bytes_back[c * 4096..].split_at_mut(4096.min(n - c * 4096));
            let rest_len = rest.len();
            let b = &mut rest[..4096.min(rest_len)];
            dec.decode_chunks_to_bytes(c, a, b).unwrap().unwrap();
        }
        assert!(bytes_back
            .iter()
            .zip(&symbols)
            .all(|(&b, &s)| u16::from(b) == s));
        // The layout names raw blocks by the id equal to the table count.
        let StreamLayout::Rans {
            tables, block_ids, ..
        } = dec.layout()
        else {
            panic!("not rANS")
        };
        assert!(block_ids.contains(&(tables.len() as u8)));
        // Blocks as long as chunks (the fast level's one-table plans): whole chunks raw.
        round_trip_raw(&symbols, 8, 12, 12, Effort::Fast);
    }

    /// Damaged mode 5 streams give typed errors, never a panic: every truncation, every
    /// single flipped byte of the header and index, a raw id in a mode 4 stream.
    #[test]
    fn damaged_mode_5_streams_are_errors() {
        let symbols: Vec<u16> = (0..9000u32)
            .map(|i| {
                if (i / 256) % 4 == 0 {
                    (i % 3) as u16
                } else {
                    (i.wrapping_mul(2_654_435_761) >> 24) as u16
                }
            })
            .collect();
        let (bytes, _) = round_trip_raw(&symbols, 8, 8, 12, Effort::Default);
        assert_eq!(bytes[0], MODE_RANS_RAW);
        let decode = |b: &[u8]| -> Result<Vec<u16>, EntropyError> {
            let dec = StreamDecoder::parse(b, 8, symbols.len(), 4096)?;
            let mut out = vec![0u16; symbols.len()];
            for (c, o) in out.chunks_mut(4096).enumerate() {
                dec.decode_chunk(c, o)?;
            }
            Ok(out)
        };
        assert!(decode(&bytes).unwrap() == symbols);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "{len} bytes");
        }
        let dec = StreamDecoder::parse(&bytes, 8, symbols.len(), 4096).unwrap();
        let first = dec.chunks_payload(1).start;
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x41;
            let res = decode(&bad);
            // Header and index bytes are all checked; a flipped raw byte is the
            // checksum's to catch.
            if at < first {
                assert!(res.is_err() || res.unwrap() != symbols, "flip at {at}");
            }
        }
        let mut as_mode_4 = bytes.clone();
        as_mode_4[0] = MODE_RANS_RUN_IDS;
        assert!(decode(&as_mode_4).is_err());
    }

    #[test]
    fn hostile_headers_are_refused() {
        let symbols: Vec<u16> = (0..3000u32).map(|i| (i % 7) as u16).collect();
        let (bytes, _) = round_trip(&symbols, 9, 8, 10, Effort::Default);
        assert!(StreamDecoder::parse(&bytes[..bytes.len() - 1], 9, 3000, 1024).is_err());
        assert!(StreamDecoder::parse(&bytes, 9, 4097, 1024).is_err());
        assert!(StreamDecoder::parse(&bytes, 9, 3000, 2048).is_err());
        let mut bad_mode = bytes.clone();
        bad_mode[0] = 9;
        assert!(StreamDecoder::parse(&bad_mode, 9, 3000, 1024).is_err());
        let mut no_tables = bytes.clone();
        no_tables[1] = 0;
        assert!(StreamDecoder::parse(&no_tables, 9, 3000, 1024).is_err());
        for bad_block in [4, 11, 255] {
            let mut b = bytes.clone();
            b[2] = bad_block;
            assert!(
                StreamDecoder::parse(&b, 9, 3000, 1024).is_err(),
                "block_log2 {bad_block}"
            );
        }
        assert!(StreamDecoder::parse(&[], 9, 0, 1024).is_err());
        assert!(StreamDecoder::parse(&[MODE_CONST, 0, 2], 9, 10, 1024).is_err());
    }

    /// Every mode refuses symbols its model cannot code, and chunks past the plan, with an
    /// error instead of a panic or a wrong stream.
    #[test]
    fn encoders_refuse_symbols_outside_the_model() {
        let not_in = |index, symbol| Err(EntropyError::SymbolNotInModel { index, symbol });
        let packed = StreamEncoder::packed(7);
        assert_eq!(packed.encode_chunk(0, &[1, 127, 128]), not_in(2, 128));
        let symbols: Vec<u16> = (0..2048u32).map(|i| (i % 5 == 0) as u16 * 3).collect();
        let plan = |s: &[u16]| {
            let hists: Vec<Vec<u32>> = s.chunks(1 << 10).map(|b| hist(b, 9)).collect();
            StreamEncoder::plan(&hists, 9, 10, 10, Effort::Default)
        };
        let rans = plan(&symbols);
        assert!(matches!(rans.mode, Mode::Rans { .. }));
        let mut bad = symbols[..1024].to_vec();
        bad[700] = 2;
        assert_eq!(rans.encode_chunk(1, &bad), not_in(700, 2));
        bad[700] = 511;
        assert_eq!(rans.encode_chunk(0, &bad), not_in(700, 511));
        assert_eq!(
            rans.encode_chunk(2, &symbols[..1024]),
            Err(EntropyError::NoSuchChunk {
                chunk: 2,
                chunks: 2
            })
        );
        assert!(rans.encode_chunk(1, &symbols[1024..]).is_ok());
        let constant = plan(&[4; 1024]);
        assert!(matches!(constant.mode, Mode::Const(4)));
        assert_eq!(constant.encode_chunk(0, &[4, 4, 5]), not_in(2, 5));
    }

    /// Nonzero padding between two payloads: parsing leaves it (a loader may decode the
    /// stream while it is being read), the chunk before it refuses to decode, every
    /// other chunk decodes, and the layout handed to other decoders refuses the stream;
    /// the padding before the first payload is refused when parsing.
    #[test]
    fn nonzero_padding_between_payloads_fails_the_chunk_before_it() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        let symbols: Vec<u16> = (0..40_000)
            .map(|_| {
                let seed = next();
                // Skewed, so that chunks code to different lengths.
                (seed % 64).trailing_zeros() as u16 + (seed >> 60) as u16 % 3
            })
            .collect();
        let (bits, chunk_log2) = (9, 10);
        let chunk_len = 1usize << chunk_log2;
        let (bytes, kind) = round_trip(&symbols, bits, 8, chunk_log2, Effort::Default);
        assert!(matches!(kind, StreamKind::Rans(_)), "{kind:?}");
        let StreamLayout::Rans { payloads, .. } =
            StreamLayout::parse(&bytes, bits, symbols.len(), chunk_len).unwrap()
        else {
            unreachable!()
        };
        let c = (0..payloads.len() - 1)
            .find(|&c| payloads[c].0 + payloads[c].1 < payloads[c + 1].0)
            .unwrap_or_else(|| panic!("a payload whose length leaves a gap: {payloads:?}"));
        let mut damaged = bytes.clone();
        damaged[payloads[c].0 + payloads[c].1] = 1;
        let dec = StreamDecoder::parse(&damaged, bits, symbols.len(), chunk_len).unwrap();
        for (k, want) in symbols.chunks(chunk_len).enumerate() {
            let mut got = vec![0u16; want.len()];
            match dec.decode_chunk(k, &mut got) {
                Err(EntropyError::ChunkPadding { chunk, at }) => {
                    assert_eq!((k, chunk, at), (c, c + 1, payloads[c].0 + payloads[c].1));
                }
                Ok(()) => assert!(k != c && got == want, "chunk {k}"),
                Err(e) => panic!("chunk {k}: {e}"),
            }
        }
        let (mut a, mut b) = (vec![0u16; chunk_len], vec![0u16; chunk_len]);
        assert!(dec.decode_chunk_pair(c & !1, &mut a, &mut b).is_err());
        assert!(matches!(
            StreamLayout::parse(&damaged, bits, symbols.len(), chunk_len),
            Err(EntropyError::ChunkPadding { .. })
        ));
        // Before the first payload: when parsing.
        let first = payloads[0].0;
        let header_end = (0..first)
            .rev()
            .find(|&i| bytes[i] != 0)
            .map_or(0, |i| i + 1);
        if header_end < first {
            let mut damaged = bytes.clone();
            damaged[first - 1] = 1;
            assert!(matches!(
                StreamDecoder::parse(&damaged, bits, symbols.len(), chunk_len),
                Err(EntropyError::ChunkPadding { chunk: 0, .. })
            ));
        }
    }

    /// `chunks_payload(c)` holds nothing that decoding chunks `c..` reads: overwriting it
    /// leaves them decoding as before; the ranges grow chunk by chunk and reach the end
    /// of the stream's payloads.
    #[test]
    fn chunk_payloads_hold_nothing_later_chunks_read() {
        let coded: Vec<u16> = (0..5000u32)
            .map(|i| ((i.wrapping_mul(2654435761) >> 27) % 9) as u16)
            .collect();
        let uniform: Vec<u16> = (0..4099u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 20) as u16 & 0x7F)
            .collect();
        for (symbols, bits, chunk_log2, kind) in [
            (&coded[..], 9, 10, "rans"),
            (&coded[..4097], 9, 8, "rans"),
            (&uniform[..], 7, 10, "packed"),
            (&uniform[..4096], 7, 6, "packed"),
            (&[3u16; 3000][..], 4, 9, "const"),
        ] {
            let chunk_len = 1usize << chunk_log2;
            let (bytes, found) = round_trip(
                symbols,
                bits,
                chunk_log2.min(8),
                chunk_log2,
                Effort::Default,
            );
            let expected = match kind {
                "rans" => matches!(found, StreamKind::Rans(_)),
                "packed" => found == StreamKind::Packed,
                _ => found == StreamKind::Const,
            };
            assert!(expected, "{kind}: {found:?}");
            let dec = StreamDecoder::parse(&bytes, bits, symbols.len(), chunk_len).unwrap();
            let n = dec.n_chunks();
            assert_eq!(dec.chunks_payload(0).len(), 0, "{kind}");
            let all = dec.chunks_payload(n);
            assert_eq!(dec.chunks_payload(n + 5), all, "{kind}: capped");
            if kind == "const" {
                assert_eq!(all, 0..0);
            } else {
                assert_eq!(all.end, bytes.len(), "{kind}: reaches the end");
            }
            for c in 0..=n {
                let r = dec.chunks_payload(c);
                if c > 0 {
                    let before = dec.chunks_payload(c - 1);
                    assert!(before.start == r.start && before.end <= r.end, "{kind} {c}");
                }
                // Damaged where nonzero (the zero padding between payloads is left as it
                // is: each gap is checked when the chunk before it decodes).
                let mut damaged = bytes.clone();
                damaged[r.clone()]
                    .iter_mut()
                    .filter(|b| **b != 0)
                    .for_each(|b| *b ^= 0xA5);
                let d = StreamDecoder::parse(&damaged, bits, symbols.len(), chunk_len).unwrap();
                for k in c..n {
                    let want = &symbols[k * chunk_len..((k + 1) * chunk_len).min(symbols.len())];
                    let mut got = vec![0u16; want.len()];
                    d.decode_chunk(k, &mut got).unwrap();
                    assert_eq!(got, want, "{kind}: chunk {k} after damage to chunks ..{c}");
                }
            }
        }
    }
}
