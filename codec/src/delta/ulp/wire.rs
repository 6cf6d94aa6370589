//! The payload's integers and tables on the wire: LEB128 varints and frequency tables,
//! written and read back with bounds checks.

use crate::delta::DeltaError;
use crate::entropy::model::{FreqTable, PROB_SCALE};

pub(super) fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 value of at most `max`; rejects overlong or oversized encodings.
pub(super) fn read_varint(bytes: &mut &[u8], what: &str, max: u64) -> Result<u64, DeltaError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes
            .split_first()
            .ok_or_else(|| DeltaError::Corrupt(format!("ulp: truncated {what}")))?;
        *bytes = rest;
        let part = u64::from(b & 0x7F);
        if i == 9 && part > 1 {
            break;
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            if (i > 0 && b == 0) || v > max {
                break;
            }
            return Ok(v);
        }
    }
    Err(DeltaError::Corrupt(format!(
        "ulp: bad {what} (at most {max})"
    )))
}

/// Table: varint first symbol, varint symbol count (0: unused context), then a varint
/// frequency per symbol from the first (0 = absent).
pub(super) fn write_table(out: &mut Vec<u8>, table: Option<&FreqTable>, alphabet: usize) {
    let Some(table) = table else {
        out.extend_from_slice(&[0, 0]);
        return;
    };
    let symbols = table.symbols();
    let first = usize::from(symbols[0]);
    let last = usize::from(*symbols.last().expect("tables are not empty"));
    write_varint(out, first as u64);
    write_varint(out, (last - first + 1) as u64);
    for f in &table.dense_freqs(alphabet)[first..=last] {
        write_varint(out, u64::from(*f));
    }
}

pub(super) fn read_table(
    bytes: &mut &[u8],
    alphabet: usize,
) -> Result<Option<FreqTable>, DeltaError> {
    let first = read_varint(bytes, "table start", alphabet as u64 - 1)? as usize;
    let count = read_varint(bytes, "table length", (alphabet - first) as u64)? as usize;
    if count == 0 {
        return Ok(None);
    }
    let mut freqs = vec![0u16; first + count];
    for f in &mut freqs[first..] {
        *f = read_varint(bytes, "frequency", u64::from(PROB_SCALE))? as u16;
    }
    FreqTable::from_freqs(&freqs)
        .map(Some)
        .map_err(|e| DeltaError::Corrupt(format!("ulp: {e}")))
}
