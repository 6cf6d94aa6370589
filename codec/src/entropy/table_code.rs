//! The compact frequency-table encoding of format 1.2 (FORMAT.md §5.2.1): the tables of
//! one rANS stream as one bit string, symbols as runs and each frequency by an
//! Exp-Golomb code whose order follows the previous frequency.
//!
//! The 1.1 form spends 4 bytes a symbol (`u16` symbol, `u16` frequency): 19.7 KB of the
//! F16 MiniLM file. Weight fields have tables over a few contiguous ranges of symbols
//! whose frequencies change smoothly from one symbol to the next, so a run list and
//! frequencies coded in about `log2(freq) + 2` bits take a quarter of that.

use super::model::{FreqTable, MAX_TABLE_SYMBOLS, PROB_SCALE};
use super::EntropyError;

/// Exp-Golomb order used for the first frequency of a table.
const FIRST_ORDER: u32 = 6;
/// Longest unary prefix an Exp-Golomb code may have: every coded value is below
/// `2^13`, so a longer prefix is corruption (and the bound keeps shifts in range).
const MAX_PREFIX: u32 = 14;

/// Appends bits least significant first (the bit order of FORMAT.md §5.1).
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, bits: u32) {
        debug_assert!(bits <= 32 && (bits == 32 || value >> bits == 0));
        self.acc |= u64::from(value) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// Exp-Golomb code of order `k`: `q = (v >> k) + 1` as `⌊log2 q⌋` zeros, then the
    /// `⌊log2 q⌋ + 1` bits of `q` from the top one down (so a one ends the prefix), then
    /// the low `k` bits of `v`.
    fn exp_golomb(&mut self, v: u32, k: u32) {
        let q = (v >> k) + 1;
        let len = 32 - q.leading_zeros();
        self.put(0, len - 1);
        for i in (0..len).rev() {
            self.put((q >> i) & 1, 1);
        }
        self.put(v & ((1 << k) - 1), k);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.bytes.push(self.acc as u8);
        }
        self.bytes
    }
}

/// Reads what [`BitWriter`] wrote; reading past the end is an error, never a panic.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Result<u32, EntropyError> {
        let byte = self
            .bytes
            .get(self.pos / 8)
            .ok_or(EntropyError::Truncated {
                what: "compact frequency tables",
                needed: self.pos / 8 + 1,
                have: self.bytes.len(),
            })?;
        let b = u32::from(byte >> (self.pos % 8)) & 1;
        self.pos += 1;
        Ok(b)
    }

    fn get(&mut self, bits: u32) -> Result<u32, EntropyError> {
        if let Some(w) = self.window(bits) {
            self.pos += bits as usize;
            return Ok((w & ((1u64 << bits) - 1)) as u32);
        }
        let mut v = 0;
        for i in 0..bits {
            v |= self.bit()? << i;
        }
        Ok(v)
    }

    /// The next 57 or more bits from `pos` (least significant first), when the bytes
    /// hold at least `need ≤ 56` of them: a whole code read at once (the ids of a long
    /// stream are thousands of codes). `None` sends the caller to the bit-by-bit path,
    /// which reports a truncation as such.
    fn window(&self, need: u32) -> Option<u64> {
        let byte = self.pos / 8;
        if need > 56 || self.pos + need as usize > self.bytes.len() * 8 {
            return None;
        }
        let mut word = [0u8; 8];
        let avail = &self.bytes[byte..(byte + 8).min(self.bytes.len())];
        word[..avail.len()].copy_from_slice(avail);
        Some(u64::from_le_bytes(word) >> (self.pos % 8))
    }

    /// An Exp-Golomb code of order `k ≤ MAX_RUN_ORDER` with a prefix of at most
    /// `MAX_RUN_PREFIX` zeros (run lengths of block ids).
    fn exp_golomb_long(&mut self, k: u32) -> Result<u64, EntropyError> {
        // Whole code in one window: the prefix's zeros, then `q` from its top bit down
        // (bit-reversed in the window), then `k` low bits.
        if let Some(w) = self.window(1) {
            let zeros = w.trailing_zeros();
            let len = 2 * zeros + 1 + k;
            if zeros <= MAX_RUN_PREFIX && self.window(len).is_some() {
                let top = (w >> zeros) & ((1u64 << (zeros + 1)) - 1);
                let q = top.reverse_bits() >> (63 - zeros);
                let low = (w >> (2 * zeros + 1)) & ((1u64 << k) - 1);
                self.pos += len as usize;
                return Ok(((q - 1) << k) | low);
            }
        }
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > MAX_RUN_PREFIX {
                return Err(EntropyError::CompactTable {
                    problem: "Exp-Golomb prefix too long",
                });
            }
        }
        let mut q = 1u64;
        for _ in 0..zeros {
            q = (q << 1) | u64::from(self.bit()?);
        }
        let mut low = 0u64;
        for i in 0..k {
            low |= u64::from(self.bit()?) << i;
        }
        // q < 2^41 and k ≤ 24: no overflow.
        Ok(((q - 1) << k) | low)
    }

    fn exp_golomb(&mut self, k: u32) -> Result<u32, EntropyError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > MAX_PREFIX {
                return Err(EntropyError::CompactTable {
                    problem: "Exp-Golomb prefix too long",
                });
            }
        }
        let mut q = 1u32;
        for _ in 0..zeros {
            q = (q << 1) | self.bit()?;
        }
        let high = q - 1;
        let low = self.get(k)?;
        high.checked_shl(k)
            .filter(|h| h >> k == high)
            .map(|h| h | low)
            .ok_or(EntropyError::CompactTable {
                problem: "Exp-Golomb value too large",
            })
    }
}

