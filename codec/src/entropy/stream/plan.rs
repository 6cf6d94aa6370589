//! Model planning: block histograms clustered into a few rANS tables, and each block's
//! table chosen, by estimated bytes.

use rayon::prelude::*;

use super::{ids_bytes, tables_bytes, Effort};
use crate::entropy::block_costs::{bit_costs, block_cost, CostMatrix};
use crate::entropy::model::{FreqTable, MAX_SYMBOL_BITS};

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
pub(super) type Sparse = SparseHist;

#[cfg(any(test, feature = "fuzzing"))]
pub(super) fn sparse(hist: &[u32]) -> Sparse {
    hist.iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(s, &c)| (s as u16, c))
        .collect()
}

/// Picks the tables and each block's table; returns them with the estimated bytes of
/// tables, block ids and coded symbols. Table counts 1, 2, 4, … are tried while the
/// estimate keeps improving.
pub(super) fn choose_tables(
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
pub(super) fn coarsen_blocks(
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
pub(super) fn level_choices(per_block: &[f32], k: usize, levels: u8) -> Vec<(Vec<u8>, f64)> {
    if sums_are_exact(per_block, k << levels, k) {
        level_choices_pairwise(per_block, k, levels)
    } else {
        level_choices_in_order(per_block, k, levels)
    }
}

/// The ids on blocks `up` levels longer when each change of table also costs
/// `switches.bits` ([`assign_in_runs`] over the groups' per-table sums, added block by
/// block), their bits, and the plan's objective: the bits plus the changes' charges.
pub(super) fn charged_level_choice(
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
pub(super) fn sum_in_order(group: &[f32], sums: &mut [f64]) {
    sums.fill(0.0);
    for block in group.chunks_exact(sums.len()) {
        for (sum, &b) in sums.iter_mut().zip(block) {
            *sum += f64::from(b);
        }
    }
}

/// The least of a group's per-table sums: its table and bits.
pub(super) fn least(sums: &[f64]) -> (usize, f64) {
    sums.iter()
        .copied()
        .enumerate()
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .expect("at least two tables")
}

/// [`level_choices`], each group's per-table sums added block by block.
pub(super) fn level_choices_in_order(
    per_block: &[f32],
    k: usize,
    levels: u8,
) -> Vec<(Vec<u8>, f64)> {
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
pub(super) fn level_choices_pairwise(
    per_block: &[f32],
    k: usize,
    levels: u8,
) -> Vec<(Vec<u8>, f64)> {
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
pub(super) fn sums_are_exact(values: &[f32], group: usize, k: usize) -> bool {
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
pub(super) const RAW_SHARE: f64 = 1.0;

/// [`StreamEncoder::may_have_raw`](super::StreamEncoder::may_have_raw)'s share: blocks this close to packing may hold shorter
/// blocks at [`RAW_SHARE`] (a block of 2048 symbols with one row of zeros in five).
pub(super) const RAW_HINT: f64 = 0.7;

/// [`Effort::Default`] searches for several tables only when the blocks' own entropies
/// are at least this fraction below one table's cost.
pub(super) const MIN_POTENTIAL: f64 = 0.008;
/// [`Effort::Default`] tries twice as many tables only after the last doubling gained at
/// least this fraction. 0.005 while a table cost `2 + 4k` bytes; with format 1.2's compact
/// tables (about a fifth of that) smaller gains pay for the next doubling: 0.001 makes
/// MiniLM F16 4.1 KB smaller (84.5069 → 84.4977 %, under #12's 84.5 %) for about a fifth
/// more one-thread F16 encode time (BF16 and F32 within noise), BENCHMARKS.md fourteenth
/// session.
pub(super) const MIN_DOUBLING_GAIN: f64 = 0.001;

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
pub(super) const PLAN_BLOCK_N: f64 = 2048.0;

/// `c · log2(PLAN_BLOCK_N / c)` for every count `c ≤ PLAN_BLOCK_N`, computed exactly as
/// [`sparse_entropy_bits`] computes its terms (index 0 as that expression gives it).
pub(super) static PLAN_BLOCK_TERMS: std::sync::LazyLock<Vec<f64>> =
    std::sync::LazyLock::new(|| {
        (0..=PLAN_BLOCK_N as u32)
            .map(|c| f64::from(c) * (PLAN_BLOCK_N / f64::from(c)).log2())
            .collect()
    });

/// Counts below this take `c·log2(c)` from [`C_LOG2_C`]: blocks of up to 2048 symbols,
/// the fast level's planning blocks.
pub(super) const C_LOG2_C_LEN: usize = 2049;

/// `c·log2(c)` for every `c < C_LOG2_C_LEN`.
pub(super) static C_LOG2_C: std::sync::LazyLock<Vec<f64>> = std::sync::LazyLock::new(|| {
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
pub(super) fn sparse_entropy_bits_fast(hist: &Sparse) -> f64 {
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
pub(super) fn saturate(counts: &[u64]) -> Vec<u32> {
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
pub(super) fn cluster(
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
pub(super) fn fit_tables<'h>(
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
pub(super) fn add_hist(sum: &mut [u64; 1 << MAX_SYMBOL_BITS], h: &Sparse) {
    for &(s, c) in h {
        sum[usize::from(s) & ((1 << MAX_SYMBOL_BITS) - 1)] += u64::from(c);
    }
}

/// [`fit_tables`]'s tables from the per-table sums.
pub(super) fn tables_of_sums(
    sums: &[[u64; 1 << MAX_SYMBOL_BITS]],
    alphabet: usize,
) -> Vec<FreqTable> {
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
pub(super) fn fit_tables_runs(
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

/// Rounds of assignment and refit of [`StreamEncoder::refine`](super::StreamEncoder::refine).
pub(super) const REFINE_ROUNDS: usize = 3;

/// Every block's bits under every table of `matrix`, `matrix.tables()` per block in one
/// buffer (block-major).
pub(super) fn all_block_costs(hists: &[Sparse], matrix: &CostMatrix) -> Vec<f32> {
    let mut per_block = Vec::new();
    all_block_costs_into(hists, matrix, &mut per_block);
    per_block
}

/// [`all_block_costs`] into `per_block` (resized to fit).
pub(super) fn all_block_costs_into(
    hists: &[Sparse],
    matrix: &CostMatrix,
    per_block: &mut Vec<f32>,
) {
    let k = matrix.tables();
    per_block.resize(hists.len() * k, 0.0);
    per_block
        .par_chunks_mut(k)
        .zip(hists)
        .for_each(|(bits, h)| matrix.costs(h, bits));
}

/// What a change of table between neighbouring blocks costs a plan beyond its id, in
/// bits (0 for plans by size alone; see [`StreamEncoder::plan_sparse`](super::StreamEncoder::plan_sparse)).
#[derive(Clone, Copy, Debug)]
pub(super) struct Switches {
    pub(super) bits: f64,
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
pub(super) fn assign_in_runs(per_block: &[f32], k: usize, switches: Switches) -> Vec<u8> {
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
pub(super) fn change_charge(k: usize, switches: Switches) -> f64 {
    f64::from(usize::BITS - k.saturating_sub(2).leading_zeros()) + 6.0 + switches.bits
}

/// [`assign_in_runs`] for any table count, `change` the charge per change of table.
pub(super) fn assign_in_runs_any(per_block: &[f32], k: usize, change: f64) -> Vec<u8> {
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
pub(super) fn assign_in_runs_of<const K: usize>(per_block: &[f32], change: f64) -> Vec<u8> {
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
pub(super) fn run_step(total: &mut [f64], from: &mut [u8], bits: &[f32], first: bool, change: f64) {
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
pub(super) fn least_total(total: &[f64]) -> usize {
    total
        .iter()
        .enumerate()
        .min_by(|x, y| x.1.total_cmp(y.1))
        .map_or(0, |(t, _)| t)
}

/// Gives every block the table that codes it in the fewest bits; returns whether any
/// assignment changed.
pub(super) fn assign_blocks<'h>(
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
