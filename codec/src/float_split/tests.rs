#[cfg(target_arch = "x86_64")]
use super::count::nonzero_set_avx2;
use super::count::{nonzero_set, nonzero_set_of, sparse_of};
use super::merge::{
    merge_bf16_packed_on, merge_bf16_packed_scalar, merge_f16_bytes_on, merge_f16_fields_on,
    merge_f32_packed_on,
};
use super::split::{split_bf16_packed_into_on, split_bf16_packed_on};
use super::*;
use crate::cpu::SimdLevel;

/// Every layout, plain before joint per dtype: the order the tests walk them in.
const EVERY_LAYOUT: [Layout; 7] = [
    Layout::Bf16,
    Layout::Bf16Joint,
    Layout::F16,
    Layout::F16Joint,
    Layout::F32,
    Layout::F32Joint,
    Layout::F8,
];

fn round_trip(layout: Layout, src: &[u8]) {
    let n = src.len() / layout.element_size();
    let mut bufs: Vec<Vec<u16>> = layout.field_bits().iter().map(|_| vec![0; n]).collect();
    let mut views: Vec<&mut [u16]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
    layout.split(src, &mut views);
    for (buf, &bits) in bufs.iter().zip(layout.field_bits()) {
        assert!(
            buf.iter().all(|&s| u32::from(s) < 1 << bits),
            "{layout:?} field wider than {bits}"
        );
    }
    let views: Vec<&[u16]> = bufs.iter().map(|b| b.as_slice()).collect();
    let mut back = vec![0u8; src.len()];
    layout.merge(&views, &mut back);
    assert_eq!(back, src);
}

/// `n` pseudo-random BF16 elements and their two fields of `layout`.
fn bf16_sample(layout: Layout, n: usize) -> (Vec<u8>, Vec<u16>, Vec<u16>) {
    let src: Vec<u8> = (0..n as u32)
        .flat_map(|i| ((i.wrapping_mul(2654435761) >> 9) as u16).to_le_bytes())
        .collect();
    let (mut f0, mut f1) = (vec![0u16; n], vec![0u16; n]);
    layout.split(&src, &mut [&mut f0, &mut f1]);
    (src, f0, f1)
}

/// `count` equals histograms of `split`'s fields, whichever fields are counted (one
/// field alone takes its own loop) and whatever the remainder of the last quad.
#[test]
fn count_matches_histograms_of_split_fields() {
    for layout in EVERY_LAYOUT {
        let fields = layout.field_bits().len();
        for n in [0usize, 1, 3, 4, 5, 63, 4096, 4099] {
            let src: Vec<u8> = (0..(n * layout.element_size()) as u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            let mut bufs: Vec<Vec<u16>> = (0..fields).map(|_| vec![0; n]).collect();
            let mut views: Vec<&mut [u16]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            layout.split(&src, &mut views);
            for mask in 1u32..1 << fields {
                let mut hists: Vec<Vec<u32>> = layout
                    .field_bits()
                    .iter()
                    .enumerate()
                    .map(|(f, &b)| {
                        if mask >> f & 1 == 1 {
                            vec![1; 1 << b]
                        } else {
                            Vec::new()
                        }
                    })
                    .collect();
                layout.count(&src, &mut hists);
                for (f, (h, buf)) in hists.iter().zip(&bufs).enumerate() {
                    if mask >> f & 1 == 0 {
                        assert!(h.is_empty());
                        continue;
                    }
                    // Counts add to what the histogram held (all ones here).
                    let mut expected = vec![1u32; h.len()];
                    for &s in buf {
                        expected[usize::from(s)] += 1;
                    }
                    assert_eq!(h, &expected, "{layout:?} n {n} fields {mask:b} field {f}");
                }
            }
        }
    }
}

/// The sparse counts are the dense ones' present entries, whatever the previous call
/// on this thread counted (the scratch histograms are left zeroed), for every layout,
/// field mask and odd length, and a short or empty mask counts nothing.
/// The one-pass layout sample gives what `count_sparse` gives for the base layout (all
/// fields) and its joint layout (first two fields), on every layout, for random bits
/// and for the skewed words of real weights, at odd lengths; `None` without a joint.
#[test]
fn count_sparse_with_joint_matches_count_sparse() {
    for layout in [
        Layout::Bf16,
        Layout::F16,
        Layout::F32,
        Layout::F8,
        Layout::Bf16Joint,
    ] {
        let bits = layout.field_bits();
        for n in [0usize, 1, 7, 4096, 4099] {
            for skewed in [false, true] {
                let src: Vec<u8> = (0..(n * layout.element_size()) as u32)
                    .map(|i| {
                        let r = (i.wrapping_mul(2654435761) >> 13) as u8;
                        // Few distinct high bytes, as weights' exponents have.
                        if skewed && i % 2 == 1 {
                            0x3C | (r & 0x81)
                        } else {
                            r
                        }
                    })
                    .collect();
                let Some(joint) = layout.joint() else {
                    assert!(layout.count_sparse_with_joint(&src).is_none(), "{layout:?}");
                    continue;
                };
                let all = vec![true; bits.len()];
                let first_two: Vec<bool> = (0..bits.len()).map(|f| f < 2).collect();
                let expected = [
                    layout.count_sparse(&src, &all),
                    joint.count_sparse(&src, &first_two),
                ];
                assert_eq!(
                    layout.count_sparse_with_joint(&src),
                    Some(expected),
                    "{layout:?} n {n} skewed {skewed}"
                );
            }
        }
    }
}

/// BF16 words for the window count's tests: weights of `spread` binades around 1
/// (most within the window, some far below it), zeros, both signs, and here and
/// there a word from anywhere.
fn bf16_words(n: usize, seed: u32, spread: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let w = match x % 97 {
                0 => 0,
                1 => (x >> 8) as u16,
                _ => {
                    let exp = 127 - (x >> 8) % spread.max(1);
                    ((x >> 31) << 15 | exp << 7 | (x >> 20) & 0x7F) as u16
                }
            };
            w.to_le_bytes()
        })
        .collect()
}

