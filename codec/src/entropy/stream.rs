//! Field streams (FORMAT.md §5.5): `n` symbols of `symbol_bits` bits, cut into chunks of
//! `chunk_len` symbols, stored in one of three modes.
//!
//! ```text
//! Packed: u8 0 | bit-packed symbols (chunk c starts at byte c·chunk_len·bits/8)
//! Const:  u8 1 | u16 value
//! Rans:   u8 2 | u8 T | T frequency tables | n_chunks × u8 table id
//!              | n_chunks × u32 payload length | zero padding to a multiple of 4
//!              | payloads, each starting at a multiple of 4 from the stream start
//! ```
//!
//! A chunk is the unit of parallel decoding: its payload, its table id and its offset
//! (a prefix sum of the lengths) are all a CPU thread or GPU warp needs.

use super::bitpack;
use super::model::{DecTable, EncTable, FreqTable, MAX_SYMBOL_BITS, MAX_TABLE_SYMBOLS};
use super::rans::{self, LANES, STATE_BYTES};
use super::EntropyError;

const MODE_PACKED: u8 = 0;
const MODE_CONST: u8 = 1;
const MODE_RANS: u8 = 2;

/// Most frequency tables one stream may carry (the chunk's table id is a byte).
pub const MAX_TABLES: usize = 255;

/// How hard the encoder searches for a good model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Effort {
    /// One table per stream unless more tables clearly pay.
    #[default]
    Default,
    /// Try more table counts.
    Max,
}

/// The coding decision for one stream, made from per-chunk histograms before any chunk is
/// coded, so that chunks can then be coded in parallel.
#[derive(Clone, Debug)]
pub struct StreamEncoder {
    symbol_bits: u32,
    mode: Mode,
}

#[derive(Clone, Debug)]
enum Mode {
    Packed,
    Const(u16),
    Rans {
        tables: Vec<FreqTable>,
        enc: Vec<EncTable>,
        chunk_tables: Vec<u8>,
    },
}

impl StreamEncoder {
    /// Chooses the mode and tables from one histogram per chunk (each `1 << symbol_bits`
    /// long). `chunk_len` must be a power of two of at least 8.
    pub fn plan(
        chunk_hists: &[Vec<u32>],
        symbol_bits: u32,
        chunk_len: usize,
        effort: Effort,
    ) -> Self {
        debug_assert!(
            symbol_bits <= MAX_SYMBOL_BITS && chunk_len.is_power_of_two() && chunk_len >= 8
        );
        let alphabet = 1usize << symbol_bits;
        let mut total = vec![0u64; alphabet];
        for h in chunk_hists {
            for (t, &c) in total.iter_mut().zip(h) {
                *t += u64::from(c);
            }
        }
        let n: u64 = total.iter().sum();
        let distinct: Vec<usize> = (0..alphabet).filter(|&s| total[s] > 0).collect();
        let packed = Self {
            symbol_bits,
            mode: Mode::Packed,
        };
        let mode = match distinct.len() {
            0 => return packed,
            1 => Mode::Const(distinct[0] as u16),
            d if d > MAX_TABLE_SYMBOLS => return packed,
            _ => {
                let packed_bytes = bitpack::packed_len(n as usize, symbol_bits) as f64;
                match choose_tables(chunk_hists, &total, effort) {
                    Some((tables, chunk_tables, est)) if est < packed_bytes * 0.995 => {
                        let enc = tables
                            .iter()
                            .map(|t| EncTable::new(t, symbol_bits))
                            .collect();
                        Mode::Rans {
                            tables,
                            enc,
                            chunk_tables,
                        }
                    }
                    _ => return packed,
                }
            }
        };
        Self { symbol_bits, mode }
    }

    /// Forces bit packing (used when the coded stream turned out no smaller).
    pub fn packed(symbol_bits: u32) -> Self {
        Self {
            symbol_bits,
            mode: Mode::Packed,
        }
    }

    /// True if the stream stores its symbols bit-packed.
    pub fn is_packed(&self) -> bool {
        matches!(self.mode, Mode::Packed)
    }

