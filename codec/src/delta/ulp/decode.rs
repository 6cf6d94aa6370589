//! The decoder's entry points: parsing a payload's flags, tables and chunk directory
//! ([`Parsed`]) and decoding it whole or a run of its chunks.

use rayon::prelude::*;

use super::plan::group_map;
use super::stream::{decode_stream, meanings, Contexts, SymbolMeaning};
use super::wide::decode_stream_wide;
use super::wire::{read_table, read_varint};
use super::{BaseOut, Layout};
use super::{FLAG_CHUNKED, FLAG_PREV_ZERO, FLAG_WIDE, MAX_CHUNK_ELEMS, MAX_GROUPS};
use crate::cpu::SimdLevel;
use crate::delta::coder::{SlotTables, LANES, WIDE_LANES};
use crate::delta::{Base, DeltaError, DeltaMethod};
use crate::dtype::Dtype;
use crate::entropy::model::FreqTable;

/// Decodes a ULP payload (after the method byte) into `out` on the code path `level`
/// (scalar where the CPU lacks it); every path gives the same result.
pub(crate) fn decode_on(
    level: SimdLevel,
    dtype: &Dtype,
    base: Base<'_>,
    payload: &[u8],
    out: &mut [u8],
) -> Result<(), DeltaError> {
    let layout = Layout::of(dtype).ok_or_else(|| DeltaError::Unsupported {
        method: DeltaMethod::Ulp.name(),
        dtype: dtype.to_string(),
    })?;
    let level = if level.is_supported() {
        level
    } else {
        SimdLevel::Scalar
    };
    match layout.width() {
        1 => decode_w::<1>(level, layout, base, payload, out),
        2 => decode_w::<2>(level, layout, base, payload, out),
        4 => decode_w::<4>(level, layout, base, payload, out),
        _ => decode_w::<8>(level, layout, base, payload, out),
    }
}

/// A ULP payload's flags, tables and chunk directory, parsed once for an output of a known
/// length: [`decode_w`] decodes it whole, [`Parsed::decode_range`] a run of its chunks.
pub(crate) struct Parsed<'a> {
    layout: Layout,
    prev_zero: bool,
    /// Layout 3 (32 lanes) rather than 2; only with `chunked`.
    wide: bool,
    /// Layouts 2 and 3 (independent chunks); else layout 1 (one stream).
    chunked: bool,
    group_of: Vec<u8>,
    dec: SlotTables,
    meanings: Box<[SymbolMeaning; 256]>,
    /// XOR of the bytes after the last whole element.
    tail_xor: &'a [u8],
    /// Layout 1: the one stream; chunked layouts: empty.
    stream: &'a [u8],
    /// Elements per chunk (chunked layouts; 0 for layout 1).
    chunk: usize,
    /// Each chunk's stream (chunked layouts).
    pieces: Vec<&'a [u8]>,
    /// Output length in bytes.
    len: usize,
}