/// The first BF16 field's histogram counted element by element.
fn naive_first(layout: Layout, src: &[u8]) -> Vec<u32> {
    let mut hist = vec![0u32; 512];
    for e in src.chunks_exact(2) {
        let w = u16::from_le_bytes([e[0], e[1]]);
        let f = match layout {
            Layout::Bf16Joint => bf16_joint_fields(w)[0],
            _ => bf16_fields(w)[0],
        };
        hist[usize::from(f)] += 1;
    }
    hist
}

/// The AVX-512 window count, `Layout::count` and `count_sparse_blocks` of the first
/// BF16 field give the element-by-element histogram: values in and out of the window
/// (narrow and wide spreads, zeros, random words), every length of the tail, a first
/// vector whose maximum is not the block's.
#[test]
fn window_counts_of_bf16_first_fields_are_exact() {
    if !window_count::counts_on(SimdLevel::Avx512) {
        eprintln!("skip: the AVX-512 window count is not checked: this CPU lacks AVX-512");
    }
    for layout in [Layout::Bf16, Layout::Bf16Joint] {
        for (seed, spread) in [(1u32, 6u32), (7, 20), (11, 60), (13, 200)] {
            for n in [0usize, 1, 31, 63, 64, 65, 127, 128, 200, 4097, 9000] {
                let src = bf16_words(n, seed.wrapping_add(n as u32), spread);
                let want = naive_first(layout, &src);
                let level = SimdLevel::Avx512;
                let mut hist = [0u32; 512];
                if window_count::count_bf16_first(layout.is_joint(), level, &src, &mut hist) {
                    assert_eq!(&hist[..], &want[..], "{layout:?} {seed} {spread} {n}");
                }
                let mut hists = vec![vec![0u32; 512], Vec::new()];
                layout.count(&src, &mut hists);
                assert_eq!(hists[0], want, "count {layout:?} {seed} {spread} {n}");
                for block_len in [1024usize, 2048, 3000] {
                    let blocks: Vec<Vec<(u16, u32)>> = src
                        .chunks(2 * block_len)
                        .map(|b| sparse_of(&naive_first(layout, b)))
                        .collect();
                    assert_eq!(
                        layout.count_sparse_blocks(&src, 0, block_len),
                        blocks,
                        "blocks {layout:?} {seed} {spread} {n} {block_len}"
                    );
                }
            }
        }
    }
}

