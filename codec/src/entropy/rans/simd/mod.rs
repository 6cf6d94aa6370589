//! Vector coding of whole groups, on the path the caller chose.

use super::{Symbol, WordReader, LANES};
use crate::cpu::SimdLevel;
use crate::entropy::model::{DecTable, EncTable};

#[cfg(target_arch = "x86_64")]
mod x86_decode;
#[cfg(target_arch = "x86_64")]
mod x86_encode;

#[cfg(target_arch = "x86_64")]
pub(crate) use x86_decode::gather8_by_loads;

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
        // SAFETY (all four calls): `level` comes from `decoder_level`, so the CPU
        // supports every feature the called function enables (the AVX-512 level's
        // features include the AVX2 level's, which its kernel also uses).
        match (level, inline) {
            (SimdLevel::Avx512, true) => {
                return unsafe {
                    x86_decode::decode_groups_avx512_256::<S, N, true>(
                        states,
                        readers,
                        tables,
                        group_shift,
                        outs,
                    )
                }
            }
            (SimdLevel::Avx512, false) => {
                return unsafe {
                    x86_decode::decode_groups_avx512_256::<S, N, false>(
                        states,
                        readers,
                        tables,
                        group_shift,
                        outs,
                    )
                }
            }
            (SimdLevel::Avx2, true) => {
                return unsafe {
                    x86_decode::decode_groups_avx2::<S, N, true>(
                        states,
                        readers,
                        tables,
                        group_shift,
                        outs,
                    )
                }
            }
            (SimdLevel::Avx2, false) => {
                return unsafe {
                    x86_decode::decode_groups_avx2::<S, N, false>(
                        states,
                        readers,
                        tables,
                        group_shift,
                        outs,
                    )
                }
            }
            (SimdLevel::Scalar, _) => {}
        }
    }
    let _ = (level, inline, states, readers, tables, group_shift, outs);
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