/// Order of the Exp-Golomb code of a frequency following one of `prev`.
fn order_after(prev: u16) -> u32 {
    (16 - prev.leading_zeros()).saturating_sub(1)
}

/// Appends one table: the number of runs of present symbols less one, each run as its
/// gap (absent symbols before it; less one after the first run) and its length less one,
/// then every frequency but the last (implied by the sum) less one.
fn write_table(w: &mut BitWriter, table: &FreqTable) {
    let symbols = table.symbols();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    let mut next = 0u32;
    for &s in symbols {
        let s = u32::from(s);
        match runs.last_mut() {
            Some((_, len)) if s == next => *len += 1,
            _ => runs.push((s - next, 1)),
        }
        next = s + 1;
    }
    w.exp_golomb(runs.len() as u32 - 1, 0);
    for (i, &(gap, len)) in runs.iter().enumerate() {
        w.exp_golomb(if i == 0 { gap } else { gap - 1 }, 0);
        w.exp_golomb(len - 1, 0);
    }
    let freqs = table.freqs();
    let mut k = FIRST_ORDER;
    for &f in &freqs[..freqs.len() - 1] {
        w.exp_golomb(u32::from(f) - 1, k);
        k = order_after(f);
    }
}

/// The tables of one stream in the compact form, padded with zero bits to a whole byte.
pub fn write_tables(tables: &[FreqTable]) -> Vec<u8> {
    let mut w = BitWriter::default();
    for t in tables {
        write_table(&mut w, t);
    }
    w.finish()
}

/// Bits needed for a table id among `n` values (0 for one value).
fn id_bits(n: usize) -> u32 {
    usize::BITS - n.saturating_sub(1).leading_zeros()
}

/// Exp-Golomb order for the length of a run of block ids following a run of `prev`.
fn run_order(prev: u64) -> u32 {
    (63 - prev.max(1).leading_zeros()).min(MAX_RUN_ORDER)
}

/// Largest order of a run length's Exp-Golomb code.
const MAX_RUN_ORDER: u32 = 24;
/// Longest unary prefix of a run length's code: runs are below `2^58` blocks.
const MAX_RUN_PREFIX: u32 = 40;

/// Calls `emit(value, bits)` for the code of each run of equal ids (format 1.3, mode 4;
/// FORMAT.md §5.2.2): the first id in `id_bits(T)` bits, then per run its length less one
/// as `EG_k` with `k` from the previous run's length, and after every run but the last the
/// next id among the `T − 1` others in `id_bits(T − 1)` bits. Nothing for one table.
fn for_each_id_code(ids: &[u8], n_tables: usize, mut emit: impl FnMut(u64, u32, bool)) {
    if n_tables < 2 || ids.is_empty() {
        return;
    }
    emit(u64::from(ids[0]), id_bits(n_tables), false);
    let mut prev_run = 1u64;
    let mut at = 0usize;
    while at < ids.len() {
        let id = ids[at];
        let run = ids[at..].iter().take_while(|&&t| t == id).count();
        emit(run as u64 - 1, run_order(prev_run), true);
        prev_run = run as u64;
        at += run;
        if let Some(&next) = ids.get(at) {
            let v = next - u8::from(next > id);
            emit(u64::from(v), id_bits(n_tables - 1), false);
        }
    }
}