#[test]
fn count_sparse_blocks_match_count_sparse_block_by_block() {
    for layout in EVERY_LAYOUT {
        let esize = layout.element_size();
        let fields = layout.field_bits().len();
        // Random bytes (most values present) and a few values repeated (runs); blocks
        // short and long (counted into four copies), the last one ragged.
        for skewed in [false, true] {
            let src: Vec<u8> = (0..(4099 * esize) as u32)
                .map(|i| {
                    let x = (i.wrapping_mul(2654435761) >> 13) as u8;
                    if skewed {
                        x & 0x83
                    } else {
                        x
                    }
                })
                .collect();
            for block_len in [1usize, 3, 256, 999, 1000, 1024, 1499, 2048, 5000] {
                for field in 0..fields {
                    let mut only = vec![false; fields];
                    only[field] = true;
                    let expected: Vec<Vec<(u16, u32)>> = src
                        .chunks(block_len * esize)
                        .map(|block| layout.count_sparse(block, &only).swap_remove(field))
                        .collect();
                    assert_eq!(
                        layout.count_sparse_blocks(&src, field, block_len),
                        expected,
                        "{layout:?} skewed {skewed} blocks of {block_len} field {field}"
                    );
                }
            }
        }
    }
}

#[test]
fn nonzero_sets_agree() {
    let mut counts = [0u32; 512];
    for round in 0..64u32 {
        for (i, c) in counts.iter_mut().enumerate() {
            let x = (i as u32 ^ round).wrapping_mul(2654435761) >> 20;
            *c = if x.is_multiple_of(round % 7 + 1) {
                x
            } else {
                0
            };
        }
        let set = nonzero_set(&counts);
        for (v, &c) in counts.iter().enumerate() {
            assert_eq!(
                set[v / 64] >> (v % 64) & 1 == 1,
                c != 0,
                "round {round} v {v}"
            );
        }
        // Spread over four copies (each value in one of them, or split between
        // two), the set of their sum is the same.
        let mut copies = [[0u32; 512]; 4];
        for (v, &c) in counts.iter().enumerate() {
            copies[v % 4][v] = c / 2;
            copies[(v / 4) % 4][v] += c - c / 2;
        }
        assert_eq!(nonzero_set_of(&copies, 8), set, "round {round}");
        assert_eq!(nonzero_set_of(std::slice::from_ref(&counts), 8), set);
        #[cfg(target_arch = "x86_64")]
        if SimdLevel::Avx2.is_supported() {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe {
                assert_eq!(nonzero_set_avx2(std::slice::from_ref(&counts), 8), set);
                assert_eq!(nonzero_set_avx2(&copies, 8), set, "round {round}");
            }
        }
    }
}

#[test]
fn count_sparse_matches_count() {
    for round in 0..2u32 {
        for layout in EVERY_LAYOUT {
            let bits = layout.field_bits();
            for n in [0usize, 1, 5, 63, 4096, 4099] {
                let src: Vec<u8> = (0..(n * layout.element_size()) as u32)
                    .map(|i| ((i + round).wrapping_mul(2654435761) >> 13) as u8)
                    .collect();
                for mask in 0u32..1 << bits.len() {
                    let on: Vec<bool> = (0..bits.len()).map(|f| mask >> f & 1 == 1).collect();
                    let mut dense: Vec<Vec<u32>> = bits
                        .iter()
                        .zip(&on)
                        .map(|(&b, &o)| if o { vec![0; 1 << b] } else { Vec::new() })
                        .collect();
                    layout.count(&src, &mut dense);
                    let expected: Vec<Vec<(u16, u32)>> = dense
                        .iter()
                        .map(|h| {
                            h.iter()
                                .enumerate()
                                .filter(|(_, &c)| c > 0)
                                .map(|(s, &c)| (s as u16, c))
                                .collect()
                        })
                        .collect();
                    assert_eq!(
                        layout.count_sparse(&src, &on),
                        expected,
                        "{layout:?} n {n} fields {mask:b}"
                    );
                }
                let none = layout.count_sparse(&src, &[]);
                assert_eq!(none.len(), bits.len());
                assert!(none.iter().all(Vec::is_empty));
            }
        }
    }
}

