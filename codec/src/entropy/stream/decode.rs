//! The stream decoder: header parsing and checks, then chunks decoded independently.

use super::{
    BytesDecoded, MIN_BLOCK_LOG2, MODE_CONST, MODE_PACKED, MODE_RANS, MODE_RANS_COMPACT,
    MODE_RANS_RAW, MODE_RANS_RUN_IDS,
};
use crate::entropy::bitpack;
use crate::entropy::model::{DecTable, FreqTable, MAX_SYMBOL_BITS};
use crate::entropy::rans::{self, LANES, STATE_BYTES};
use crate::entropy::{table_code, EntropyError};

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
        /// The tables as parsed, for [`StreamDecoder::layout`].
        freq_tables: Vec<FreqTable>,
        /// One table id per block: in the stream (modes 2, 3) or decoded from its runs
        /// (mode 4).
        block_tables: std::borrow::Cow<'a, [u8]>,
        block_log2: u8,
        /// The id of raw blocks (the table count) in mode 5 streams.
        raw_id: Option<u8>,
        offsets: Vec<(usize, usize)>,
        bytes: &'a [u8],
    },
}

/// A field stream's layout as the CPU decoder's parser checked it: what a decoder outside
/// this crate (the GPU kernel) needs to find every chunk, so that it uses the same parser
/// and checks as the CPU decoder instead of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamLayout {
    /// Bit-packed symbols after the mode byte.
    Packed,
    /// One value repeated.
    Const(u16),
    /// rANS-coded chunks.
    Rans {
        /// The frequency tables.
        tables: Vec<FreqTable>,
        /// Block length exponent.
        block_log2: u8,
        /// The table id of every block (stored as bytes in modes 2 and 3, run-coded in
        /// modes 4 and 5: a decoder outside this crate uploads these, not the stream's
        /// bytes). In a mode 5 stream an id equal to `tables.len()` marks a raw block,
        /// and the payloads of chunks with raw blocks are laid out as FORMAT.md §5.5.1
        /// says (the raw area after the states; an all-raw chunk is the raw area alone).
        block_ids: Vec<u8>,
        /// Offset and length in the stream of each chunk's payload.
        payloads: Vec<(usize, usize)>,
    },
}