/// Parses a ULP payload (after the method byte) for an output of `len` bytes.
pub(crate) fn parse(layout: Layout, payload: &[u8], len: usize) -> Result<Parsed<'_>, DeltaError> {
    let alphabet = layout.alphabet();
    let mut rest = payload;
    let (&flags, after_flags) = rest
        .split_first()
        .ok_or_else(|| DeltaError::Corrupt("ulp: truncated flags".into()))?;
    if flags & !(FLAG_PREV_ZERO | FLAG_CHUNKED | FLAG_WIDE) != 0 {
        return Err(DeltaError::Corrupt(format!(
            "ulp: unknown flags {flags:#04x}"
        )));
    }
    let wide = flags & FLAG_WIDE != 0;
    if wide && flags & FLAG_CHUNKED == 0 {
        return Err(DeltaError::Corrupt(
            "ulp: 32-lane flag without the chunked flag".into(),
        ));
    }
    rest = after_flags;
    let prev_zero = flags & FLAG_PREV_ZERO != 0;
    let k = if prev_zero { 2 } else { 1 };
    let groups = read_varint(&mut rest, "group count", MAX_GROUPS as u64)? as usize;
    if groups == 0 {
        return Err(DeltaError::Corrupt("ulp: no exponent group".into()));
    }
    let mut group_last = Vec::with_capacity(groups);
    for g in 0..groups {
        let last = read_varint(&mut rest, "group end", layout.exponents() as u64 - 1)? as usize;
        if group_last.last().is_some_and(|&prev| prev >= last) {
            return Err(DeltaError::Corrupt(format!(
                "ulp: group {g} ends at exponent {last}, not after the previous group"
            )));
        }
        group_last.push(last);
    }
    if group_last.last() != Some(&(layout.exponents() - 1)) {
        return Err(DeltaError::Corrupt(format!(
            "ulp: last group ends at exponent {:?}, expected {}",
            group_last.last(),
            layout.exponents() - 1
        )));
    }
    let group_of = group_map(&group_last, layout.exponents());
    let mut tables = Vec::with_capacity(groups * k);
    for _ in 0..groups * k {
        // An unused context gets a one-symbol table: reachable only with a wrong base,
        // which the caller's checksum catches.
        tables.push(
            read_table(&mut rest, alphabet)?
                .unwrap_or_else(|| FreqTable::from_counts(&[1]).expect("one symbol")),
        );
    }
    let dec = SlotTables::new(&tables);

    let w = layout.width();
    let n = len / w;
    let tail_len = len - n * w;
    if rest.len() < tail_len {
        return Err(DeltaError::Corrupt(format!(
            "ulp: {tail_len} tail bytes, {} left",
            rest.len()
        )));
    }
    let (tail_xor, after) = rest.split_at(tail_len);
    let mut parsed = Parsed {
        layout,
        prev_zero,
        wide,
        chunked: flags & FLAG_CHUNKED != 0,
        group_of,
        dec,
        meanings: meanings(layout),
        tail_xor,
        stream: &[],
        chunk: 0,
        pieces: Vec::new(),
        len,
    };
    if !parsed.chunked {
        parsed.stream = after;
        return Ok(parsed);
    }
    let mut rest = after;
    let chunk = read_varint(&mut rest, "chunk length", MAX_CHUNK_ELEMS)? as usize;
    let lanes = if wide { WIDE_LANES } else { LANES };
    if chunk == 0 || !chunk.is_multiple_of(lanes) {
        return Err(DeltaError::Corrupt(format!(
            "ulp: chunk length {chunk} is not a positive multiple of {lanes}"
        )));
    }
    // At most n / LANES + 1 chunks: bounded by the base, which the caller holds.
    let count = n.div_ceil(chunk);
    let mut lens = Vec::with_capacity(count);
    let mut claimed = 0u64;
    for _ in 0..count {
        let left = rest.len() as u64;
        let len = read_varint(&mut rest, "chunk size", left)?;
        claimed += len;
        lens.push(len as usize);
    }
    if claimed != rest.len() as u64 {
        return Err(DeltaError::Corrupt(format!(
            "ulp: {count} chunks claim {claimed} bytes, {} follow",
            rest.len()
        )));
    }
    parsed.pieces = lens
        .into_iter()
        .map(|len| {
            let (piece, after) = rest.split_at(len);
            rest = after;
            piece
        })
        .collect();
    parsed.chunk = chunk;
    Ok(parsed)
}

