//! Bits a block histogram costs under several frequency tables at once: the encoder's
//! table assignment (clustering, the run-aware Viterbi pass, block coarsening) evaluates
//! every block against every table, several times per stream.
//!
//! The costs are kept symbol-major, [`GROUP`] tables per row: one pass over a block's
//! present symbols then adds `count × row` to [`GROUP`] sums at once (one 256-bit vector),
//! instead of one pass per table. Each lane does exactly the operations of
//! [`block_cost`] for its table, in the same order (an `f32` product, then a sum; four
//! partial sums over the entries in groups of four, then the remainder), so the results
//! are bit-identical to evaluating the tables one by one, on every code path.

use super::model::{FreqTable, MAX_SYMBOL_BITS, PROB_BITS};

/// A block reduced to its present symbols, `(symbol, count)` in increasing symbol order.
pub(crate) type Sparse = Vec<(u16, u32)>;

/// Tables per row of a [`CostMatrix`]: eight `f32`, one AVX2 vector.
const GROUP: usize = 8;

/// Symbols of the widest stream: cost rows are kept this long whatever the alphabet, so
/// that a symbol masked to it indexes them without a bounds check (a compare and branch
/// per entry in the loops below; the symbols of a stream's blocks are below its
/// alphabet, and the rows past it read as absent).
const ROWS: usize = 1 << MAX_SYMBOL_BITS;

/// Bits each symbol costs under a table (infinite where the table lacks it), for the
/// symbols below `alphabet` and at least [`ROWS`] of them.
pub(crate) fn bit_costs(table: &FreqTable, alphabet: usize) -> Vec<f32> {
    let mut bits = vec![f32::INFINITY; alphabet.max(ROWS)];
    for (&s, &f) in table.symbols().iter().zip(table.freqs()) {
        bits[usize::from(s)] = PROB_BITS as f32 - f32::from(f).log2();
    }
    bits
}

/// Bits a block costs under a table's `bits`. Four partial sums keep it from waiting on
/// one chain of additions ([`CostMatrix::costs`] does the same per table).
pub(crate) fn block_cost(hist: &Sparse, bits: &[f32]) -> f32 {
    match <&[f32; ROWS]>::try_from(bits) {
        Ok(bits) => block_cost_masked(hist, bits),
        Err(_) => block_cost_of(hist, |s| bits[usize::from(s)]),
    }
}

/// [`block_cost`] of rows as [`bit_costs`] makes them, indexed without bounds checks.
fn block_cost_masked(hist: &Sparse, bits: &[f32; ROWS]) -> f32 {
    block_cost_of(hist, |s| bits[usize::from(s) & (ROWS - 1)])
}

/// [`block_cost`] with `bit(s)` the bits of symbol `s`.
#[inline(always)]
fn block_cost_of(hist: &Sparse, bit: impl Fn(u16) -> f32) -> f32 {
    let cost = |&(s, c): &(u16, u32)| c as f32 * bit(s);
    let mut quads = hist.chunks_exact(4);
    let mut sums = [0.0f32; 4];
    for quad in &mut quads {
        for (sum, entry) in sums.iter_mut().zip(quad) {
            *sum += cost(entry);
        }
    }
    let rest: f32 = quads.remainder().iter().map(cost).sum();
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + rest
}

/// Every symbol's bits under each of a set of tables, [`GROUP`] tables per row.
pub(crate) struct CostMatrix {
    tables: usize,
    /// Group `g`'s row of symbol `s` at `g · ROWS + s` (symbols from `alphabet` on:
    /// infinite, absent); lanes past the last table 0.
    rows: Vec<[[f32; GROUP]; ROWS]>,
    /// Whether the AVX2 build of the inner loop runs (the same results either way).
    /// Always false, and only written, off x86-64.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    avx2: bool,
}

impl CostMatrix {
    /// The costs of `tables` over symbols `0..alphabet`.
    pub(crate) fn new(tables: &[FreqTable], alphabet: usize) -> Self {
        debug_assert!(alphabet <= ROWS);
        let groups = tables.len().div_ceil(GROUP);
        let mut rows = vec![[[0.0f32; GROUP]; ROWS]; groups];
        for (t, table) in tables.iter().enumerate() {
            let group = &mut rows[t / GROUP];
            for (row, bits) in group.iter_mut().zip(bit_costs(table, alphabet)) {
                row[t % GROUP] = bits;
            }
        }
        #[cfg(target_arch = "x86_64")]
        let avx2 = crate::cpu::simd_level() != crate::cpu::SimdLevel::Scalar
            && crate::cpu::SimdLevel::Avx2.is_supported();
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        Self {
            tables: tables.len(),
            rows,
            avx2,
        }
    }