/// Bits that the run code of `ids` (one per block, each below `n_tables`) takes: what
/// the encoder counts for the ids of a mode 4 stream.
pub fn ids_bits(ids: &[u8], n_tables: usize) -> u64 {
    let mut bits = 0u64;
    for_each_id_code(ids, n_tables, |v, k, golomb| {
        bits += if golomb {
            let q = (v >> k) + 1;
            2 * u64::from(63 - q.leading_zeros()) + 1 + u64::from(k)
        } else {
            u64::from(k)
        };
    });
    bits
}

/// The tables and then the block ids of one mode 4 or 5 stream as one bit string, padded
/// with zero bits to a whole byte. The ids are among `n_ids` values: `tables.len()` in
/// mode 4, one more in mode 5 (the last value marks a raw block).
pub fn write_tables_and_ids(tables: &[FreqTable], ids: &[u8], n_ids: usize) -> Vec<u8> {
    let mut w = BitWriter::default();
    for t in tables {
        write_table(&mut w, t);
    }
    for_each_id_code(ids, n_ids, |v, k, golomb| {
        if golomb {
            let q = (v >> k) + 1;
            let len = 64 - q.leading_zeros();
            for _ in 1..len {
                w.put(0, 1);
            }
            for i in (0..len).rev() {
                w.put(((q >> i) & 1) as u32, 1);
            }
            for i in 0..k {
                w.put(((v >> i) & 1) as u32, 1);
            }
        } else {
            w.put(v as u32, k);
        }
    });
    w.finish()
}

/// Bytes that the compact form of `tables` takes (the length of what `write_tables` returns).
pub fn tables_len(tables: &[FreqTable]) -> usize {
    write_tables(tables).len()
}

/// Parses `count` tables of symbols of `symbol_bits` bits written by [`write_tables`],
/// returning them and the bytes read (the padding bits of the last byte MUST be zero).
/// Every value is checked before it is used: run positions stay below `2^symbol_bits`, a
/// table holds at most [`MAX_TABLE_SYMBOLS`] symbols, every frequency is at least 1 and
/// they sum to exactly [`PROB_SCALE`]. Allocation is bounded by `count` tables of at most
/// 256 symbols.
pub fn read_tables(
    bytes: &[u8],
    count: usize,
    symbol_bits: u32,
) -> Result<(Vec<FreqTable>, usize), EntropyError> {
    let (tables, r) = read_tables_bits(bytes, count, symbol_bits)?;
    Ok((tables, finish_read(r)?))
}

/// [`read_tables`] up to the last bit of the tables, returning the reader there.
fn read_tables_bits(
    bytes: &[u8],
    count: usize,
    symbol_bits: u32,
) -> Result<(Vec<FreqTable>, BitReader<'_>), EntropyError> {
    let bad = |problem| EntropyError::CompactTable { problem };
    let alphabet = 1u32 << symbol_bits;
    let mut r = BitReader { bytes, pos: 0 };
    let mut tables = Vec::with_capacity(count.min(255));
    for _ in 0..count {
        let runs = r.exp_golomb(0)? + 1;
        if runs > alphabet {
            return Err(bad("more runs than symbols"));
        }
        let mut symbols: Vec<u16> = Vec::new();
        let mut next = 0u32;
        for i in 0..runs {
            let gap = r.exp_golomb(0)? + u32::from(i > 0);
            let len = r.exp_golomb(0)? + 1;
            let start = next.checked_add(gap).ok_or(bad("run past the alphabet"))?;
            let end = start.checked_add(len).ok_or(bad("run past the alphabet"))?;
            if end > alphabet {
                return Err(bad("run past the alphabet"));
            }
            if symbols.len() + len as usize > MAX_TABLE_SYMBOLS {
                return Err(EntropyError::TableSize {
                    count: symbols.len() + len as usize,
                    max: MAX_TABLE_SYMBOLS,
                });
            }
            symbols.extend((start..end).map(|s| s as u16));
            next = end;
        }
        let mut freqs = Vec::with_capacity(symbols.len());
        let mut total = 0u32;
        let mut k = FIRST_ORDER;
        for _ in 1..symbols.len() {
            let f = r.exp_golomb(k)? + 1;
            total += f;
            if total >= PROB_SCALE {
                return Err(EntropyError::TableSum {
                    total,
                    expected: PROB_SCALE,
                });
            }
            freqs.push(f as u16);
            k = order_after(f as u16);
        }
        freqs.push((PROB_SCALE - total) as u16);
        tables.push(FreqTable::from_parts(symbols, freqs));
    }
    Ok((tables, r))
}