fn packed_bf16_split_matches<const JOINT: bool>() {
    let layout = if JOINT {
        Layout::Bf16Joint
    } else {
        Layout::Bf16
    };
    for n in [0usize, 1, 7, 8, 63, 64, 65, 200, 1000] {
        let (src, f0, f1) = bf16_sample(layout, n);
        let mut expected = vec![9u8];
        crate::entropy::bitpack::pack(&f1, 7, &mut expected);
        for level in SimdLevel::supported() {
            let mut exp = vec![0xEEEEu16; n];
            let mut packed = vec![9u8];
            split_bf16_packed_on::<JOINT>(level, &src, &mut exp, &mut packed);
            assert_eq!(exp, f0, "{layout:?} n {n} {level}");
            assert_eq!(packed, expected, "{layout:?} n {n} {level}");
            // Into a slice of stale bytes: every byte written.
            for stale in [0x00u8, 0xFF, 0xA5] {
                let mut exp = vec![0xEEEEu16; n];
                let mut packed = vec![stale; expected.len() - 1];
                split_bf16_packed_into_on::<JOINT>(level, &src, &mut exp, &mut packed);
                assert_eq!(exp, f0, "{layout:?} n {n} {level} stale {stale}");
                assert_eq!(
                    packed,
                    expected[1..],
                    "{layout:?} n {n} {level} stale {stale}"
                );
            }
        }
    }
    // Every 16-bit pattern, in an order that puts each in every lane of a group:
    // the lane-parallel (SWAR) scalar split must not leak bits between lanes.
    let src: Vec<u8> = (0..4 * 65536u32)
        .flat_map(|i| ((i >> 2) as u16).rotate_left(4 * (i & 3)).to_le_bytes())
        .collect();
    let n = src.len() / 2;
    let (mut f0, mut f1) = (vec![0u16; n], vec![0u16; n]);
    layout.split(&src, &mut [&mut f0, &mut f1]);
    let mut expected = Vec::new();
    crate::entropy::bitpack::pack(&f1, 7, &mut expected);
    for level in SimdLevel::supported() {
        let mut exp = vec![0u16; n];
        let mut packed = Vec::new();
        split_bf16_packed_on::<JOINT>(level, &src, &mut exp, &mut packed);
        assert!(
            exp == f0 && packed == expected,
            "{layout:?} all patterns {level}"
        );
    }
}

#[test]
fn packed_bf16_split_matches_split_then_pack_on_every_path() {
    packed_bf16_split_matches::<false>();
    packed_bf16_split_matches::<true>();
}

fn packed_bf16_merge_matches<const JOINT: bool>() {
    let layout = if JOINT {
        Layout::Bf16Joint
    } else {
        Layout::Bf16
    };
    for n in [
        0usize, 1, 7, 8, 9, 14, 15, 16, 17, 23, 24, 25, 31, 32, 33, 47, 48, 49, 63, 64, 65, 200,
        1000, 4095, 4096, 4097,
    ] {
        let (src, f0, f1) = bf16_sample(layout, n);
        let mut packed = Vec::new();
        crate::entropy::bitpack::pack(&f1, 7, &mut packed);
        for level in SimdLevel::supported() {
            let mut dst = vec![0xEEu8; 2 * n];
            merge_bf16_packed_on::<JOINT>(level, &f0, &packed, &mut dst);
            assert_eq!(dst, src, "{layout:?} n {n} {level}");
        }
        // The portable loop alone, also after a prefix of whole bytes (how the vector
        // paths hand it their rest).
        for skip in [0, 8, 16].into_iter().filter(|&k| k <= n) {
            let mut dst = vec![0xEEu8; 2 * (n - skip)];
            merge_bf16_packed_scalar::<JOINT>(&f0[skip..], &packed[skip / 8 * 7..], &mut dst);
            assert_eq!(dst, src[2 * skip..], "{layout:?} n {n} scalar from {skip}");
        }
    }
    // Every 16-bit pattern, in an order that puts each in every lane of a step: the
    // SWAR merge must not leak bits between lanes or words.
    let src: Vec<u8> = (0..16 * 65536u32)
        .flat_map(|i| ((i >> 4) as u16).rotate_left(i & 15).to_le_bytes())
        .collect();
    let n = src.len() / 2;
    let (mut f0, mut f1) = (vec![0u16; n], vec![0u16; n]);
    layout.split(&src, &mut [&mut f0, &mut f1]);
    let mut packed = Vec::new();
    crate::entropy::bitpack::pack(&f1, 7, &mut packed);
    for level in SimdLevel::supported() {
        let mut dst = vec![0u8; 2 * n];
        merge_bf16_packed_on::<JOINT>(level, &f0, &packed, &mut dst);
        assert!(dst == src, "{layout:?} all patterns {level}");
    }
}