    /// Codes chunk `c` (its symbols) into the piece that [`Self::assemble`] expects.
    pub fn encode_chunk(&self, c: usize, symbols: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.mode {
            Mode::Packed => bitpack::pack(symbols, self.symbol_bits, &mut out),
            Mode::Const(_) => {}
            Mode::Rans {
                enc, chunk_tables, ..
            } => rans::encode_chunk(symbols, &enc[usize::from(chunk_tables[c])], &mut out),
        }
        out
    }

    /// Joins the header and the pieces of every chunk, in chunk order.
    pub fn assemble(&self, pieces: &[Vec<u8>]) -> Vec<u8> {
        match &self.mode {
            Mode::Packed => {
                let mut out = Vec::with_capacity(1 + pieces.iter().map(Vec::len).sum::<usize>());
                out.push(MODE_PACKED);
                for p in pieces {
                    out.extend_from_slice(p);
                }
                out
            }
            Mode::Const(v) => {
                let mut out = vec![MODE_CONST];
                out.extend_from_slice(&v.to_le_bytes());
                out
            }
            Mode::Rans {
                tables,
                chunk_tables,
                ..
            } => {
                debug_assert_eq!(pieces.len(), chunk_tables.len());
                let mut out = vec![MODE_RANS, tables.len() as u8];
                for t in tables {
                    t.serialize(&mut out);
                }
                out.extend_from_slice(chunk_tables);
                for p in pieces {
                    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
                }
                for p in pieces {
                    out.resize(out.len().next_multiple_of(4), 0);
                    out.extend_from_slice(p);
                }
                out
            }
        }
    }
}

/// Picks the tables and the table of each chunk; returns them with the estimated stream
/// size in bytes, or `None` if no table can be built.
fn choose_tables(
    chunk_hists: &[Vec<u32>],
    total: &[u64],
    effort: Effort,
) -> Option<(Vec<FreqTable>, Vec<u8>, f64)> {
    let single = FreqTable::from_counts(&saturate(total))?;
    let mut best = (vec![single], vec![0u8; chunk_hists.len()]);
    let mut best_size = estimate(chunk_hists, &best.0, &best.1);
    let max_tables = match effort {
        Effort::Default => 8,
        Effort::Max => 32,
    }
    .min(chunk_hists.len());
    let mut k = 2;
    while k <= max_tables {
        let (tables, assign) = cluster(chunk_hists, total, k, effort);
        let size = estimate(chunk_hists, &tables, &assign);
        if size < best_size {
            best_size = size;
            best = (tables, assign);
        } else if effort == Effort::Default {
            break;
        }
        k *= 2;
    }
    Some((best.0, best.1, best_size))
}

