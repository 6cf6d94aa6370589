//! Vector coding of whole groups, on the path the caller chose.

use super::{F16Merge, Symbol, WordReader, LANES};
use crate::cpu::SimdLevel;
use crate::entropy::model::{DecTable, EncTable};

#[cfg(target_arch = "x86_64")]
mod x86_decode;
#[cfg(target_arch = "x86_64")]
mod x86_encode;

#[cfg(target_arch = "x86_64")]
pub(crate) use x86_decode::{gather8_by_loads, refill8_shuffle};

/// The path whose decoder runs for `level`: `level` itself where the CPU has it (every
/// level has a decoder), else the scalar one.
pub(super) fn decoder_level(level: SimdLevel) -> SimdLevel {
    debug_assert!(
        level.is_supported(),
        "{level} requested on a CPU without it"
    );
    if level.is_supported() {
        level
    } else {
        SimdLevel::Scalar
    }
}

/// The path whose encoder runs for `level` (every level has one).
pub(super) fn encoder_level(level: SimdLevel) -> SimdLevel {
    decoder_level(level)
}

/// Decodes as many leading whole groups of each of `N` independent chunks' outputs as
/// the vector path of `level` (from [`decoder_level`]) can, the same number in each,
/// returning the number of symbols written to each; the caller finishes with the
/// scalar loop. Group `g` of chunk `j` is decoded with `tables[j][g >> group_shift]`:
/// one call runs across the blocks of a chunk, whose tables change every few blocks in
/// format 1.3 streams (MiniLM's word embedding: 8 tables on blocks of 256), instead of a
/// call, and for two chunks a pairing, per run of one table.
/// Nothing is decoded (0 is returned) where a needed table is missing or the tables
/// mix slot layouts (the loop is compiled for one).
pub(super) fn decode_groups<S: Symbol, const N: usize>(
    level: SimdLevel,
    states: [&mut [u32; LANES]; N],
    readers: [&mut WordReader; N],
    tables: [&[&DecTable]; N],
    group_shift: u32,
    outs: [&mut [S]; N],
) -> usize {
    decode_groups_merged(level, states, readers, tables, group_shift, outs, None)
}

/// Whether [`decode_groups_merged`] on the path of `level` (from [`decoder_level`])
/// merges with `merges` rather than writing the symbols: on the AVX-512 path, for 8-bit
/// symbols, with a merge for each chunk. (The AVX2 kernel, with half the registers,
/// measured slower merging: one-thread MiniLM F16 decode by CPU time −3 % with the
/// merge in its interleaved pairs, −5 to −8 % one chunk at a time against main's
/// pairs in separate processes; BENCHMARKS.md, twenty-sixth session, dec26.)
pub(super) fn merging<S: Symbol, const N: usize>(
    level: SimdLevel,
    merges: Option<[F16Merge; N]>,
) -> bool {
    cfg!(target_arch = "x86_64")
        && level == SimdLevel::Avx512
        && size_of::<S>() == 1
        && merges.is_some_and(|m| m.iter().all(|m| m.len > 0))
}