/// The F16 merge from the packed field's bytes equals unpacking, then merging, on every
/// path, for lengths around the vector widths and every 16-bit pattern.
#[test]
fn f16_merge_from_bytes_matches_unpack_then_merge_on_every_path() {
    for layout in [Layout::F16, Layout::F16Joint] {
        let patterns: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
        for n in [
            0usize, 1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 65_536,
        ] {
            let src = &patterns[..2 * n];
            let (mut f0, mut f1) = (vec![0u16; n], vec![0u16; n]);
            layout.split(src, &mut [&mut f0, &mut f1]);
            let mut bytes = Vec::new();
            crate::entropy::bitpack::pack(&f1, 8, &mut bytes);
            for level in SimdLevel::supported() {
                let mut dst = vec![0xEEu8; 2 * n];
                merge_f16_bytes_on(level, layout.is_joint(), &f0, &bytes, &mut dst);
                assert!(dst == src, "{layout:?} n {n} {level}");
            }
        }
    }
}

/// The F16 merge from fields in any form (bytes or 16-bit symbols each) equals
/// [`Layout::merge`] on every path, for lengths around the vector widths (64 and 32
/// elements) and every 16-bit pattern, and the byte-pair vector paths ran.
#[test]
fn f16_merge_from_fields_of_any_form_matches_merge_on_every_path() {
    let patterns: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    for layout in [Layout::F16, Layout::F16Joint] {
        for n in [
            0usize, 1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 65_536,
        ] {
            let src = &patterns[..2 * n];
            let (mut f0, mut f1) = (vec![0u16; n], vec![0u16; n]);
            layout.split(src, &mut [&mut f0, &mut f1]);
            let bytes = |f: &[u16]| f.iter().map(|&v| v as u8).collect::<Vec<u8>>();
            let (b0, b1) = (bytes(&f0), bytes(&f1));
            assert!(f0.iter().chain(&f1).all(|&v| v < 256));
            let forms = [
                (ByteField::Bytes(&b0), ByteField::Bytes(&b1)),
                (ByteField::Symbols(&f0), ByteField::Bytes(&b1)),
                (ByteField::Bytes(&b0), ByteField::Symbols(&f1)),
                (ByteField::Symbols(&f0), ByteField::Symbols(&f1)),
            ];
            for level in SimdLevel::supported() {
                for (k, &(e, l)) in forms.iter().enumerate() {
                    let before = crate::cpu::kernel_runs()[level as usize];
                    let mut dst = vec![0xEEu8; 2 * n];
                    merge_f16_fields_on(level, layout.is_joint(), e, l, &mut dst);
                    assert!(dst == src, "{layout:?} n {n} {level} form {k}");
                    if k == 0 {
                        let after = crate::cpu::kernel_runs()[level as usize];
                        assert!(after > before, "{level}: byte-pair merge did not run");
                    }
                }
            }
        }
    }
}

#[test]
fn packed_bf16_merge_matches_unpack_then_merge_on_every_path() {
    packed_bf16_merge_matches::<false>();
    packed_bf16_merge_matches::<true>();
}