fn saturate(counts: &[u64]) -> Vec<u32> {
    let max = counts.iter().copied().max().unwrap_or(0);
    // Scale down so counts fit u32 while keeping every present symbol present.
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

/// Estimated stream size: header, tables, index, states and the coded bits.
fn estimate(chunk_hists: &[Vec<u32>], tables: &[FreqTable], assign: &[u8]) -> f64 {
    let header: usize =
        2 + tables.iter().map(FreqTable::serialized_len).sum::<usize>() + 5 * assign.len();
    let mut bytes = header as f64;
    for (h, &t) in chunk_hists.iter().zip(assign) {
        let bits = tables[usize::from(t)].cost_bits(h).unwrap_or(f64::INFINITY);
        bytes += bits / 8.0 + (STATE_BYTES + 3) as f64;
    }
    bytes
}

/// k-means over chunk histograms with coded size as the distance. Tables are built from
/// cluster histograms smoothed with every globally present symbol so any chunk can use
/// any table.
fn cluster(
    chunk_hists: &[Vec<u32>],
    total: &[u64],
    k: usize,
    effort: Effort,
) -> (Vec<FreqTable>, Vec<u8>) {
    let alphabet = total.len();
    // Seed: order chunks by their mean symbol (for exponents, their scale) and cut into k
    // equal groups.
    let mut order: Vec<(f64, usize)> = chunk_hists
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let n: u64 = h.iter().map(|&c| u64::from(c)).sum();
            let s: u64 = h
                .iter()
                .enumerate()
                .map(|(sym, &c)| sym as u64 * u64::from(c))
                .sum();
            (s as f64 / n.max(1) as f64, i)
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut assign = vec![0u8; chunk_hists.len()];
    for (rank, &(_, i)) in order.iter().enumerate() {
        assign[i] = (rank * k / order.len()) as u8;
    }
    let rounds = match effort {
        Effort::Default => 4,
        Effort::Max => 10,
    };
    let mut tables = Vec::new();
    for _ in 0..rounds {
        tables = (0..k)
            .filter_map(|t| {
                let mut acc = vec![0u64; alphabet];
                for (h, _) in chunk_hists
                    .iter()
                    .zip(&assign)
                    .filter(|(_, &a)| usize::from(a) == t)
                {
                    for (a, &c) in acc.iter_mut().zip(h) {
                        *a += u64::from(c);
                    }
                }
                let n: u64 = acc.iter().sum();
                if n == 0 {
                    return None;
                }
                // Smoothing: a present symbol never costs more than about log2(n)+8 bits.
                let smoothed: Vec<u64> = acc
                    .iter()
                    .zip(total)
                    .map(|(&c, &g)| if g > 0 { c * 256 + 1 } else { 0 })
                    .collect();
                FreqTable::from_counts(&saturate(&smoothed))
            })
            .collect();
        let mut changed = false;
        for (h, a) in chunk_hists.iter().zip(assign.iter_mut()) {
            let best = tables
                .iter()
                .enumerate()
                .map(|(t, table)| (table.cost_bits(h).unwrap_or(f64::INFINITY), t))
                .min_by(|x, y| x.0.total_cmp(&y.0))
                .map_or(0, |(_, t)| t as u8);
            changed |= *a != best;
            *a = best;
        }
        if !changed {
            break;
        }
    }
    (tables, assign)
}

/// A parsed, validated field stream ready for chunk-parallel decoding.
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    symbol_bits: u32,
    chunk_len: usize,
    n_symbols: usize,
    body: Body<'a>,
}

#[derive(Debug)]
enum Body<'a> {
    Packed(&'a [u8]),
    Const(u16),
    Rans {
        tables: Vec<DecTable>,
        chunk_tables: &'a [u8],
        offsets: Vec<(usize, usize)>,
        bytes: &'a [u8],
    },
}

/// What a stream stores, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// Bit-packed symbols.
    Packed,
    /// One repeated value.
    Const,
    /// rANS-coded chunks with this many tables.
    Rans(usize),
}

impl<'a> StreamDecoder<'a> {
    /// Parses and validates a stream of `n_symbols` symbols. All sizes are checked against
    /// `bytes` before anything is allocated from them.
    pub fn parse(
        bytes: &'a [u8],
        symbol_bits: u32,
        n_symbols: usize,
        chunk_len: usize,
    ) -> Result<Self, EntropyError> {
        if symbol_bits == 0
            || symbol_bits > MAX_SYMBOL_BITS
            || !chunk_len.is_power_of_two()
            || chunk_len < 8
        {
            return Err(EntropyError::BadStream(format!(
                "unsupported symbol width {symbol_bits} or chunk length {chunk_len}"
            )));
        }
        let mode = *bytes.first().ok_or(EntropyError::Truncated {
            what: "stream header",
            needed: 1,
            have: 0,
        })?;
        let n_chunks = n_symbols.div_ceil(chunk_len);
        let body = match mode {
            MODE_PACKED => {
                let need = 1 + bitpack::packed_len(n_symbols, symbol_bits);
                if bytes.len() != need {
                    return Err(EntropyError::BadStream(format!(
                        "packed stream is {} bytes, expected {need}",
                        bytes.len()
                    )));
                }
                Body::Packed(&bytes[1..])
            }
            MODE_CONST => {
                if bytes.len() != 3 {
                    return Err(EntropyError::BadStream(format!(
                        "constant stream is {} bytes, expected 3",
                        bytes.len()
                    )));
                }
                let v = u16::from_le_bytes([bytes[1], bytes[2]]);
                if u32::from(v) >= 1 << symbol_bits {
                    return Err(EntropyError::BadStream(format!(
                        "constant {v} wider than {symbol_bits} bits"
                    )));
                }
                Body::Const(v)
            }
            MODE_RANS => Self::parse_rans(bytes, symbol_bits, n_symbols, chunk_len, n_chunks)?,
            m => return Err(EntropyError::BadStream(format!("unknown stream mode {m}"))),
        };
        Ok(Self {
            symbol_bits,
            chunk_len,
            n_symbols,
            body,
        })
    }

