//! Table choice: the symbol statistics, the exponent groups and tables that code them
//! cheapest ([`Plan`]), and the maps from exponent to group and table.

use super::Layout;
use super::{MAX_GROUPS, MAX_PLAN_BUCKETS};
use crate::entropy::model::{FreqTable, PROB_SCALE};

/// The tables of a delta: which exponents share a group, and one table per context.
pub(super) struct Plan {
    /// Group of every exponent value.
    pub(super) group_of: Vec<u8>,
    /// Last exponent value of each group (strictly increasing, the last is the largest
    /// exponent value).
    pub(super) group_last: Vec<usize>,
    pub(super) prev_zero: bool,
    /// `group · K + prev_zero` → table (`K` = 2 with the previous-zero bit, else 1);
    /// `None` for a context no element uses.
    pub(super) tables: Vec<Option<FreqTable>>,
}

impl Plan {
    pub(super) fn contexts_per_group(&self) -> usize {
        if self.prev_zero {
            2
        } else {
            1
        }
    }
}

/// Histograms of symbols per (base exponent, context bit: the symbol `LANES` elements
/// back was zero).
pub(super) struct Stats {
    /// `[exponent][context bit][symbol]`, flattened.
    pub(super) hist: Vec<u32>,
    pub(super) alphabet: usize,
}

impl Stats {
    fn at(&self, exp: usize, prev_zero: usize) -> &[u32] {
        let start = (exp * 2 + prev_zero) * self.alphabet;
        &self.hist[start..start + self.alphabet]
    }
}

/// Estimated cost in bits of coding `hist` with its own table, table included.
fn table_cost_bits(hist: &[u32]) -> f64 {
    let n: f64 = hist.iter().map(|&c| f64::from(c)).sum();
    if n == 0.0 {
        return 8.0; // an "unused" table entry
    }
    let mut bits = 0.0;
    let (mut first, mut last) = (usize::MAX, 0);
    let mut table_bytes = 0.0;
    for (s, &c) in hist.iter().enumerate() {
        if c > 0 {
            let c = f64::from(c);
            bits += c * (n / c).log2();
            first = first.min(s);
            last = s;
            table_bytes += if c * f64::from(PROB_SCALE) / n >= 128.0 {
                2.0
            } else {
                1.0
            };
        }
    }
    table_bytes +=
        (last - first + 1) as f64 - hist[first..=last].iter().filter(|&&c| c > 0).count() as f64;
    bits + 8.0 * (2.0 + table_bytes)
}

/// Chooses exponent groups (contiguous ranges of exponent values) minimising the
/// estimated size, by dynamic programming over buckets of the exponents that occur.
/// Returns the estimated bits and the plan with quantised tables.
pub(super) fn plan(layout: Layout, stats: &Stats, prev_zero: bool) -> (f64, Plan) {
    let alphabet = stats.alphabet;
    let k = if prev_zero { 2 } else { 1 };
    // Histogram of one exponent for each context bit (merged when the bit is off).
    let context_hists = |exp: usize| -> Vec<Vec<u32>> {
        let (a, b) = (stats.at(exp, 0), stats.at(exp, 1));
        if prev_zero {
            vec![a.to_vec(), b.to_vec()]
        } else {
            vec![a.iter().zip(b).map(|(x, y)| x + y).collect()]
        }
    };
    let used: Vec<usize> = (0..layout.exponents())
        .filter(|&e| stats.at(e, 0).iter().chain(stats.at(e, 1)).any(|&c| c > 0))
        .collect();
    // Buckets of consecutive used exponents, at most MAX_PLAN_BUCKETS, each holding its
    // last exponent and merged histograms.
    let per_bucket = used.len().div_ceil(MAX_PLAN_BUCKETS).max(1);
    let buckets: Vec<(usize, Vec<Vec<u32>>)> = used
        .chunks(per_bucket)
        .map(|exps| {
            let mut h = vec![vec![0u32; alphabet]; k];
            for &e in exps {
                for (acc, part) in h.iter_mut().zip(context_hists(e)) {
                    for (a, p) in acc.iter_mut().zip(part) {
                        *a += p;
                    }
                }
            }
            (*exps.last().expect("chunks are not empty"), h)
        })
        .collect();
    let nb = buckets.len();
    // best[j]: cheapest cost of buckets[..j]; from[j]: where its last group starts.
    let mut best = vec![0.0f64; nb + 1];
    let mut from = vec![0usize; nb + 1];
    for j in 1..=nb {
        best[j] = f64::INFINITY;
        let mut merged = vec![vec![0u32; alphabet]; k];
        for i in (0..j).rev() {
            for (acc, part) in merged.iter_mut().zip(&buckets[i].1) {
                for (a, p) in acc.iter_mut().zip(part) {
                    *a += p;
                }
            }
            let cost = best[i] + merged.iter().map(|h| table_cost_bits(h)).sum::<f64>() + 8.0;
            if cost < best[j] {
                best[j] = cost;
                from[j] = i;
            }
        }
    }
    let mut cuts = vec![nb];
    while let Some(&j) = cuts.last() {
        if j == 0 {
            break;
        }
        cuts.push(from[j]);
    }
    cuts.reverse(); // 0 = c0 < c1 < … < nb: group g holds buckets[c_g..c_{g+1}]
    let mut group_last = Vec::new();
    let mut tables = Vec::new();
    for w in cuts.windows(2) {
        let mut merged = vec![vec![0u32; alphabet]; k];
        for (_, h) in &buckets[w[0]..w[1]] {
            for (acc, part) in merged.iter_mut().zip(h) {
                for (a, p) in acc.iter_mut().zip(part) {
                    *a += p;
                }
            }
        }
        group_last.push(buckets[w[1] - 1].0);
        tables.extend(merged.iter().map(|h| FreqTable::from_counts(h)));
    }
    debug_assert!(
        group_last.len() <= MAX_GROUPS,
        "at most one group per bucket"
    );
    if group_last.is_empty() {
        // No elements: one group, unused tables.
        group_last.push(layout.exponents() - 1);
        tables = vec![None; k];
    }
    *group_last.last_mut().expect("at least one group") = layout.exponents() - 1;
    let group_of = group_map(&group_last, layout.exponents());
    let est = best[nb];
    (
        est,
        Plan {
            group_of,
            group_last,
            prev_zero,
            tables,
        },
    )
}

/// Exponent → group, from each group's last exponent.
pub(super) fn group_map(group_last: &[usize], exponents: usize) -> Vec<u8> {
    let mut map = vec![0u8; exponents];
    let mut g = 0;
    for (e, slot) in map.iter_mut().enumerate() {
        while e > group_last[g] {
            g += 1;
        }
        *slot = g as u8;
    }
    map
}

/// Exponent → index of its table for context bit 0, plus that for bit 1 shifted up by 16
/// (the same table twice without the context bit): what the vector paths gather.
pub(super) fn table_pairs(group_of: &[u8], prev_zero: bool) -> Vec<u32> {
    let k = if prev_zero { 2 } else { 1 };
    // At most 2 · MAX_GROUPS tables: indices fit 16 bits.
    group_of
        .iter()
        .map(|&g| {
            let first = u32::from(g) * k;
            first | ((first + k - 1) << 16)
        })
        .collect()
}