    /// How many tables.
    pub(crate) fn tables(&self) -> usize {
        self.tables
    }

    /// The bits `hist` costs under every table, into `out` (one per table).
    pub(crate) fn costs(&self, hist: &Sparse, out: &mut [f32]) {
        debug_assert_eq!(out.len(), self.tables);
        for (rows, out) in self.rows.iter().zip(out.chunks_mut(GROUP)) {
            let sums = self.group_costs(rows, hist);
            out.copy_from_slice(&sums[..out.len()]);
        }
    }

    /// The table that codes `hist` in the fewest bits (the first of equals).
    pub(crate) fn best(&self, hist: &Sparse) -> u8 {
        let mut bits = [0.0f32; 256];
        let bits = &mut bits[..self.tables];
        self.costs(hist, bits);
        bits.iter()
            .enumerate()
            .min_by(|x, y| x.1.total_cmp(y.1))
            .map_or(0, |(t, _)| t as u8)
    }

    fn group_costs(&self, rows: &[[f32; GROUP]; ROWS], hist: &Sparse) -> [f32; GROUP] {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only where the CPU supports AVX2.
            return unsafe { group_costs_avx2(rows, hist) };
        }
        group_costs(rows, hist)
    }
}

/// [`group_costs`] compiled for AVX2 (one 256-bit vector per row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn group_costs_avx2(rows: &[[f32; GROUP]; ROWS], hist: &Sparse) -> [f32; GROUP] {
    group_costs(rows, hist)
}

/// [`block_cost`] of `hist` under the [`GROUP`] tables of `rows`, lane by lane.
#[inline(always)]
fn group_costs(rows: &[[f32; GROUP]; ROWS], hist: &Sparse) -> [f32; GROUP] {
    #[inline(always)]
    fn add(sum: &mut [f32; GROUP], row: &[f32; GROUP], count: u32) {
        let c = count as f32;
        for (s, &b) in sum.iter_mut().zip(row) {
            *s += c * b;
        }
    }
    let mut quads = hist.chunks_exact(4);
    let mut sums = [[0.0f32; GROUP]; 4];
    for quad in &mut quads {
        for (sum, &(s, c)) in sums.iter_mut().zip(quad) {
            add(sum, &rows[usize::from(s) & (ROWS - 1)], c);
        }
    }
    let mut rest = [0.0f32; GROUP];
    for &(s, c) in quads.remainder() {
        add(&mut rest, &rows[usize::from(s) & (ROWS - 1)], c);
    }
    std::array::from_fn(|l| (sums[0][l] + sums[1][l]) + (sums[2][l] + sums[3][l]) + rest[l])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_costs_are_the_per_table_costs_bit_for_bit() {
        // Tables of different shapes (a few symbols, many), more than one group of them,
        // and blocks of every length modulo 4, some with symbols a table lacks.
        let mut tables = Vec::new();
        for t in 0..11u32 {
            let counts: Vec<u32> = (0..512u32)
                .map(|s| {
                    if (s + t) % (t + 2) == 0 || s < 3 {
                        1 + (s * 7919 + t * 104_729) % 1000
                    } else {
                        0
                    }
                })
                .collect();
            tables.push(FreqTable::from_counts(&counts[..256]).unwrap());
        }
        let mut seed = 12345u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for k in [1, 2, 7, 8, 9, 11] {
            let mut matrix = CostMatrix::new(&tables[..k], 512);
            let avx2 = matrix.avx2;
            for len in 0..80usize {
                // Both builds of the inner loop, where the CPU has AVX2.
                matrix.avx2 = avx2 && len % 2 == 0;
                let mut hist: Sparse = Vec::new();
                for s in 0..512u16 {
                    if next().is_multiple_of(9) {
                        hist.push((s, 1 + next() % 300));
                    }
                }
                hist.truncate(len / 2);
                let mut out = vec![0.0f32; k];
                matrix.costs(&hist, &mut out);
                for (t, table) in tables[..k].iter().enumerate() {
                    let want = block_cost(&hist, &bit_costs(table, 512));
                    assert_eq!(out[t].to_bits(), want.to_bits(), "k {k} len {len} t {t}");
                }
            }
        }
    }
}