    fn parse_rans(
        bytes: &'a [u8],
        symbol_bits: u32,
        n_symbols: usize,
        chunk_len: usize,
        n_chunks: usize,
    ) -> Result<Body<'a>, EntropyError> {
        let n_tables = usize::from(*bytes.get(1).ok_or(EntropyError::Truncated {
            what: "stream header",
            needed: 2,
            have: bytes.len(),
        })?);
        if n_tables == 0 {
            return Err(EntropyError::BadStream("rANS stream with no table".into()));
        }
        let mut pos = 2;
        let mut tables = Vec::with_capacity(n_tables);
        for _ in 0..n_tables {
            let (t, used) = FreqTable::parse(&bytes[pos..], symbol_bits)?;
            tables.push(DecTable::new(&t));
            pos += used;
        }
        let index_len = 5 * n_chunks;
        let index = bytes
            .get(pos..pos + index_len)
            .ok_or(EntropyError::Truncated {
                what: "chunk index",
                needed: pos + index_len,
                have: bytes.len(),
            })?;
        let (chunk_tables, lens) = index.split_at(n_chunks);
        if let Some(&bad) = chunk_tables.iter().find(|&&t| usize::from(t) >= n_tables) {
            return Err(EntropyError::BadStream(format!(
                "chunk uses table {bad} of {n_tables}"
            )));
        }
        let mut offsets = Vec::with_capacity(n_chunks);
        let mut at = pos + index_len;
        for (c, len) in lens.chunks_exact(4).enumerate() {
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            // Each symbol costs at most 16 bits of words, plus the states.
            let symbols = chunk_len.min(n_symbols - c * chunk_len);
            let max = STATE_BYTES + 2 * (symbols + LANES);
            if len < STATE_BYTES || len > max {
                return Err(EntropyError::BadStream(format!(
                    "chunk {c} payload of {len} bytes outside {STATE_BYTES}..={max}"
                )));
            }
            at = at.next_multiple_of(4);
            offsets.push((at, len));
            at += len;
        }
        if at != bytes.len() {
            return Err(EntropyError::BadStream(format!(
                "chunk payloads end at byte {at}, stream has {}",
                bytes.len()
            )));
        }
        Ok(Body::Rans {
            tables,
            chunk_tables,
            offsets,
            bytes,
        })
    }

    /// Number of chunks.
    pub fn n_chunks(&self) -> usize {
        self.n_symbols.div_ceil(self.chunk_len)
    }

    /// What the stream stores.
    pub fn kind(&self) -> StreamKind {
        match &self.body {
            Body::Packed(_) => StreamKind::Packed,
            Body::Const(_) => StreamKind::Const,
            Body::Rans { tables, .. } => StreamKind::Rans(tables.len()),
        }
    }

    /// Decodes chunk `c` into `out`, which must be exactly that chunk's length.
    pub fn decode_chunk(&self, c: usize, out: &mut [u16]) -> Result<(), EntropyError> {
        let start = c * self.chunk_len;
        debug_assert_eq!(out.len(), self.chunk_len.min(self.n_symbols - start));
        match &self.body {
            Body::Packed(bytes) => {
                let from = start * self.symbol_bits as usize / 8;
                bitpack::unpack(&bytes[from..], self.symbol_bits, out);
            }
            Body::Const(v) => out.fill(*v),
            Body::Rans {
                tables,
                chunk_tables,
                offsets,
                bytes,
            } => {
                let (at, len) = offsets[c];
                rans::decode_chunk(
                    &bytes[at..at + len],
                    &tables[usize::from(chunk_tables[c])],
                    out,
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(symbols: &[u16], bits: u32) -> Vec<u32> {
        let mut h = vec![0u32; 1 << bits];
        for &s in symbols {
            h[usize::from(s)] += 1;
        }
        h
    }

    fn round_trip(
        symbols: &[u16],
        bits: u32,
        chunk_len: usize,
        effort: Effort,
    ) -> (Vec<u8>, StreamKind) {
        let chunks: Vec<&[u16]> = symbols.chunks(chunk_len).collect();
        let hists: Vec<Vec<u32>> = chunks.iter().map(|c| hist(c, bits)).collect();
        let enc = StreamEncoder::plan(&hists, bits, chunk_len, effort);
        let pieces: Vec<Vec<u8>> = chunks
            .iter()
            .enumerate()
            .map(|(c, s)| enc.encode_chunk(c, s))
            .collect();
        let bytes = enc.assemble(&pieces);
        let dec = StreamDecoder::parse(&bytes, bits, symbols.len(), chunk_len).unwrap();
        let mut back = vec![0u16; symbols.len()];
        for (c, out) in back.chunks_mut(chunk_len).enumerate() {
            dec.decode_chunk(c, out).unwrap();
        }
        assert_eq!(back, symbols);
        let kind = dec.kind();
        (bytes, kind)
    }

    #[test]
    fn modes_are_chosen_by_content() {
        assert_eq!(
            round_trip(&[5; 100], 9, 64, Effort::Default).1,
            StreamKind::Const
        );
        let uniform: Vec<u16> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 20) as u16 & 0x7F)
            .collect();
        assert_eq!(
            round_trip(&uniform, 7, 1024, Effort::Default).1,
            StreamKind::Packed
        );
        assert_eq!(
            round_trip(&[], 9, 64, Effort::Default).1,
            StreamKind::Packed
        );
        let wide: Vec<u16> = (0..2000u16).map(|i| i % 300).collect();
        assert_eq!(
            round_trip(&wide, 9, 256, Effort::Default).1,
            StreamKind::Packed
        );
    }

    #[test]
    fn drifting_statistics_use_several_tables() {
        // First half skewed to low symbols, second half to high ones.
        let mut symbols = Vec::new();
        for c in 0..64u32 {
            for i in 0..1024u32 {
                let r = (i.wrapping_mul(2654435761) >> 28) as u16;
                symbols.push(if c < 32 { r % 3 } else { 60 + r % 3 });
            }
        }
        let (bytes, kind) = round_trip(&symbols, 9, 1024, Effort::Default);
        assert!(matches!(kind, StreamKind::Rans(t) if t >= 2), "{kind:?}");
        let (_, one) = round_trip(&symbols, 9, 1 << 16, Effort::Default);
        assert_eq!(one, StreamKind::Rans(1));
        assert!(bytes.len() < symbols.len() * 2 / 8 + 64 * 80);
    }

    #[test]
    fn hostile_headers_are_refused() {
        let symbols: Vec<u16> = (0..3000u32).map(|i| (i % 7) as u16).collect();
        let (bytes, _) = round_trip(&symbols, 9, 1024, Effort::Default);
        assert!(StreamDecoder::parse(&bytes[..bytes.len() - 1], 9, 3000, 1024).is_err());
        assert!(StreamDecoder::parse(&bytes, 9, 4097, 1024).is_err());
        assert!(StreamDecoder::parse(&bytes, 9, 3000, 2048).is_err());
        let mut bad_mode = bytes.clone();
        bad_mode[0] = 9;
        assert!(StreamDecoder::parse(&bad_mode, 9, 3000, 1024).is_err());
        let mut no_tables = bytes.clone();
        no_tables[1] = 0;
        assert!(StreamDecoder::parse(&no_tables, 9, 3000, 1024).is_err());
        assert!(StreamDecoder::parse(&[], 9, 0, 1024).is_err());
        assert!(StreamDecoder::parse(&[MODE_CONST, 0, 2], 9, 10, 1024).is_err());
    }
}