impl Parsed<'_> {
    /// Bytes of the coded elements (the output less its tail of XORed bytes).
    fn body(&self) -> usize {
        self.len / self.layout.width() * self.layout.width()
    }

    fn contexts(&self) -> Contexts<'_> {
        Contexts::new(
            self.layout,
            &self.group_of,
            self.prev_zero,
            &self.dec,
            &self.meanings,
        )
    }

    /// Bytes per chunk of a chunked layout (`None` for layout 1, whose one stream decodes
    /// only whole).
    pub(crate) fn chunk_bytes(&self) -> Option<usize> {
        self.chunked.then(|| self.chunk * self.layout.width())
    }

    /// Bytes per element.
    pub(crate) fn width(&self) -> usize {
        self.layout.width()
    }

    /// The output length the payload was parsed for.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Decodes the bytes `offset..offset + out.len()` of the output from the same bytes
    /// of the base, on this thread, on path `level`: `offset` a multiple of
    /// [`Self::chunk_bytes`], `out` whole chunks or reaching the end of the output.
    pub(crate) fn decode_range<const W: usize>(
        &self,
        level: SimdLevel,
        offset: usize,
        base: &[u8],
        out: &mut [u8],
    ) -> Result<(), DeltaError> {
        if base.len() != out.len() {
            return Err(DeltaError::LengthMismatch {
                base: base.len(),
                target: out.len(),
            });
        }
        self.decode_range_io::<W>(level, offset, BaseOut::separate(base, out))
    }

    /// [`Self::decode_range`] with the base's bytes in `buf`, overwritten with the
    /// output's (on an error, `buf` holds some of each).
    pub(crate) fn decode_range_in_place<const W: usize>(
        &self,
        level: SimdLevel,
        offset: usize,
        buf: &mut [u8],
    ) -> Result<(), DeltaError> {
        self.decode_range_io::<W>(level, offset, BaseOut::in_place(buf))
    }

    /// [`Self::decode_range`] from and to `io`.
    fn decode_range_io<const W: usize>(
        &self,
        level: SimdLevel,
        offset: usize,
        mut io: BaseOut<'_>,
    ) -> Result<(), DeltaError> {
        let len = io.len();
        let range_err = || DeltaError::Range {
            offset,
            len,
            total: self.len,
        };
        let unit = self.chunk_bytes().ok_or_else(range_err)?;
        let end = offset.checked_add(len).ok_or_else(range_err)?;
        if !offset.is_multiple_of(unit)
            || end > self.len
            || (end != self.len && !len.is_multiple_of(unit))
        {
            return Err(range_err());
        }
        let level = if level.is_supported() {
            level
        } else {
            SimdLevel::Scalar
        };
        let body = self.body();
        let coded = end.min(body).saturating_sub(offset);
        let ctx = self.contexts();
        let first = offset / unit;
        for k in 0..coded.div_ceil(unit) {
            let i = first + k;
            let bytes = self.pieces[i];
            let mut piece = io.sub(k * unit, unit.min(coded - k * unit));
            let decoded = if self.wide {
                decode_stream_wide::<W>(level, &ctx, piece, bytes)
            } else {
                // Layout 2 (older stores): in place on a copy of the chunk's base.
                piece.with_slices(|b, o| decode_stream::<W>(&ctx, b, o, bytes))
            };
            decoded.map_err(|e| chunk_err(i, e))?;
        }
        for j in body.max(offset)..end {
            let x = io.load::<1>(j - offset) ^ u64::from(self.tail_xor[j - body]);
            io.store::<1>(j - offset, x);
        }
        Ok(())
    }
}

/// An error of chunk `i`, named so.
fn chunk_err(i: usize, e: DeltaError) -> DeltaError {
    match e {
        DeltaError::Corrupt(m) => DeltaError::Corrupt(format!("chunk {i}: {m}")),
        e => e,
    }
}

fn decode_w<const W: usize>(
    level: SimdLevel,
    layout: Layout,
    base: Base<'_>,
    payload: &[u8],
    out: &mut [u8],
) -> Result<(), DeltaError> {
    let p = parse(layout, payload, out.len())?;
    let body = p.body();
    if let Base::Separate(base) = base {
        out[body..].copy_from_slice(&base[body..]);
    }
    for (o, x) in out[body..].iter_mut().zip(p.tail_xor) {
        *o ^= x;
    }
    let ctx = p.contexts();
    let out = &mut out[..body];
    if !p.chunked {
        // Layout 1 (older files only): one stream, so in place takes a copy of it all.
        let copy;
        let base = match base {
            Base::Separate(base) => &base[..body],
            Base::InOut => {
                copy = out.to_vec();
                &copy[..]
            }
        };
        return decode_stream::<W>(&ctx, base, out, p.stream);
    }
    let (chunk, wide) = (p.chunk, p.wide);
    out.par_chunks_mut(chunk * W)
        .zip(&p.pieces)
        .enumerate()
        // In place, a layout-3 chunk decodes over its base; a layout-2 chunk's base is
        // copied to a buffer of the thread's first (one chunk: in the cache, unlike a
        // second tensor-sized buffer).
        .map_init(Vec::new, |scratch, (i, (o, bytes))| {
            let decoded = match base {
                Base::Separate(base) => {
                    let b = &base[i * chunk * W..][..o.len()];
                    if wide {
                        decode_stream_wide::<W>(level, &ctx, BaseOut::separate(b, o), bytes)
                    } else {
                        decode_stream::<W>(&ctx, b, o, bytes)
                    }
                }
                Base::InOut if wide => {
                    decode_stream_wide::<W>(level, &ctx, BaseOut::in_place(o), bytes)
                }
                Base::InOut => {
                    scratch.clear();
                    scratch.extend_from_slice(o);
                    decode_stream::<W>(&ctx, scratch, o, bytes)
                }
            };
            decoded.map_err(|e| chunk_err(i, e)).err()
        })
        // The first damaged chunk in file order is the one reported, whichever thread
        // fails first: the same input always gives the same error (the fuzz target
        // `delta_decode` found two damaged chunks reported by turns).
        .find_map_first(|e| e)
        .map_or(Ok(()), Err)
}
