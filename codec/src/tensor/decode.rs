//! The tensor decoder: streams parsed, chunk pairs decoded and merged into the output,
//! whole or in pieces, on rayon or in the caller's thread.

use rayon::prelude::*;

use super::buffers::{grow, FieldBuffers};
use super::prefault::prefault_task;
use super::{entropy_bits, Codec, TensorError, ZstdError, CHUNK_LOG2_RANGE};
use crate::entropy::rans::{F16Merge, RawSpan};
use crate::entropy::stream::{StreamDecoder, StreamKind};
use crate::float_split::{ByteField, Layout, MAX_FIELDS};

/// Largest piece size of [`TensorDecoder::decode_overlapped`].
const OVERLAP_PIECE_BYTES: usize = 8 << 20;
/// Output bytes per merge step when a one-thread decode hands the output to its caller
/// step by step: half of a 32 KiB L1 data cache, so that the caller (the checksum) reads
/// each step from L1 instead of a whole chunk pair (2 MiB of F32) from L3.
pub(super) const SINK_STEP_BYTES: usize = 16 << 10;

/// Receives decoded pieces of a tensor with their byte ranges (see
/// [`TensorDecoder::decode_pieces`]).
pub type PieceSink<'s> = dyn FnMut(&[u8], std::ops::Range<usize>) -> Result<(), TensorError> + 's;

/// A tensor's streams, parsed and checked, ready to decode any range of chunks.
#[derive(Debug)]
pub struct TensorDecoder<'a> {
    codec: Codec,
    out_len: usize,
    chunk_log2: u8,
    body: DecoderBody<'a>,
}

