//! The stream encoder: one coding decision per stream, then its chunks coded in parallel.

use rayon::prelude::*;

#[cfg(any(test, feature = "fuzzing"))]
use super::plan::sparse;
use super::plan::{
    all_block_costs, all_block_costs_into, assign_in_runs, choose_tables, coarsen_blocks,
    fit_tables, fit_tables_runs, Switches, RAW_HINT, RAW_SHARE, REFINE_ROUNDS,
};
use super::{
    ids_bytes, tables_bytes, Coarse, Effort, SparseHist, MIN_BLOCK_LOG2, MODE_CONST, MODE_PACKED,
    MODE_RANS_RAW, MODE_RANS_RUN_IDS,
};
use crate::entropy::bitpack;
use crate::entropy::block_costs::{bit_costs, block_cost, CostMatrix};
use crate::entropy::model::{EncTable, FreqTable, MAX_SYMBOL_BITS, MAX_TABLE_SYMBOLS};
use crate::entropy::rans::{self, STATE_BYTES};
use crate::entropy::{table_code, EntropyError};

/// The coding decision for one stream, made from per-block histograms before any chunk is
/// coded, so that chunks can then be coded in parallel.
#[derive(Clone, Debug)]
pub struct StreamEncoder {
    symbol_bits: u32,
    /// Read by the tests (`super::tests`) besides.
    pub(super) mode: Mode,
    /// What a change of table between neighbouring blocks costs in the plan's
    /// objective, in bits, beyond its id's (0: the plan is by size alone); see
    /// [`Self::plan_sparse`].
    switch_bits: f64,
}

/// How a stream is stored (FORMAT.md §5.5): packed, constant, or rANS with its tables
/// and each block's table.
#[derive(Clone, Debug)]
pub(super) enum Mode {
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
