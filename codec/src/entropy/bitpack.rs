//! Fixed-width bit packing (FORMAT.md §5.1): symbol `i` occupies bits `[w·i, w·i + w)` of a
//! little-endian bit string, least significant bit first.

/// Bytes needed to pack `n` symbols of `width` bits.
pub fn packed_len(n: usize, width: u32) -> usize {
    (n * width as usize).div_ceil(8)
}

/// [`packed_len`] for sizes read from a file: `None` where `n · width` overflows.
pub fn checked_packed_len(n: usize, width: u32) -> Option<usize> {
    Some(n.checked_mul(width as usize)?.div_ceil(8))
}

/// Appends `symbols` packed at `width` bits each (1..=16). Bits above `width` must be 0.
pub fn pack(symbols: &[u16], width: u32, out: &mut Vec<u8>) {
    debug_assert!((1..=16).contains(&width));
    if width == 8 {
        // Into zeroed room, slice to slice: a loop that vectorises (extending through an
        // iterator took ~7 instructions a byte).
        let start = out.len();
        out.resize(start + symbols.len(), 0);
        for (o, &s) in out[start..].iter_mut().zip(symbols) {
            *o = s as u8;
        }
        return;
    }
    out.reserve(packed_len(symbols.len(), width));
    let mut symbols = symbols;
    if width == 7 {
        // Eight symbols make seven whole bytes: no bit carries between groups.
        let (groups, rest) = symbols.as_chunks::<8>();
        for g in groups {
            let v = (0..8).fold(0u64, |acc, k| acc | (u64::from(g[k]) << (7 * k)));
            out.extend_from_slice(&v.to_le_bytes()[..7]);
        }
        symbols = rest;
    }
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &s in symbols {
        acc |= u64::from(s) << bits;
        bits += width;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

/// Unpacks `out.len()` symbols of `width` bits from `bytes`, which must hold at least
/// [`packed_len`] bytes.
pub fn unpack(bytes: &[u8], width: u32, out: &mut [u16]) {
    debug_assert!(bytes.len() >= packed_len(out.len(), width));
    match width {
        8 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = u16::from(b);
            }
        }
        7 => unpack7(bytes, out),
        _ => unpack_generic(bytes, width, out),
    }
}

/// Seven-bit fields (the BF16 residual): eight symbols per seven bytes.
fn unpack7(bytes: &[u8], out: &mut [u16]) {
    let whole = out.len() / 8 * 8;
    for (group, b) in out[..whole].chunks_exact_mut(8).zip(bytes.chunks_exact(7)) {
        let v = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], 0]);
        for (k, o) in group.iter_mut().enumerate() {
            *o = ((v >> (7 * k)) & 0x7F) as u16;
        }
    }
    if whole < out.len() {
        unpack_generic(&bytes[whole / 8 * 7..], 7, &mut out[whole..]);
    }
}

fn unpack_generic(bytes: &[u8], width: u32, out: &mut [u16]) {
    let mask = (1u64 << width) - 1;
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    let mut src = bytes.iter();
    for o in out.iter_mut() {
        while bits < width {
            acc |= u64::from(*src.next().unwrap_or(&0)) << bits;
            bits += 8;
        }
        *o = (acc & mask) as u16;
        acc >>= width;
        bits -= width;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_every_width_and_length() {
        for width in 1..=16u32 {
            for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 100] {
                let syms: Vec<u16> = (0..n as u32)
                    .map(|i| {
                        (i.wrapping_mul(2654435761) >> 7) as u16 & ((1u32 << width) - 1) as u16
                    })
                    .collect();
                let mut buf = Vec::new();
                pack(&syms, width, &mut buf);
                assert_eq!(buf.len(), packed_len(n, width));
                let mut back = vec![0u16; n];
                unpack(&buf, width, &mut back);
                assert_eq!(back, syms, "width {width} n {n}");
            }
        }
    }

    #[test]
    fn layout_is_lsb_first() {
        let mut buf = Vec::new();
        pack(&[0b101, 0b011], 3, &mut buf);
        assert_eq!(buf, vec![0b011_101]);
    }
}