impl StreamLayout {
    /// Parses and checks a stream of `n_symbols` symbols of `symbol_bits` bits in chunks
    /// of `chunk_len` (FORMAT.md §5.5, §6 check 10), exactly as the decoder does.
    pub fn parse(
        bytes: &[u8],
        symbol_bits: u32,
        n_symbols: usize,
        chunk_len: usize,
    ) -> Result<Self, EntropyError> {
        let decoder = StreamDecoder::parse(bytes, symbol_bits, n_symbols, chunk_len)?;
        decoder.check_padding()?;
        Ok(decoder.layout())
    }
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

/// Whether every byte is zero (padding).
fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
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
            || chunk_len < LANES
        {
            return Err(EntropyError::StreamParams {
                bits: symbol_bits,
                chunk_len,
            });
        }
        let mode = *bytes.first().ok_or(EntropyError::Truncated {
            what: "stream header",
            needed: 1,
            have: 0,
        })?;
        let body = match mode {
            MODE_PACKED => {
                let need = bitpack::checked_packed_len(n_symbols, symbol_bits)
                    .and_then(|n| n.checked_add(1))
                    .ok_or(EntropyError::PackedOverflow {
                        symbols: n_symbols,
                        bits: symbol_bits,
                    })?;
                if bytes.len() != need {
                    return Err(EntropyError::StreamSize {
                        kind: "packed",
                        found: bytes.len(),
                        expected: need,
                    });
                }
                Body::Packed(&bytes[1..])
            }
            MODE_CONST => {
                if bytes.len() != 3 {
                    return Err(EntropyError::StreamSize {
                        kind: "constant",
                        found: bytes.len(),
                        expected: 3,
                    });
                }
                let v = u16::from_le_bytes([bytes[1], bytes[2]]);
                if u32::from(v) >= 1 << symbol_bits {
                    return Err(EntropyError::ConstWidth {
                        value: v,
                        bits: symbol_bits,
                    });
                }
                Body::Const(v)
            }
            MODE_RANS | MODE_RANS_COMPACT | MODE_RANS_RUN_IDS | MODE_RANS_RAW => {
                Self::parse_rans(bytes, symbol_bits, n_symbols, chunk_len)?
            }
            mode => return Err(EntropyError::UnknownMode { mode }),
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
    ) -> Result<Body<'a>, EntropyError> {
        let header = bytes.get(..3).ok_or(EntropyError::Truncated {
            what: "stream header",
            needed: 3,
            have: bytes.len(),
        })?;
        let (n_tables, block_log2) = (usize::from(header[1]), header[2]);
        if n_tables == 0 {
            return Err(EntropyError::NoTables);
        }
        let chunk_log2 = chunk_len.trailing_zeros() as u8;
        if !(MIN_BLOCK_LOG2..=chunk_log2).contains(&block_log2) {
            return Err(EntropyError::BlockLog2 {
                found: block_log2,
                min: MIN_BLOCK_LOG2,
                max: chunk_log2,
            });
        }
        let mut pos = 3;
        let n_blocks = n_symbols.div_ceil(1 << block_log2);
        let mut run_ids = None;
        let n_chunks = n_symbols.div_ceil(chunk_len);
        // Every chunk takes a 4-byte length and at least its 32 states: a stream too short
        // for its chunks is refused before its run-coded ids (up to `chunk_len / 32` per
        // chunk) are expanded.
        let run_coded = matches!(header[0], MODE_RANS_RUN_IDS | MODE_RANS_RAW);
        let raw_mode = header[0] == MODE_RANS_RAW;
        // (In mode 5 an all-raw chunk has no states: it takes its raw area, at least
        // `raw_area_len(m, bits)` bytes for its `m` symbols, where that is shorter.)
        let least_chunk = |m: usize| {
            4 + if raw_mode {
                STATE_BYTES.min(rans::raw_area_len(m, symbol_bits))
            } else {
                STATE_BYTES
            }
        };
        let full_chunks = n_symbols / chunk_len;
        let least = full_chunks
            .saturating_mul(least_chunk(chunk_len))
            .saturating_add(match n_symbols % chunk_len {
                0 => 0,
                m => least_chunk(m),
            })
            .saturating_add(3);
        if run_coded && bytes.len() < least {
            return Err(EntropyError::Truncated {
                what: "block and chunk index",
                needed: least,
                have: bytes.len(),
            });
        }
        let freq_tables = if run_coded {
            // Mode 5's ids have one value more than there are tables: raw.
            let n_ids = n_tables + usize::from(raw_mode);
            let (tables, ids, used) = table_code::read_tables_and_ids(
                &bytes[pos..],
                n_tables,
                symbol_bits,
                n_blocks,
                n_ids,
            )?;
            pos += used;
            run_ids = Some(ids);
            tables
        } else if header[0] == MODE_RANS_COMPACT {
            let (tables, used) = table_code::read_tables(&bytes[pos..], n_tables, symbol_bits)?;
            pos += used;
            tables
        } else {
            let mut tables = Vec::with_capacity(n_tables);
            for _ in 0..n_tables {
                let (t, used) = FreqTable::parse(&bytes[pos..], symbol_bits)?;
                tables.push(t);
                pos += used;
            }
            tables
        };
        let tables = freq_tables.iter().map(DecTable::new).collect();
        let stored_ids = if run_ids.is_some() { 0 } else { n_blocks };
        // Both counts come from a size the file claims: check the sum before slicing.
        let index_end = n_chunks
            .checked_mul(4)
            .and_then(|c| c.checked_add(stored_ids))
            .and_then(|i| i.checked_add(pos))
            .unwrap_or(usize::MAX);
        let index = bytes.get(pos..index_end).ok_or(EntropyError::Truncated {
            what: "block and chunk index",
            needed: index_end,
            have: bytes.len(),
        })?;
        let index_len = index_end - pos;
        let (stored, lens) = index.split_at(stored_ids);
        let block_tables = match run_ids {
            Some(ids) => std::borrow::Cow::Owned(ids),
            None => std::borrow::Cow::Borrowed(stored),
        };
        let n_ids = n_tables + usize::from(raw_mode);
        if let Some(&bad) = block_tables.iter().find(|&&t| usize::from(t) >= n_ids) {
            return Err(EntropyError::TableId {
                table: bad,
                tables: n_ids,
            });
        }
        let raw_id = raw_mode.then_some(n_tables as u8);
        let blocks_per_chunk = chunk_len >> block_log2;
        let mut offsets = Vec::with_capacity(n_chunks);
        let mut at = pos + index_len;
        for (c, len) in lens.chunks_exact(4).enumerate() {
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            // A symbol costs at most one 16-bit word, plus the states.
            let symbols = chunk_len.min(n_symbols - c * chunk_len);
            // Mode 5: the chunk's raw area comes first, and an all-raw chunk is only that.
            let raw_count = match raw_id {
                Some(raw) => {
                    let ids = &block_tables[c * blocks_per_chunk..];
                    let flags = ids.iter().take(symbols.div_ceil(1 << block_log2));
                    let flags: Vec<bool> = flags.map(|&t| t == raw).collect();
                    rans::raw_symbols(&flags, 1 << block_log2, symbols)
                }
                None => 0,
            };
            let area = rans::raw_area_len(raw_count, symbol_bits);
            let (min, max) = if raw_count == symbols {
                (area, area)
            } else {
                (
                    STATE_BYTES + area,
                    STATE_BYTES + area + 2 * (symbols - raw_count),
                )
            };
            // (Modes 2–4 leave an odd length to the chunk's decode, as before 1.4.)
            if len < min || len > max || (raw_id.is_some() && !(len - min).is_multiple_of(2)) {
                return Err(EntropyError::ChunkLength {
                    chunk: c,
                    len,
                    min,
                    max,
                });
            }
            // The gap before a payload is zero padding (FORMAT.md §5.5), refused if it is
            // anything else so that no byte of a stream is left unchecked. The first one,
            // after the header, is checked here; each later one when the chunk before it
            // is decoded ([`Self::rans_chunk`]), from that payload's last page: a loader can
            // then decode a stream while the disk is still reading it, instead of waiting
            // here for every page of the stream.
            let aligned = at.next_multiple_of(4);
            if c == 0 && !is_zero(bytes.get(at..aligned).unwrap_or(&[])) {
                return Err(EntropyError::ChunkPadding { chunk: c, at });
            }
            at = aligned;
            offsets.push((at, len));
            at += len;
        }
        if at != bytes.len() {
            return Err(EntropyError::StreamEnd {
                end: at,
                len: bytes.len(),
            });
        }
        Ok(Body::Rans {
            tables,
            freq_tables,
            block_tables,
            block_log2,
            raw_id,
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

    /// The stream's layout, for decoders outside this crate.
    pub fn layout(&self) -> StreamLayout {
        match &self.body {
            Body::Packed(_) => StreamLayout::Packed,
            Body::Const(v) => StreamLayout::Const(*v),
            Body::Rans {
                freq_tables,
                block_tables,
                block_log2,
                offsets,
                ..
            } => StreamLayout::Rans {
                tables: freq_tables.clone(),
                block_log2: *block_log2,
                block_ids: block_tables.to_vec(),
                payloads: offsets.clone(),
            },
        }
    }

    /// The byte range of the stream that holds chunks `..c` (`c` capped at the chunk
    /// count) and nothing that a later chunk is decoded from: the payloads of coded
    /// chunks, the symbols of a packed stream; empty for a constant stream and for
    /// `c == 0`. Headers, tables and the chunk index before the first payload are not in
    /// it. A loader drops these bytes from memory once the chunks are decoded.
    pub fn chunks_payload(&self, c: usize) -> std::ops::Range<usize> {
        let c = c.min(self.n_chunks());
        match &self.body {
            Body::Packed(bytes) => {
                // The mode byte comes first; a chunk holds a whole number of bytes
                // (`chunk_len` is a power of two of at least `LANES`), and the last one
                // reaches the end.
                let end = if c == self.n_chunks() {
                    bytes.len()
                } else {
                    c * self.chunk_len * self.symbol_bits as usize / 8
                };
                1..1 + end
            }
            Body::Const(_) => 0..0,
            Body::Rans { offsets, .. } => {
                let Some(&(first, _)) = offsets.first() else {
                    return 0..0;
                };
                let end = match (offsets.get(c), c.checked_sub(1).map(|p| offsets[p])) {
                    (Some(&(at, _)), _) => at,
                    (None, Some((at, len))) => at + len,
                    (None, None) => first,
                };
                first..end
            }
        }
    }

    /// The packed bytes of chunk `c` (`len` symbols) when the stream is bit-packed, so a
    /// caller can fuse unpacking into its own pass.
    pub fn packed_chunk(&self, c: usize, len: usize) -> Option<&'a [u8]> {
        match &self.body {
            Body::Packed(bytes) => {
                let from = c * self.chunk_len * self.symbol_bits as usize / 8;
                bytes.get(from..from + bitpack::packed_len(len, self.symbol_bits))
            }
            _ => None,
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
            Body::Rans { block_log2, .. } => {
                let (payload, tables, raw) = self.rans_chunk(c, out.len())?;
                if raw.is_empty() {
                    rans::decode_chunk(payload, &tables, 1 << block_log2, out)?;
                } else {
                    let bits = self.symbol_bits;
                    rans::decode_chunk_raw(
                        payload,
                        &tables,
                        &raw,
                        bits,
                        1 << block_log2,
                        out,
                        None,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Decodes chunks `c` and `c + 1` into `a` and `b` (each exactly its chunk's length);
    /// coded chunks are decoded interleaved where that is faster than one after the other
    /// (see `rans::decode_chunk_pair`).
    pub fn decode_chunk_pair(
        &self,
        c: usize,
        a: &mut [u16],
        b: &mut [u16],
    ) -> Result<(), EntropyError> {
        match &self.body {
            Body::Rans { block_log2, .. } => {
                let (payload_a, tables_a, raw_a) = self.rans_chunk(c, a.len())?;
                let (payload_b, tables_b, raw_b) = self.rans_chunk(c + 1, b.len())?;
                if !raw_a.is_empty() || !raw_b.is_empty() {
                    // Chunks with raw blocks are decoded one after the other.
                    self.decode_chunk(c, a)?;
                    return self.decode_chunk(c + 1, b);
                }
                rans::decode_chunk_pair(
                    [payload_a, payload_b],
                    [&tables_a, &tables_b],
                    1 << block_log2,
                    [a, b],
                )
            }
            _ => {
                self.decode_chunk(c, a)?;
                self.decode_chunk(c + 1, b)
            }
        }
    }

    /// Decodes chunk `c` into `a` and, when `b` is not empty, chunk `c + 1` into `b` (each
    /// exactly its chunk's length), writing each symbol as one byte, when the stream is
    /// rANS-coded with symbols of at most 8 bits (FP8 fields: the bytes are the tensor's);
    /// `None`, with nothing written, for any other stream.
    pub fn decode_chunks_to_bytes(
        &self,
        c: usize,
        a: &mut [u8],
        b: &mut [u8],
    ) -> Option<Result<(), EntropyError>> {
        self.decode_chunks_to_bytes_with(c, a, b, None, None)
            .map(|result| result.map(|_| ()))
    }

    /// [`Self::decode_chunks_to_bytes`], but where a chunk of 8-bit symbols has raw
    /// blocks (mode 5) their runs are left in the payload: listed in `spans[0]` (chunk
    /// `c`) and `spans[1]` (chunk `c + 1`) for the caller to read in place, their part of
    /// `a` / `b` not written. On success, the two chunks' payloads, which the spans'
    /// offsets index (the second empty when `b` is), and how many leading symbols of
    /// each chunk were merged by `merges` instead of written (see
    /// [`rans::F16Merge`]; merged only where neither chunk has raw blocks).
    pub(crate) fn decode_chunks_to_bytes_in_place(
        &self,
        c: usize,
        a: &mut [u8],
        b: &mut [u8],
        spans: &mut [Vec<rans::RawSpan>; 2],
        merges: Option<[rans::F16Merge; 2]>,
    ) -> Option<Result<BytesDecoded<'a>, EntropyError>> {
        self.decode_chunks_to_bytes_with(c, a, b, Some(spans), merges)
    }

    /// The two above: raw runs copied out without `spans`, listed there with.
    fn decode_chunks_to_bytes_with(
        &self,
        c: usize,
        a: &mut [u8],
        b: &mut [u8],
        spans: Option<&mut [Vec<rans::RawSpan>; 2]>,
        merges: Option<[rans::F16Merge; 2]>,
    ) -> Option<Result<BytesDecoded<'a>, EntropyError>> {
        let Body::Rans { block_log2, .. } = &self.body else {
            return None;
        };
        if self.symbol_bits > 8 {
            return None;
        }
        let block_len = 1 << block_log2;
        let bits = self.symbol_bits;
        let (payload_a, tables_a, raw_a) = match self.rans_chunk(c, a.len()) {
            Ok(chunk) => chunk,
            Err(e) => return Some(Err(e)),
        };
        let (spans_a, spans_b) = match spans {
            Some([x, y]) => (Some(x), Some(y)),
            None => (None, None),
        };
        // A chunk's own merge is used only where it has no raw blocks (nor its pair).
        let one = |payload, tables: &[&DecTable], raw: &[bool], out: &mut [u8], s, merge| {
            if raw.is_empty() {
                rans::decode_chunk_as(payload, tables, block_len, out, merge)
            } else {
                rans::decode_chunk_raw(payload, tables, raw, bits, block_len, out, s).map(|()| 0)
            }
        };
        if b.is_empty() {
            let merge = merges.map(|m| m[0]);
            return Some(
                one(payload_a, &tables_a, &raw_a, a, spans_a, merge)
                    .map(|merged| ([payload_a, &[]], [merged, 0])),
            );
        }
        let (payload_b, tables_b, raw_b) = match self.rans_chunk(c + 1, b.len()) {
            Ok(chunk) => chunk,
            Err(e) => return Some(Err(e)),
        };
        let result = if !raw_a.is_empty() || !raw_b.is_empty() {
            // Chunks with raw blocks are decoded one after the other.
            one(payload_a, &tables_a, &raw_a, a, spans_a, None)
                .and_then(|_| one(payload_b, &tables_b, &raw_b, b, spans_b, None).map(|_| [0; 2]))
        } else {
            rans::decode_chunk_pair_as(
                [payload_a, payload_b],
                [&tables_a, &tables_b],
                1 << block_log2,
                [a, b],
                merges,
            )
        };
        Some(result.map(|merged| ([payload_a, payload_b], merged)))
    }

    /// Checks every zero padding gap between the chunk payloads of a rANS-coded stream
    /// (parsing checks only the first; decoding a chunk checks the one after it), for
    /// decoders that take the payloads elsewhere ([`StreamLayout::parse`]).
    fn check_padding(&self) -> Result<(), EntropyError> {
        if let Body::Rans { offsets, bytes, .. } = &self.body {
            for c in 0..offsets.len() {
                Self::check_padding_after(bytes, offsets, c)?;
            }
        }
        Ok(())
    }

    /// The zero padding between payload `c` and the next one (none after the last).
    fn check_padding_after(
        bytes: &[u8],
        offsets: &[(usize, usize)],
        c: usize,
    ) -> Result<(), EntropyError> {
        if let (Some(&(at, len)), Some(&(next, _))) = (offsets.get(c), offsets.get(c + 1)) {
            // Parsing placed every payload inside the stream, each after the one before.
            if !is_zero(&bytes[at + len..next]) {
                return Err(EntropyError::ChunkPadding {
                    chunk: c + 1,
                    at: at + len,
                });
            }
        }
        Ok(())
    }

    /// The payload of coded chunk `c` (of `len` symbols), the table of each of its blocks
    /// and, where any of them is raw (mode 5), which are (empty otherwise; a raw block's
    /// table is then the first, unused), once the padding after the payload is checked
    /// (it lies on the payload's last page, or is empty).
    #[allow(clippy::type_complexity)]
    fn rans_chunk(
        &self,
        c: usize,
        len: usize,
    ) -> Result<(&'a [u8], Vec<&DecTable>, Vec<bool>), EntropyError> {
        let Body::Rans {
            tables,
            block_tables,
            block_log2,
            raw_id,
            offsets,
            bytes,
            ..
        } = &self.body
        else {
            unreachable!("rans_chunk on a stream that is not rANS-coded")
        };
        Self::check_padding_after(bytes, offsets, c)?;
        let (at, size) = offsets[c];
        let first = (c * self.chunk_len) >> block_log2;
        let count = len.div_ceil(1 << block_log2);
        let ids = &block_tables[first..first + count];
        let raw = match raw_id {
            Some(r) if ids.contains(r) => ids.iter().map(|t| t == r).collect(),
            _ => Vec::new(),
        };
        let chunk_tables = ids
            .iter()
            .map(|&t| tables.get(usize::from(t)).unwrap_or(&tables[0]))
            .collect();
        Ok((&bytes[at..at + size], chunk_tables, raw))
    }
}