/// Checks the zero padding after the last bit `r` read and returns the bytes read.
fn finish_read(r: BitReader<'_>) -> Result<usize, EntropyError> {
    let used = r.pos.div_ceil(8);
    if !r.pos.is_multiple_of(8) && r.bytes[used - 1] >> (r.pos % 8) != 0 {
        return Err(EntropyError::CompactTable {
            problem: "nonzero padding bits",
        });
    }
    Ok(used)
}

/// Parses what [`write_tables_and_ids`] wrote: `count` tables as [`read_tables`] does,
/// then exactly `n_blocks` block ids among `n_ids` values (`count`, or `count + 1` in mode
/// 5). Every id is below `n_ids`, the runs add up to
/// exactly `n_blocks` (a run past it is an error), and the padding bits are zero. The
/// ids take `n_blocks` bytes, grown run by run as they are read; the caller bounds
/// `n_blocks` (the stream parser checks first that the stream can hold its chunks).
pub fn read_tables_and_ids(
    bytes: &[u8],
    count: usize,
    symbol_bits: u32,
    n_blocks: usize,
    n_ids: usize,
) -> Result<(Vec<FreqTable>, Vec<u8>, usize), EntropyError> {
    let bad = |problem| EntropyError::CompactTable { problem };
    let (tables, mut r) = read_tables_bits(bytes, count, symbol_bits)?;
    let mut ids = Vec::new();
    if n_ids >= 2 && n_blocks > 0 {
        let mut id = r.get(id_bits(n_ids))? as usize;
        let mut prev_run = 1u64;
        loop {
            if id >= n_ids {
                return Err(bad("block table id out of range"));
            }
            let k = run_order(prev_run);
            let run = r
                .exp_golomb_long(k)?
                .checked_add(1)
                .ok_or(bad("run too long"))?;
            let left = (n_blocks - ids.len()) as u64;
            if run > left {
                return Err(bad("block id runs past the last block"));
            }
            ids.resize(ids.len() + run as usize, id as u8);
            prev_run = run;
            if ids.len() == n_blocks {
                break;
            }
            let v = r.get(id_bits(n_ids - 1))? as usize;
            id = v + usize::from(v >= id);
        }
    } else {
        ids.resize(n_blocks, 0);
    }
    let used = finish_read(r)?;
    Ok((tables, ids, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_tables() -> Vec<FreqTable> {
        let mut a = vec![0u32; 256];
        for (s, c) in a.iter_mut().enumerate().skip(40).take(90) {
            *c = 1 + ((s as u32 * 37) % 500);
        }
        a[200] = 7;
        a[255] = 100_000;
        let mut b = vec![0u32; 256];
        b[3] = 1;
        vec![
            FreqTable::from_counts(&a).unwrap(),
            FreqTable::from_counts(&b).unwrap(),
            FreqTable::from_counts(&[1u32; 256]).unwrap(),
        ]
    }

    #[test]
    fn round_trip() {
        let tables = sample_tables();
        let bytes = write_tables(&tables);
        assert_eq!(bytes.len(), tables_len(&tables));
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0xAA; 5]);
        let (back, used) = read_tables(&padded, tables.len(), 8).unwrap();
        assert_eq!(back, tables);
        assert_eq!(used, bytes.len());
        let old: usize = tables.iter().map(FreqTable::serialized_len).sum();
        assert!(bytes.len() < old);
    }

    /// Block ids with long and short runs, every table used, the last run one block.
    fn sample_ids(n_tables: u8) -> Vec<u8> {
        let mut ids = Vec::new();
        for (i, run) in [1usize, 7, 300, 2, 1, 64, 5000, 3].iter().enumerate() {
            ids.extend(std::iter::repeat_n(
                (i * 5 % usize::from(n_tables)) as u8,
                *run,
            ));
        }
        ids.push(n_tables - 1);
        ids
    }

    #[test]
    fn tables_and_run_coded_ids_round_trip() {
        let tables = sample_tables();
        for count in 1..=tables.len() {
            let ids = if count == 1 {
                vec![0; 77]
            } else {
                sample_ids(count as u8)
            };
            let bytes = write_tables_and_ids(&tables[..count], &ids, count);
            let bits = write_tables(&tables[..count]).len() * 8;
            // The ids add what ids_bits counts (up to the padding of the tables' last byte).
            let ids_len = ids_bits(&ids, count);
            assert!(bytes.len() * 8 <= bits + ids_len as usize + 7, "{count}");
            assert!(
                bytes.len() * 8 + 8 > bits.saturating_sub(8) + ids_len as usize,
                "{count}"
            );
            let mut padded = bytes.clone();
            padded.extend_from_slice(&[0xAA; 5]);
            let (back, back_ids, used) =
                read_tables_and_ids(&padded, count, 8, ids.len(), count).unwrap();
            assert_eq!(back, tables[..count]);
            assert_eq!(back_ids, ids);
            assert_eq!(used, bytes.len());
        }
        // Runs of ids cost a few bits each, not a byte per block.
        assert!(ids_bits(&sample_ids(3), 3) < 200);
        assert_eq!(ids_bits(&[0; 1000], 1), 0);
    }

    #[test]
    fn truncated_and_damaged_run_coded_ids_are_errors() {
        let tables = sample_tables();
        let ids = sample_ids(3);
        let bytes = write_tables_and_ids(&tables, &ids, 3);
        for len in 0..bytes.len() {
            assert!(
                read_tables_and_ids(&bytes[..len], 3, 8, ids.len(), 3).is_err(),
                "{len}"
            );
        }
        // The runs must add up to exactly the block count.
        assert!(read_tables_and_ids(&bytes, 3, 8, ids.len() - 1, 3).is_err());
        assert!(read_tables_and_ids(&bytes, 3, 8, ids.len() + 1, 3).is_err());
        // Every single-byte change either fails or yields ids below the table count.
        for i in 0..bytes.len() {
            for x in [0x01u8, 0x10, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[i] ^= x;
                if let Ok((_, back, used)) = read_tables_and_ids(&bad, 3, 8, ids.len(), 3) {
                    assert!(used <= bad.len());
                    assert_eq!(back.len(), ids.len());
                    assert!(back.iter().all(|&t| t < 3));
                }
            }
        }
        // A first id of 3 among three tables (two bits of ones after the tables).
        let mut w = BitWriter::default();
        for t in &tables {
            write_table(&mut w, t);
        }
        w.put(3, 2);
        w.put(1, 1); // EG_0(0): a run of one block
        assert!(read_tables_and_ids(&w.finish(), 3, 8, 1, 3).is_err());
        // A run length whose Exp-Golomb prefix never ends.
        let mut w = BitWriter::default();
        write_table(&mut w, &tables[0]);
        write_table(&mut w, &tables[1]);
        w.put(0, 1);
        let mut bytes = w.finish();
        bytes.extend_from_slice(&[0; 16]);
        assert!(read_tables_and_ids(&bytes, 2, 8, 1 << 40, 2).is_err());
    }

    #[test]
    fn truncated_and_damaged_tables_are_errors() {
        let tables = sample_tables();
        let bytes = write_tables(&tables);
        for len in 0..bytes.len() {
            assert!(
                read_tables(&bytes[..len], tables.len(), 8).is_err(),
                "{len}"
            );
        }
        // Narrower symbols: the 256-symbol table does not fit 7 bits.
        assert!(read_tables(&bytes, tables.len(), 7).is_err());
        // Every single-byte change either fails or yields valid tables.
        for i in 0..bytes.len() {
            for x in [0x01u8, 0x10, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[i] ^= x;
                if let Ok((t, used)) = read_tables(&bad, tables.len(), 8) {
                    assert!(used <= bad.len());
                    for t in t {
                        let sum: u32 = t.freqs().iter().map(|&f| u32::from(f)).sum();
                        assert_eq!(sum, PROB_SCALE);
                        assert!(t.freqs().iter().all(|&f| f > 0));
                        assert!(t.symbols().windows(2).all(|w| w[0] < w[1]));
                    }
                }
            }
        }
        // All ones: prefixes end at once but values run past the alphabet or the sum.
        assert!(read_tables(&[0xFF; 64], 3, 8).is_err());
        // All zeros: the Exp-Golomb prefix never ends.
        assert!(read_tables(&[0; 64], 1, 8).is_err());
    }
}