#[derive(Debug)]
enum DecoderBody<'a> {
    Stored(&'a [u8]),
    Zstd(&'a [u8]),
    Split(Layout, Vec<StreamDecoder<'a>>),
}

impl<'a> TensorDecoder<'a> {
    /// Parses the streams of a tensor whose original size is `out_len` bytes.
    pub fn new(
        codec: Codec,
        chunk_log2: u8,
        out_len: usize,
        streams: &[&'a [u8]],
    ) -> Result<Self, TensorError> {
        if streams.len() != codec.stream_count() {
            return Err(TensorError::StreamCount {
                codec: codec.name(),
                found: streams.len(),
                expected: codec.stream_count(),
            });
        }
        let body = match codec {
            Codec::Stored => {
                if streams[0].len() != out_len {
                    return Err(TensorError::StoredSize {
                        found: streams[0].len(),
                        expected: out_len,
                    });
                }
                DecoderBody::Stored(streams[0])
            }
            Codec::Zstd => {
                check_zstd_frame(streams[0], out_len as u64)?;
                DecoderBody::Zstd(streams[0])
            }
            Codec::Split(layout) => {
                if !CHUNK_LOG2_RANGE.contains(&chunk_log2) {
                    return Err(TensorError::ChunkLog2 {
                        found: chunk_log2,
                        min: *CHUNK_LOG2_RANGE.start(),
                        max: *CHUNK_LOG2_RANGE.end(),
                    });
                }
                if !out_len.is_multiple_of(layout.element_size()) {
                    return Err(TensorError::PartialElement {
                        len: out_len,
                        element_size: layout.element_size(),
                    });
                }
                let n = out_len / layout.element_size();
                let decoders = streams
                    .iter()
                    .zip(layout.field_bits())
                    .enumerate()
                    .map(|(i, (s, &bits))| {
                        StreamDecoder::parse(s, bits, n, 1 << chunk_log2)
                            .map_err(|source| TensorError::Stream { stream: i, source })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                DecoderBody::Split(layout, decoders)
            }
        };
        Ok(Self {
            codec,
            out_len,
            chunk_log2,
            body,
        })
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// What each stream stores (split codecs only; empty otherwise).
    pub fn stream_kinds(&self) -> Vec<StreamKind> {
        match &self.body {
            DecoderBody::Split(_, d) => d.iter().map(StreamDecoder::kind).collect(),
            _ => Vec::new(),
        }
    }

    /// Decodes the whole tensor into `out` (exactly the original size), chunks in parallel
    /// on the current rayon pool.
    pub fn decode(&self, out: &mut [u8]) -> Result<(), TensorError> {
        if out.len() != self.out_len {
            return Err(TensorError::OutputSize {
                found: out.len(),
                expected: self.out_len,
            });
        }
        match &self.body {
            DecoderBody::Stored(s) => out.copy_from_slice(s),
            DecoderBody::Zstd(frame) => {
                let mut decoder = zstd::bulk::Decompressor::new()
                    .map_err(|e| ZstdError::Decoder(e.to_string()))?;
                let n = decoder
                    .decompress_to_buffer(frame, out)
                    .map_err(|e| ZstdError::Decoder(e.to_string()))?;
                if n != out.len() {
                    return Err(ZstdError::DecodedSize {
                        found: n as u64,
                        expected: out.len() as u64,
                    }
                    .into());
                }
            }
            DecoderBody::Split(layout, decoders) => {
                let end = out.as_ptr_range().end as usize;
                self.decode_split(*layout, decoders, 0, out, end)?
            }
        }
        Ok(())
    }

    /// Decodes the whole tensor into `out` like [`Self::decode`] and calls `finished` on
    /// each decoded piece in order while the next piece is being decoded, so a checksum
    /// over the output overlaps with decoding instead of following it. With one thread the
    /// pieces are the merge's steps of 16 KiB, each handed over while it is in L1.
    pub fn decode_overlapped(
        &self,
        out: &mut [u8],
        finished: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), TensorError> {
        let DecoderBody::Split(layout, decoders) = &self.body else {
            self.decode(out)?;
            finished(out);
            return Ok(());
        };
        if out.len() != self.out_len {
            return Err(TensorError::OutputSize {
                found: out.len(),
                expected: self.out_len,
            });
        }
        // Pieces of one chunk pair per thread (at most about 8 MiB): `finished` reads a
        // piece just decoded, from cache rather than memory. It runs first on this thread
        // (with one thread: before the next piece evicts this one); the other threads
        // start on the next piece meanwhile.
        let pair_bytes = 2 * (1usize << self.chunk_log2) * layout.element_size();
        if rayon::current_num_threads() == 1 && layout.element_size() < 4 {
            // One thread: nothing to overlap with. The pairs are decoded in order and each
            // is merged in steps that `finished` reads from L1 right after the merge wrote
            // them (a whole pair would be read back from L2/L3). Not for F32: its merge
            // in steps measured 3-4 % slower by wall time (sessions 21 and 22, Zen 4),
            // although it cut its L2 misses by a third; it decodes one pair per piece.
            let chunk_len = 1usize << self.chunk_log2;
            let end = out.as_ptr_range().end as usize;
            for (pair, dst) in out.chunks_mut(pair_bytes).enumerate() {
                prefault_task(dst, dst.as_ptr() as usize, pair_bytes, end);
                FieldBuffers::with(|bufs| {
                    decode_chunk_pair(
                        *layout,
                        decoders,
                        bufs,
                        2 * pair,
                        chunk_len,
                        dst,
                        &mut *finished,
                    )
                })?;
            }
            return Ok(());
        }
        let pairs =
            rayon::current_num_threads().clamp(1, (OVERLAP_PIECE_BYTES / pair_bytes).max(1));
        let piece = pairs * pair_bytes;
        let chunks_per_piece = 2 * pairs;
        let end = out.as_ptr_range().end as usize;
        let mut pieces: Vec<&mut [u8]> = out.chunks_mut(piece).collect();
        if let Some(first) = pieces.first_mut() {
            self.decode_split(*layout, decoders, 0, first, end)?;
        }
        for k in 0..pieces.len() {
            let (done, rest) = pieces.split_at_mut(k + 1);
            let current: &[u8] = done[k];
            let ((), decoded) = rayon::join(
                || finished(current),
                || match rest.first_mut() {
                    Some(next) => {
                        self.decode_split(*layout, decoders, (k + 1) * chunks_per_piece, next, end)
                    }
                    None => Ok(()),
                },
            );
            decoded?;
        }
        Ok(())
    }

    /// For codecs that decode any range of chunks: `max_bytes` rounded down to whole
    /// chunk pairs (at least one pair), the piece size for [`Self::decode_at`]. `None`
    /// for codecs that decode only front to back (stored, zstd).
    pub(crate) fn piece_bytes(&self, max_bytes: usize) -> Option<usize> {
        let DecoderBody::Split(layout, _) = &self.body else {
            return None;
        };
        let pair_bytes = 2 * (1usize << self.chunk_log2) * layout.element_size();
        Some((max_bytes / pair_bytes).max(1) * pair_bytes)
    }

    /// Decodes the bytes `offset..offset + out.len()` of the tensor into `out`, chunks in
    /// parallel: `offset` a multiple of [`Self::piece_bytes`]'s pair size, and `out`
    /// whole chunk pairs or reaching the end of the tensor. No checksum: the caller
    /// hashes the pieces in order.
    pub(crate) fn decode_at(&self, offset: usize, out: &mut [u8]) -> Result<(), TensorError> {
        let DecoderBody::Split(layout, decoders) = &self.body else {
            return Err(TensorError::OutputSize {
                found: out.len(),
                expected: self.out_len,
            });
        };
        let pair_bytes = 2 * (1usize << self.chunk_log2) * layout.element_size();
        let end = offset.checked_add(out.len());
        let whole = out.len().is_multiple_of(pair_bytes) || end == Some(self.out_len);
        if !offset.is_multiple_of(pair_bytes) || !whole || end.is_none_or(|e| e > self.out_len) {
            return Err(TensorError::OutputSize {
                found: out.len(),
                expected: self.out_len.saturating_sub(offset),
            });
        }
        let end = out.as_ptr_range().end as usize;
        self.decode_split(*layout, decoders, offset / (pair_bytes / 2), out, end)
    }

    /// For each stream, the byte range that holds the tensor's chunks `..chunks` only
    /// (see [`StreamDecoder::chunks_payload`]): nothing a decode of the later chunks reads.
    /// Empty for codecs that decode only front to back (stored, zstd).
    pub(crate) fn chunks_payload(&self, chunks: usize) -> Vec<std::ops::Range<usize>> {
        match &self.body {
            DecoderBody::Split(_, decoders) => {
                decoders.iter().map(|d| d.chunks_payload(chunks)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Bytes per chunk pair for codecs that decode any range of chunks (`None` for stored
    /// and zstd, which decode only front to back): the unit of [`Self::decode_piece`].
    pub fn pair_bytes(&self) -> Option<usize> {
        let DecoderBody::Split(layout, _) = &self.body else {
            return None;
        };
        Some(2 * (1usize << self.chunk_log2) * layout.element_size())
    }

    /// Decodes bytes `offset..offset + out.len()` of the tensor into `out` on this thread
    /// (no rayon, no prefault: `out` is meant to be a buffer in cache, reused): `offset` a
    /// multiple of [`Self::pair_bytes`], `out` whole chunk pairs or reaching the end of
    /// the tensor. No checksum: the caller hashes what it decodes.
    pub fn decode_piece(&self, offset: usize, out: &mut [u8]) -> Result<(), TensorError> {
        self.decode_units(2, offset, out)
    }

    /// Bytes per chunk for codecs that decode any range of chunks (`None` for stored and
    /// zstd): the unit of [`Self::decode_chunks`].
    pub fn chunk_bytes(&self) -> Option<usize> {
        self.pair_bytes().map(|pair| pair / 2)
    }

    /// [`Self::decode_piece`] a chunk at a time instead of a chunk pair at a time, so that
    /// `offset` need only be a multiple of [`Self::chunk_bytes`] (`out` whole chunks or
    /// reaching the end of the tensor): the same bytes, from half the field buffers, for a
    /// caller that keeps a piece in cache while it works on it.
    pub fn decode_chunks(&self, offset: usize, out: &mut [u8]) -> Result<(), TensorError> {
        self.decode_units(1, offset, out)
    }

    /// Decodes bytes `offset..offset + out.len()` in units of `unit_chunks` (1 or 2)
    /// chunks: `offset` a multiple of the unit, `out` whole units or reaching the end of
    /// the tensor (a unit of two decodes as a chunk pair; a last unit may hold one chunk).
    fn decode_units(
        &self,
        unit_chunks: usize,
        offset: usize,
        out: &mut [u8],
    ) -> Result<(), TensorError> {
        let size_err = || TensorError::OutputSize {
            found: out.len(),
            expected: self.out_len.saturating_sub(offset),
        };
        let (DecoderBody::Split(layout, decoders), Some(chunk_bytes)) =
            (&self.body, self.chunk_bytes())
        else {
            return Err(size_err());
        };
        let unit_bytes = unit_chunks * chunk_bytes;
        let end = offset.checked_add(out.len());
        let whole = out.len().is_multiple_of(unit_bytes) || end == Some(self.out_len);
        if !offset.is_multiple_of(unit_bytes) || !whole || end.is_none_or(|e| e > self.out_len) {
            return Err(size_err());
        }
        let chunk_len = 1usize << self.chunk_log2;
        let first = offset / chunk_bytes;
        FieldBuffers::with(|bufs| {
            out.chunks_mut(unit_bytes)
                .enumerate()
                .try_for_each(|(k, dst)| {
                    // A destination of one chunk: the pair's second half is empty.
                    let chunk = first + unit_chunks * k;
                    decode_chunk_pair(*layout, decoders, bufs, chunk, chunk_len, dst, NoSink)
                })
        })
    }

    /// Decodes the tensor in consecutive pieces of at most `max_piece` bytes (rounded down
    /// to whole chunks, at least one chunk) and hands each to `sink` with its byte range,
    /// so memory stays bounded whatever size the index claims.
    pub fn decode_pieces(
        &self,
        max_piece: usize,
        sink: &mut PieceSink<'_>,
    ) -> Result<(), TensorError> {
        match &self.body {
            DecoderBody::Stored(s) => {
                for (k, piece) in s.chunks(max_piece.max(1)).enumerate() {
                    let start = k * max_piece.max(1);
                    sink(piece, start..start + piece.len())?;
                }
            }
            DecoderBody::Zstd(frame) => {
                use std::io::Read;
                let mut reader = zstd::stream::read::Decoder::with_buffer(*frame)
                    .map_err(|e| ZstdError::Decoder(e.to_string()))?
                    .single_frame();
                let mut buf = vec![0u8; max_piece.clamp(1, self.out_len.max(1))];
                let mut done = 0;
                while done < self.out_len {
                    let n = buf.len().min(self.out_len - done);
                    reader
                        .read_exact(&mut buf[..n])
                        .map_err(|e| match e.kind() {
                            std::io::ErrorKind::UnexpectedEof => ZstdError::DecodedSize {
                                found: done as u64,
                                expected: self.out_len as u64,
                            },
                            _ => ZstdError::Decoder(e.to_string()),
                        })?;
                    sink(&buf[..n], done..done + n)?;
                    done += n;
                }
                let mut extra = [0u8; 1];
                if reader
                    .read(&mut extra)
                    .map_err(|e| ZstdError::Decoder(e.to_string()))?
                    != 0
                {
                    return Err(ZstdError::TooLong {
                        expected: self.out_len as u64,
                    }
                    .into());
                }
            }
            DecoderBody::Split(layout, decoders) => {
                let chunk_bytes = (1usize << self.chunk_log2) * layout.element_size();
                let piece = (max_piece / chunk_bytes).max(1) * chunk_bytes;
                let mut buf = vec![0u8; piece.min(self.out_len)];
                let mut done = 0;
                while done < self.out_len {
                    let n = piece.min(self.out_len - done);
                    let piece = &mut buf[..n];
                    let end = piece.as_ptr_range().end as usize;
                    self.decode_split(*layout, decoders, done / chunk_bytes, piece, end)?;
                    sink(&buf[..n], done..done + n)?;
                    done += n;
                }
            }
        }
        Ok(())
    }

    /// Decodes the chunks from `first_chunk` on into `out` (whole chunks, or up to the end),
    /// a slice of an output that ends at address `output_end` (`out`'s own end, or that of
    /// the whole tensor `out` is a piece of).
    fn decode_split(
        &self,
        layout: Layout,
        decoders: &[StreamDecoder<'_>],
        first_chunk: usize,
        out: &mut [u8],
        output_end: usize,
    ) -> Result<(), TensorError> {
        let chunk_len = 1usize << self.chunk_log2;
        let piece_start = out.as_ptr() as usize;
        // Tasks of two chunks: the rANS decoder interleaves a pair.
        let share = 2 * chunk_len * layout.element_size();
        out.par_chunks_mut(share)
            .enumerate()
            .try_for_each(|(pair, dst)| {
                prefault_task(dst, piece_start, share, output_end);
                FieldBuffers::with(|bufs| {
                    decode_chunk_pair(
                        layout,
                        decoders,
                        bufs,
                        first_chunk + 2 * pair,
                        chunk_len,
                        dst,
                        NoSink,
                    )
                })
            })
    }

    /// Order-0 entropy in bits per element of the first split stream (the exponent field),
    /// computed by decoding it; `None` for codecs without fields.
    pub fn first_field_entropy(&self) -> Result<Option<f64>, TensorError> {
        let DecoderBody::Split(layout, decoders) = &self.body else {
            return Ok(None);
        };
        let chunk_len = 1usize << self.chunk_log2;
        let n = self.out_len / layout.element_size();
        let mut hist = vec![0u64; 1 << layout.field_bits()[0]];
        let mut buf = vec![0u16; chunk_len.min(n)];
        for c in 0..decoders[0].n_chunks() {
            let len = chunk_len.min(n - c * chunk_len);
            decoders[0]
                .decode_chunk(c, &mut buf[..len])
                .map_err(|source| TensorError::Stream { stream: 0, source })?;
            for &s in &buf[..len] {
                hist[usize::from(s)] += 1;
            }
        }
        Ok(Some(entropy_bits(&hist)))
    }
}

/// What [`decode_chunk_pair`] hands each finished merge step of its output to: nothing
/// ([`NoSink`]), or a one-thread [`TensorDecoder::decode_overlapped`]'s `finished` (the
/// checksum).
///
/// A type parameter, not an `Option<&mut dyn FnMut>`: with the latter, every decode
/// shared one `decode_chunk_pair` holding an indirect call whose only target in the
/// crate is the closure of `Archive::decode_tensor_with`. In a release binary that never
/// decodes an archive (the store's `fuzz_replay` test), thin LTO found that closure dead
/// and dropped what it calls from other crates (`xxhash-rust`'s streaming update,
/// `memmap2`'s advice), yet rustc only internalizes dead functions in their own module;
/// the backend then propagated the one vtable into the live `decode_chunk_pair` and
/// turned the indirect call into a direct call to the dead closure, which failed to
/// link (undefined symbols). Generic, the call lives in an instantiation reached only
/// through `decode_overlapped`: dead or live together with its closure.
trait StepSink {
    /// Whether the merge goes in steps of [`SINK_STEP_BYTES`], each handed to
    /// [`StepSink::step`]; without, the whole output goes in one merge and no call.
    const STEPS: bool;
    /// Takes the next finished part of the output.
    fn step(&mut self, out: &[u8]);
}

/// The sink of every decode but a one-thread `decode_overlapped`: no steps, no calls.
struct NoSink;

impl StepSink for NoSink {
    const STEPS: bool = false;
    #[inline(always)]
    fn step(&mut self, _: &[u8]) {}
}

impl<F: FnMut(&[u8]) + ?Sized> StepSink for &mut F {
    const STEPS: bool = true;
    #[inline(always)]
    fn step(&mut self, out: &[u8]) {
        (**self)(out)
    }
}

/// Decodes chunks `first` and `first + 1` (if `dst` reaches it) of every field and merges
/// them into `dst`. With a sink that takes steps, the merge goes in steps of
/// [`SINK_STEP_BYTES`], each handed to the sink as soon as it is written (all of `dst`,
/// in order).
fn decode_chunk_pair<S: StepSink>(
    layout: Layout,
    decoders: &[StreamDecoder<'_>],
    bufs: &mut FieldBuffers,
    first: usize,
    chunk_len: usize,
    dst: &mut [u8],
    mut sink: S,
) -> Result<(), TensorError> {
    let esize = layout.element_size();
    if matches!(layout, Layout::F32 | Layout::F32Joint)
        && !S::STEPS
        && dst.len() > chunk_len * esize
        && !crate::entropy::rans::pairs_interleaved()
    {
        // F32 where the rANS decoder takes the chunks one at a time anyway (AVX-512,
        // scalar): each chunk decoded and merged before the next, so that its 1 MiB of
        // output and its fields are still in L2 for the merge (+1–3 % by CPU time on
        // AVX-512; on AVX2 the pair's interleave pays more: BENCHMARKS.md,
        // twenty-fifth session, dec25).
        let (a, b) = dst.split_at_mut(chunk_len * esize);
        decode_chunk_pair(layout, decoders, bufs, first, chunk_len, a, NoSink)?;
        return decode_chunk_pair(layout, decoders, bufs, first + 1, chunk_len, b, NoSink);
    }
    let dst_range = dst.as_ptr_range();
    let (dst_a, dst_b) = dst.split_at_mut((chunk_len * esize).min(dst.len()));
    let (na, nb) = (dst_a.len() / esize, dst_b.len() / esize);
    if let (Layout::F8, [field]) = (layout, decoders) {
        // An FP8 field's symbols are the tensor's bytes: a coded one decodes straight into
        // them, with no u16 buffer and no narrowing pass.
        if let Some(result) = field.decode_chunks_to_bytes(first, dst_a, dst_b) {
            result.map_err(|source| TensorError::Stream { stream: 0, source })?;
            if S::STEPS {
                sink.step(dst);
            }
            return Ok(());
        }
    }
    // BF16 and F32 with a packed sign+mantissa field merge straight from the packed bits.
    let packed_residual = |c: usize, n: usize| match (layout, decoders) {
        (Layout::Bf16 | Layout::Bf16Joint, [_, residual])
        | (Layout::F32 | Layout::F32Joint, [_, residual, _, _]) => residual.packed_chunk(c, n),
        _ => None,
    };
    // So do F32 with packed mantissa bytes and F16 with a packed second field: 8-bit
    // packed symbols are the bytes.
    let packed_byte = |f: usize, c: usize, n: usize| match layout {
        Layout::F32 | Layout::F32Joint if f >= 2 => decoders[f].packed_chunk(c, n),
        Layout::F16 | Layout::F16Joint if f == 1 => decoders[f].packed_chunk(c, n),
        _ => None,
    };
    // A field is read in place only where both halves of the pair can be.
    let both = |available: &dyn Fn(usize, usize) -> bool| {
        available(first, na) && (nb == 0 || available(first + 1, nb))
    };
    let fused = both(&|c, n| packed_residual(c, n).is_some());
    let f16 = matches!(layout, Layout::F16 | Layout::F16Joint);
    let in_place: [bool; MAX_FIELDS] = std::array::from_fn(|i| match i {
        1 if f16 => both(&|c, n| packed_byte(1, c, n).is_some()),
        1 => fused,
        2 | 3 => fused && both(&|c, n| packed_byte(i, c, n).is_some()),
        _ => false,
    });
    // The merge reads these fields as bytes (F32's mantissa bytes beside a packed
    // residual, both 8-bit fields of F16): rANS-coded, they decode straight into bytes,
    // with no 16-bit symbols to store and read back (MiniLM's F32 word embedding codes
    // both mantissa bytes; every F16 tensor codes its first field).
    let as_bytes = |i: usize| match layout {
        Layout::F32 | Layout::F32Joint => fused && i >= 2,
        Layout::F16 | Layout::F16Joint => i <= 1,
        _ => false,
    };
    let mut coded_bytes = [false; MAX_FIELDS];
    // F16 with its second field in place: on the AVX-512 path the rANS kernel merges the
    // elements into `dst` as it decodes the first field, instead of writing its bytes for
    // the merge below to read back (`merged`: the leading elements of each half so
    // written; none on the other paths).
    let mut merged = [0usize; 2];
    let merges = match layout {
        Layout::F16 | Layout::F16Joint if in_place[1] => {
            let joint = layout.is_joint();
            let low = |c: usize, n: usize| packed_byte(1, c, n).unwrap_or(&[]);
            Some([
                F16Merge::new(low(first, na), dst_a, joint),
                F16Merge::new(if nb > 0 { low(first + 1, nb) } else { &[] }, dst_b, joint),
            ])
        }
        _ => None,
    };
    // Runs of raw blocks in those byte fields (mode 5), read by the merge where they lie
    // in the payloads instead of copied out first (empty vectors allocate nothing).
    let mut raw_spans: [[Vec<RawSpan>; 2]; MAX_FIELDS] = Default::default();
    let mut raw_payloads: [[&[u8]; 2]; MAX_FIELDS] = [[&[]; 2]; MAX_FIELDS];
    for (i, d) in decoders.iter().enumerate() {
        if in_place[i] {
            continue;
        }
        // The merge below writes `dst` after these decodes: each announces it, so that
        // its lines are in cache, owned, by then (+5–15 % by CPU time on the vector
        // paths, BENCHMARKS.md, tenth session, dec12). A pair's groups decode in the
        // order of `dst`, chunk `a` first, or both interleaved (which walks the window
        // as fast).
        // While the first field decodes, a bit-packed field that the merge reads in
        // place is prefetched too: BF16's residual, F16's second field (not F32's three:
        // level there; see `write_ahead`).
        let read = match layout {
            _ if i != 0 => None,
            Layout::Bf16 | Layout::Bf16Joint if fused => packed_residual(first, na).map(|a| (a, 7)),
            Layout::F16 | Layout::F16Joint if in_place[1] => {
                packed_byte(1, first, na).map(|a| (a, 8))
            }
            _ => None,
        }
        .map(|(a, bits)| {
            // The pair's symbols follow each other in the packed stream.
            let start = a.as_ptr();
            (start..start.wrapping_add((na + nb) * bits / 8), bits as u32)
        });
        let result = crate::entropy::rans::write_ahead(dst_range.clone(), esize, read, || {
            if as_bytes(i) {
                let [a, b] = &mut bufs.byte_pairs[i];
                grow(a, na);
                grow(b, nb);
                let spans = &mut raw_spans[i];
                let merges = merges.filter(|_| i == 0);
                if let Some(result) = d.decode_chunks_to_bytes_in_place(
                    first,
                    &mut a[..na],
                    &mut b[..nb],
                    spans,
                    merges,
                ) {
                    coded_bytes[i] = true;
                    return result.map(|(payloads, done)| {
                        raw_payloads[i] = payloads;
                        merged = done;
                    });
                }
            }
            let [a, b] = &mut bufs.pairs[i];
            // Grown to what is decoded, not to the chunk length a file claims: a small
            // tensor with a 2^22-element chunk must not leave megabytes per thread behind.
            grow(a, na);
            grow(b, nb);
            if nb > 0 {
                d.decode_chunk_pair(first, &mut a[..na], &mut b[..nb])
            } else {
                d.decode_chunk(first, &mut a[..na])
            }
        });
        result.map_err(|source| TensorError::Stream { stream: i, source })?;
    }
    for (half, (c, out, n)) in [(first, dst_a, na), (first + 1, dst_b, nb)]
        .into_iter()
        .enumerate()
    {
        if n == 0 {
            continue;
        }
        // Steps of a multiple of 64 elements: a packed 7-bit residual's step starts on a
        // byte, and the vector merges run whole.
        let step = if S::STEPS { SINK_STEP_BYTES / esize } else { n };
        let joint = layout.is_joint();
        let residual = packed_residual(c, n).filter(|_| fused);
        let spans = |f: usize| raw_spans[f][half].as_slice();
        let any_raw = (0..MAX_FIELDS).any(|f| !spans(f).is_empty());
        let merge = |r: std::ops::Range<usize>, out: &mut [u8]| {
            let field = |f: usize| &bufs.pairs[f][half][r.clone()];
            let byte_field = |f: usize| {
                // A part lies wholly inside one raw run of a field or outside all of them.
                if let Some(s) = spans(f)
                    .iter()
                    .find(|s| s.start <= r.start && r.end <= s.end)
                {
                    let at = s.at + (r.start - s.start);
                    return ByteField::Bytes(&raw_payloads[f][half][at..at + r.len()]);
                }
                match packed_byte(f, c, n) {
                    Some(bytes) if in_place[f] => ByteField::Bytes(&bytes[r.clone()]),
                    _ if coded_bytes[f] => ByteField::Bytes(&bufs.byte_pairs[f][half][r.clone()]),
                    _ => ByteField::Symbols(field(f)),
                }
            };
            // 7 bits per element: a part starting at `r.start` starts at byte 7·start/8
            // (start a multiple of 8: of a step's 64 elements or a block's 256).
            match (residual.map(|p| &p[r.start / 8 * 7..]), layout) {
                (Some(packed), Layout::F32 | Layout::F32Joint) => {
                    crate::float_split::merge_f32_packed(
                        joint,
                        field(0),
                        packed,
                        byte_field(2),
                        byte_field(3),
                        out,
                    )
                }
                (Some(packed), _) => {
                    crate::float_split::merge_bf16_packed(joint, field(0), packed, out)
                }
                (None, Layout::F32 | Layout::F32Joint) => {
                    layout.merge(&[field(0), field(1), field(2), field(3)], out)
                }
                (None, Layout::F8) => layout.merge(&[field(0)], out),
                (None, Layout::F16 | Layout::F16Joint) => {
                    crate::float_split::merge_f16_fields(joint, byte_field(0), byte_field(1), out)
                }
                (None, _) => layout.merge(&[field(0), field(1)], out),
            }
        };
        for (k, out) in out.chunks_mut(step * esize).enumerate() {
            let r = k * step..k * step + out.len() / esize;
            // The elements the rANS kernel merged are in place already.
            let from = r.start.max(merged[half]).min(r.end);
            if !any_raw {
                if from < r.end {
                    merge(from..r.end, &mut out[(from - r.start) * esize..]);
                }
            } else {
                // In parts cut where a raw run of any field starts or ends.
                let mut s = from;
                while s < r.end {
                    let e = (0..MAX_FIELDS)
                        .flat_map(|f| spans(f).iter().flat_map(|x| [x.start, x.end]))
                        .filter(|&x| x > s)
                        .fold(r.end, usize::min);
                    merge(s..e, &mut out[(s - r.start) * esize..(e - r.start) * esize]);
                    s = e;
                }
            }
            if S::STEPS {
                sink.step(out);
            }
        }
    }
    Ok(())
}

/// Checks that `frame` is exactly one zstd frame (FORMAT.md §4.1: nothing after it, no
/// second frame) whose declared content size, if it has one, is `len` bytes. Cheap: reads
/// only the frame and block headers.
pub(crate) fn check_zstd_frame(frame: &[u8], len: u64) -> Result<(), ZstdError> {
    let size =
        zstd::zstd_safe::find_frame_compressed_size(frame).map_err(|code| ZstdError::BadFrame {
            reason: zstd::zstd_safe::get_error_name(code),
        })?;
    if size != frame.len() {
        return Err(ZstdError::TrailingBytes {
            frame_end: size,
            len: frame.len(),
        });
    }
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(declared)) if declared != len => Err(ZstdError::DeclaredSize {
            declared,
            expected: len,
        }),
        Ok(_) => Ok(()),
        Err(_) => Err(ZstdError::UnreadableHeader),
    }
}
