//! Bit packing alone: any bytes unpack to symbols of the declared width that pack back
//! to the same bytes (bits past the last symbol cleared), and any symbols round-trip.
//!
//! Input layout: `width: u8 | n: u16 LE (mod 4097) | bytes`.

use mcodec::entropy::bitpack::{pack, packed_len, unpack};

/// Runs the check on one input; panics on a violated property.
pub fn check(data: &[u8]) {
    let [w, n_lo, n_hi, bytes @ ..] = data else {
        return;
    };
    let width = 1 + u32::from(*w) % 16;
    let n = usize::from(u16::from_le_bytes([*n_lo, *n_hi])) % 4097;
    let need = packed_len(n, width);
    let mut packed = bytes.to_vec();
    packed.resize(need, 0);
    // Bits past the last symbol carry nothing.
    let used_bits = n * width as usize % 8;
    if used_bits != 0 {
        if let Some(last) = packed.last_mut() {
            *last &= (1u8 << used_bits) - 1;
        }
    }

    let mut syms = vec![0xFFFFu16; n];
    unpack(&packed, width, &mut syms);
    // Extra bytes after the packed ones must not change anything.
    let mut longer = packed.clone();
    longer.extend_from_slice(&[0xFF; 9]);
    let mut syms2 = vec![0u16; n];
    unpack(&longer, width, &mut syms2);
    assert!(
        syms == syms2,
        "unpack depends on bytes past its range or on the poison"
    );
    assert!(
        syms.iter().all(|&s| u32::from(s) < 1 << width),
        "symbol wider than {width}"
    );

    let mut again = Vec::new();
    pack(&syms, width, &mut again);
    assert_eq!(again.len(), need);
    assert!(
        again == packed,
        "pack(unpack(bytes)) != bytes at width {width}"
    );

    // Arbitrary symbols (masked to the width) round-trip too.
    let mask = ((1u32 << width) - 1) as u16;
    let symbols: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]) & mask)
        .collect();
    let mut out = Vec::new();
    pack(&symbols, width, &mut out);
    assert_eq!(out.len(), packed_len(symbols.len(), width));
    let mut back = vec![0u16; symbols.len()];
    unpack(&out, width, &mut back);
    assert!(
        back == symbols,
        "symbols do not round-trip at width {width}"
    );
}
