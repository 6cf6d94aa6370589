//! Vector coding of whole groups, on the path the caller chose.

use super::{Symbol, WordReader, LANES};
use crate::cpu::SimdLevel;
use crate::entropy::model::{DecTable, EncTable};

#[cfg(target_arch = "x86_64")]
mod x86_decode;
#[cfg(target_arch = "x86_64")]
mod x86_encode;

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

/// The kernel that decodes `n` chunks for `level`: one chunk on the AVX-512
/// path runs the AVX2 kernel. Alone, a chunk's two 16-lane state vectors wait on the
/// AVX-512 kernel's hardware gathers, which on Zen 4 have the latency that the AVX2
/// kernel's eight loads per vector do not: one chunk at a time decoded 0.58 ns per
/// symbol there against 0.66–0.67 on the AVX-512 kernel (FP8 bytes of MiniLM,
/// `examples/rans_loop --dtype f8e4m3`; BF16 exponents 0.56–0.58 against 0.65–0.66, BENCHMARKS.md
/// sixteenth session, dec16), while a pair interleaved, what most chunks decode as,
/// stays on the AVX-512 kernel (0.56). Single chunks are whole tensors of at most one
/// chunk, a tensor's odd last chunk, and the blocks left after a pair's loop. Both
/// kernels decode exactly the same symbols, states and positions. (Elsewhere than on
/// x86-64 neither vector level is supported and `level` is returned.)
fn one_chunk_level(level: SimdLevel, n: usize) -> SimdLevel {
    if level == SimdLevel::Avx512 && n == 1 && SimdLevel::Avx2.is_supported() {
        SimdLevel::Avx2
    } else {
        level
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
    let level = one_chunk_level(level, N);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (all four calls): `level` comes from `decoder_level`, or is AVX2 where
        // `one_chunk_level` found it supported, so the CPU supports every feature the
        // called function enables.
        match (level, inline) {
            (SimdLevel::Avx512, true) => {
                return unsafe {
                    x86_decode::decode_groups_avx512::<S, N, true>(
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
                    x86_decode::decode_groups_avx512::<S, N, false>(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One chunk on the AVX-512 path goes to the AVX2 kernel where the CPU has it;
    /// interleaved chunks and the other paths keep their own kernel.
    #[test]
    fn one_chunk_runs_the_avx2_kernel_on_the_avx512_path() {
        let avx2 = SimdLevel::Avx2.is_supported();
        let expect = if avx2 {
            SimdLevel::Avx2
        } else {
            SimdLevel::Avx512
        };
        assert_eq!(one_chunk_level(SimdLevel::Avx512, 1), expect);
        assert_eq!(one_chunk_level(SimdLevel::Avx512, 2), SimdLevel::Avx512);
        assert_eq!(one_chunk_level(SimdLevel::Avx2, 1), SimdLevel::Avx2);
        assert_eq!(one_chunk_level(SimdLevel::Scalar, 1), SimdLevel::Scalar);
    }
}