fn packed_f32_merge_matches<const JOINT: bool>() {
    let layout = if JOINT { Layout::F32Joint } else { Layout::F32 };
    // Around the vector steps (16, 64) and the two-pass path's step (1024); then every
    // 16-bit top half in every lane of a step, beside varying low bytes: no bit may
    // leak between lanes, bytes or words.
    let patterns: Vec<u8> = (0..16 * 65536u32)
        .flat_map(|i| {
            let top = ((i >> 4) as u16).rotate_left(i & 15);
            ((u32::from(top) << 16) | (i.wrapping_mul(2654435761) >> 16)).to_le_bytes()
        })
        .collect();
    let lengths = [
        0usize, 1, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 1023, 1024, 1025,
        2048, 3000,
    ];
    for n in lengths.into_iter().chain([patterns.len() / 4]) {
        let src: Vec<u8> = if n == patterns.len() / 4 {
            patterns.clone()
        } else {
            (0..n as u32)
                .flat_map(|i| i.wrapping_mul(2654435761).rotate_left(i % 32).to_le_bytes())
                .collect()
        };
        let mut f: [Vec<u16>; 4] = std::array::from_fn(|_| vec![0u16; n]);
        let [f0, f1, f2, f3] = &mut f;
        layout.split(&src, &mut [f0, f1, f2, f3]);
        let mut packed = Vec::new();
        crate::entropy::bitpack::pack(&f[1], 7, &mut packed);
        let bytes: [Vec<u8>; 2] =
            std::array::from_fn(|k| f[2 + k].iter().map(|&s| s as u8).collect());
        let forms = |k: usize| [ByteField::Symbols(&f[2 + k]), ByteField::Bytes(&bytes[k])];
        for level in SimdLevel::supported() {
            for mid in forms(0) {
                for low in forms(1) {
                    let mut dst = vec![0xEEu8; 4 * n];
                    merge_f32_packed_on::<JOINT>(level, &f[0], &packed, mid, low, &mut dst);
                    assert!(dst == src, "{layout:?} n {n} {level} {mid:?} {low:?}");
                }
            }
            // The one-pass vector merge alone: it takes every whole step it can (the
            // AVX2 one leaves the last if the packed bytes end without 2 bytes of
            // slack), and writes what the reference does.
            let mut dst = vec![0xEEu8; 4 * n];
            let done = simd::merge_f32_bytes::<JOINT>(
                level, &f[0], &packed, &bytes[0], &bytes[1], &mut dst,
            );
            let step = match level {
                SimdLevel::Avx512 => 64,
                SimdLevel::Avx2 => 16,
                SimdLevel::Scalar => usize::MAX,
            };
            let whole = n.checked_div(step).unwrap_or(0) * step;
            assert!(
                done == whole || (level == SimdLevel::Avx2 && done + 16 == whole),
                "{layout:?} n {n} {level}: {done} of {n} merged"
            );
            assert!(
                dst[..4 * done] == src[..4 * done],
                "{layout:?} n {n} {level} one pass"
            );
        }
    }
}

#[test]
fn packed_f32_merge_matches_unpack_then_merge_on_every_path() {
    packed_f32_merge_matches::<false>();
    packed_f32_merge_matches::<true>();
}

#[test]
fn every_16_bit_pattern_round_trips() {
    let all: Vec<u8> = (0..=u16::MAX).flat_map(|w| w.to_le_bytes()).collect();
    for layout in [
        Layout::Bf16,
        Layout::F16,
        Layout::Bf16Joint,
        Layout::F16Joint,
    ] {
        round_trip(layout, &all);
    }
    let bytes: Vec<u8> = (0..=255u8).collect();
    round_trip(Layout::F8, &bytes);
}

#[test]
fn joint_layouts_put_the_sign_in_the_first_field() {
    // -1.0 and 1.0: the same fields but for the sign, which is bit 0 of field 0.
    for (layout, one) in [
        (Layout::Bf16Joint, 0x3F80u32),
        (Layout::F16Joint, 0x3C00),
        (Layout::F32Joint, 0x3F80_0000),
    ] {
        let esize = layout.element_size();
        let sign = 1u32 << (8 * esize - 1);
        let src: Vec<u8> = [one, one | sign]
            .iter()
            .flat_map(|w| w.to_le_bytes()[..esize].to_vec())
            .collect();
        let mut bufs: Vec<Vec<u16>> = layout.field_bits().iter().map(|_| vec![0; 2]).collect();
        let mut views: Vec<&mut [u16]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        layout.split(&src, &mut views);
        assert_eq!(bufs[0][1], bufs[0][0] | 1, "{layout:?}");
        assert_eq!(bufs[0][0] & 1, 0, "{layout:?}");
        for f in &bufs[1..] {
            assert_eq!(f[0], f[1], "{layout:?}: the sign left a residual field");
        }
    }
}

#[test]
fn f32_patterns_round_trip_and_share_bf16_fields() {
    let words: Vec<u32> = (0..=u16::MAX as u32)
        .map(|h| (h << 16) | (h.wrapping_mul(40503) & 0xFFFF))
        .collect();
    let src: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    round_trip(Layout::F32, &src);
    round_trip(Layout::F32Joint, &src);
    let n = words.len();
    let mut f = [vec![0u16; n], vec![0u16; n], vec![0u16; n], vec![0u16; n]];
    let [a, b, c, d] = &mut f;
    Layout::F32.split(&src, &mut [a, b, c, d]);
    let top: Vec<u8> = words
        .iter()
        .flat_map(|w| ((w >> 16) as u16).to_le_bytes())
        .collect();
    let (mut g0, mut g1) = (vec![0u16; n], vec![0u16; n]);
    Layout::Bf16.split(&top, &mut [&mut g0, &mut g1]);
    assert_eq!((f[0].clone(), f[1].clone()), (g0, g1));
}