/// [`decode_groups`], with `merges` (8-bit symbols only) the symbols of each chunk not
/// written to its output but merged by [`F16Merge`] (as many groups as the merges
/// reach).
pub(super) fn decode_groups_merged<S: Symbol, const N: usize>(
    level: SimdLevel,
    states: [&mut [u32; LANES]; N],
    readers: [&mut WordReader; N],
    tables: [&[&DecTable]; N],
    group_shift: u32,
    outs: [&mut [S]; N],
    merges: Option<[F16Merge; N]>,
) -> usize {
    let groups = outs.iter().map(|o| o.len() / LANES).min().unwrap_or(0);
    if groups == 0 {
        return 0;
    }
    let blocks = ((groups - 1) >> group_shift) + 1;
    if tables.iter().any(|t| t.len() < blocks) {
        return 0;
    }
    let first = tables[0][0].inline;
    if !tables
        .iter()
        .all(|t| t[..blocks].iter().all(|t| t.inline == first))
    {
        // Mixed layouts: leave it all to the scalar loop (callers avoid this).
        return 0;
    }
    let inline = first;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (every call): `level` comes from `decoder_level`, so the CPU supports
        // every feature the called function enables (the AVX-512 level's features
        // include the AVX2 level's, which its kernel also uses); a kernel merges only
        // for `u8` symbols (`merging`), within each merge's `len` (its groups stop
        // there), and an `F16Merge` holds its output borrowed and its input in bounds.
        let merge = match merges {
            Some(m) if merging::<S, N>(level, merges) => {
                if m[0].joint {
                    2
                } else {
                    1
                }
            }
            _ => 0,
        };
        let merges = merges.unwrap_or([F16Merge::NONE; N]);
        macro_rules! kernel {
            ($kernel:ident, $inline:literal) => {
                match merge {
                    1 => x86_decode::$kernel::<S, N, $inline, 1>(
                        states,
                        readers,
                        tables,
                        group_shift,
                        outs,
                        merges,
                    ),
                    2 => x86_decode::$kernel::<S, N, $inline, 2>(
                        states,
                        readers,
                        tables,
                        group_shift,
                        outs,
                        merges,
                    ),
                    _ => x86_decode::$kernel::<S, N, $inline, 0>(
                        states,
                        readers,
                        tables,
                        group_shift,
                        outs,
                        merges,
                    ),
                }
            };
        }
        match (level, inline) {
            (SimdLevel::Avx512, true) => return unsafe { kernel!(decode_groups_avx512_256, true) },
            (SimdLevel::Avx512, false) => {
                return unsafe { kernel!(decode_groups_avx512_256, false) }
            }
            (SimdLevel::Avx2, true) => {
                return unsafe {
                    x86_decode::decode_groups_avx2::<S, N, true, 0>(
                        states,
                        readers,
                        tables,
                        group_shift,
                        outs,
                        merges,
                    )
                }
            }
            (SimdLevel::Avx2, false) => {
                return unsafe {
                    x86_decode::decode_groups_avx2::<S, N, false, 0>(
                        states,
                        readers,
                        tables,
                        group_shift,
                        outs,
                        merges,
                    )
                }
            }
            (SimdLevel::Scalar, _) => {}
        }
    }
    let _ = (
        level,
        inline,
        states,
        readers,
        tables,
        group_shift,
        outs,
        merges,
    );
    0
}

/// Codes whole groups `g-1, g-2, …` (all within `symbols`) with the vector encoder of
/// `level` (from [`encoder_level`]), or the portable one on the scalar path, placing
/// words as [`super::encode_chunk`] describes; returns the number of groups coded and whether
/// every symbol coded was in its table (absent ones are clamped into the table and
/// flagged: the chunk is then dropped).
#[allow(clippy::too_many_arguments)]
pub(super) fn encode_groups(
    level: SimdLevel,
    states: &mut [u32; LANES],
    symbols: &[u16],
    tables: &[&EncTable],
    block_len: usize,
    g: usize,
    words: &mut [[u8; 2]],
    start: &mut usize,
) -> (usize, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (both calls): `level` comes from `encoder_level`, so the CPU supports
        // every feature the called function enables.
        match level {
            SimdLevel::Avx512 => {
                return unsafe {
                    x86_encode::encode_groups_avx512(
                        states, symbols, tables, block_len, g, words, start,
                    )
                }
            }
            SimdLevel::Avx2 => {
                return unsafe {
                    x86_encode::encode_groups_avx2(
                        states, symbols, tables, block_len, g, words, start,
                    )
                }
            }
            SimdLevel::Scalar => {}
        }
    }
    let _ = level;
    super::encode::encode_groups_portable(states, symbols, tables, block_len, g, words, start)
}
