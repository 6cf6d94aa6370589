//! The tensor encoder: fields split and sampled, a layout and the models chosen, each
//! field coded as one stream.

use rayon::prelude::*;

use super::buffers::{grow, FieldBuffers};
use super::{
    entropy_bits, Codec, TensorError, CHUNK_LOG2_RANGE, DEFAULT_BLOCK_LOG2, DEFAULT_CHUNK_LOG2,
    MAX_BLOCK_LOG2,
};
use crate::container::STREAM_ALIGN;
use crate::dtype::Dtype;
use crate::entropy::stream::{
    sparse_entropy_bits, Coarse, CodedStream, Effort, SparseHist, StreamEncoder,
};
use crate::entropy::EntropyError;
use crate::float_split::{Layout, MAX_FIELDS};

/// Shortest blocks the encoder's table search runs on: shorter ones (the default) are
/// planned by refining its tables ([`StreamEncoder::refine`]).
const PLAN_BLOCK_LOG2: u8 = 11;

/// Encoder settings.
#[derive(Clone, Copy, Debug)]
pub struct EncodeOptions {
    /// Model search effort.
    pub effort: Effort,
    /// zstd level for non-float tensors.
    pub zstd_level: i32,
    /// Chunk length exponent (within [`CHUNK_LOG2_RANGE`]).
    pub chunk_log2: u8,
    /// Block length exponent: each block of `1 << block_log2` elements picks its own
    /// table (at least 5, at most `chunk_log2`).
    pub block_log2: u8,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            effort: Effort::Default,
            zstd_level: 3,
            chunk_log2: DEFAULT_CHUNK_LOG2,
            block_log2: DEFAULT_BLOCK_LOG2,
        }
    }
}

impl EncodeOptions {
    /// Checks that the chunk and block exponents describe a decodable file:
    /// `chunk_log2` within [`CHUNK_LOG2_RANGE`], `5 ≤ block_log2 ≤ chunk_log2`.
    /// The error is [`TensorError::ChunkLog2`] or [`TensorError::BlockLog2`].
    pub fn validate(&self) -> Result<(), TensorError> {
        if !CHUNK_LOG2_RANGE.contains(&self.chunk_log2) {
            return Err(TensorError::ChunkLog2 {
                found: self.chunk_log2,
                min: *CHUNK_LOG2_RANGE.start(),
                max: *CHUNK_LOG2_RANGE.end(),
            });
        }
        let min = crate::entropy::stream::MIN_BLOCK_LOG2;
        if !(min..=self.chunk_log2).contains(&self.block_log2) {
            return Err(TensorError::BlockLog2 {
                found: self.block_log2,
                min,
                max: self.chunk_log2,
            });
        }
        Ok(())
    }

    /// The fast setting (`mcodec pack --level fast`): one table per field stream
    /// wherever a sample says that several cannot pay, tables planned on blocks of 2048
    /// elements without refinement elsewhere, zstd level 1. Any decoder reads its files
    /// (the same format; one-table streams also decode faster).
    pub fn fast() -> Self {
        Self {
            effort: Effort::Fast,
            zstd_level: 1,
            chunk_log2: DEFAULT_CHUNK_LOG2,
            block_log2: PLAN_BLOCK_LOG2,
        }
    }

    /// The archival setting: more tables, stronger zstd; still decodable everywhere.
    pub fn max() -> Self {
        Self {
            effort: Effort::Max,
            zstd_level: 19,
            chunk_log2: DEFAULT_CHUNK_LOG2,
            block_log2: MAX_BLOCK_LOG2,
        }
    }
}

/// A coded tensor: its codec, chunk length exponent and streams.
#[derive(Clone, Debug)]
pub struct EncodedTensor {
    /// How the streams are to be read.
    pub codec: Codec,
    /// Chunk length exponent of split streams (0 for other codecs).
    pub chunk_log2: u8,
    /// The streams, in codec order.
    pub streams: Vec<CodedStream>,
}

impl EncodedTensor {
    /// Total bytes of all streams.
    pub fn coded_len(&self) -> usize {
        self.streams.iter().map(CodedStream::len).sum()
    }
}

/// Encodes one tensor's little-endian bytes. Never fails: anything that does not shrink is
/// stored, and so is everything when `opts` does not [validate](EncodeOptions::validate).
///
/// Of the codecs tried (a split layout for float tensors, zstd for the rest, storing), the
/// one taking the fewest bytes in the file wins, counting
/// what each stream adds besides its bytes ([`file_bytes`]).
pub fn encode(dtype: &Dtype, data: &[u8], opts: &EncodeOptions) -> EncodedTensor {
    let stored = || EncodedTensor {
        codec: Codec::Stored,
        chunk_log2: 0,
        streams: vec![data.to_vec().into()],
    };
    if opts.validate().is_err() {
        return stored();
    }
    let zstd = || {
        zstd::bulk::compress(data, opts.zstd_level)
            .ok()
            .map(|frame| EncodedTensor {
                codec: Codec::Zstd,
                chunk_log2: 0,
                streams: vec![frame.into()],
            })
    };
    let mut candidates: Vec<EncodedTensor> = Vec::with_capacity(1);
    match Layout::for_dtype(dtype) {
        Some(layout) if data.len().is_multiple_of(layout.element_size()) && !data.is_empty() => {
            // An error cannot happen (every model is planned from the symbols it codes),
            // but if it did, the other candidates keep the promise of a lossless result.
            // Float tensors are not tried with zstd, small ones included, although zstd
            // would take a few bytes less for some 384-element FP8/FP16 norms: the GPU
            // decoder (gpu-decode) decodes split layouts only, and every tensor the
            // writer emits by default must decode there.
            candidates.extend(encode_split(layout, true, data, opts).ok());
            if opts.effort == Effort::Max {
                // The max level's longer search is not always smaller: on near-uniform
                // fields its many tables can cost more than they save (MiniLM F32's word
                // embedding: 36 KB larger than the default's; BENCHMARKS.md, twenty-ninth
                // session). The default's plan is a candidate too, so that max is never
                // larger than the default. On MiniLM F32 that plan also won back the
                // default's decode speed (`verify -j1` CPU 130 → 73 ms against the
                // default's 75; BENCHMARKS.md, thirtieth session).
                let default = EncodeOptions {
                    effort: Effort::Default,
                    block_log2: DEFAULT_BLOCK_LOG2.min(opts.chunk_log2),
                    ..*opts
                };
                candidates.extend(encode_split(layout, true, data, &default).ok());
            }
        }
        _ if data.len() >= 64 => candidates.extend(zstd()),
        _ => {}
    }
    let stored_bytes = file_bytes(std::slice::from_ref(&data.len()));
    candidates
        .into_iter()
        .map(|c| {
            let lens: Vec<usize> = c.streams.iter().map(CodedStream::len).collect();
            (file_bytes(&lens), c)
        })
        .filter(|(bytes, _)| *bytes < stored_bytes)
        .min_by_key(|(bytes, _)| *bytes)
        .map_or_else(stored, |(_, c)| c)
}

/// Bytes that streams of these lengths take in a `.mcz` file: each starts at a multiple
/// of [`STREAM_ALIGN`] (FORMAT.md §3.2), so it takes its length rounded up to that, and
/// its `StreamRef` in the zstd-coded index (§3.3): about 12 bytes, the 8 of its
/// checksum and what its offset and length cost coded. This decides between codecs for
/// small tensors, where a split codec pays for a second stream, rANS states and a table.
pub fn file_bytes(stream_lens: &[usize]) -> usize {
    stream_lens
        .iter()
        .map(|&len| len.next_multiple_of(STREAM_ALIGN as usize) + STREAM_REF_BYTES)
        .sum()
}

/// What a `StreamRef` costs in the zstd-coded index, as estimated by [`file_bytes`].
const STREAM_REF_BYTES: usize = 12;

/// The joint layout (sign coded with the exponent) is chosen when the sample says it
/// saves at least this share of the first two fields' bits: below it, the estimate's
/// noise could pick the layout that codes larger.
const JOINT_MIN_GAIN: f64 = 0.002;

/// [`Effort::Fast`] plans a field with several tables only where the sampled blocks'
/// own entropies are at least this fraction below the entropy of the whole sample:
/// elsewhere one table codes within a few tenths of a percent of what a search finds.
/// (The default level's [`choose_tables`](crate::entropy::stream) floor, taken from
/// the sample.) On MiniLM, 0.02 would leave only BF16's and F32's word embeddings and a
/// few small tensors with several tables: 5 % fewer BF16 encode instructions, but F16 and
/// FP8 0.15–0.3 points larger.
const FAST_MIN_POTENTIAL: f64 = 0.008;

/// What the default level's plans charge a change of table from one block to the next,
/// in bits beyond its id ([`StreamEncoder::plan_sparse`]): each change costs the rANS
/// loop ~0.2 µs (~700 cycles on Zen 4) while the new table's 16 KiB of slot entries come
/// from L2, one gather at a time on the state's dependency chain. First for FP8, whose
/// decode is its rANS loop (~89 % of its instructions): MiniLM's FP8 files changed tables
/// within chunks 6,071 (E4M3) and 16,037 (E5M2) times per decode, nearly all in the word
/// embedding; at 200 bits (25 bytes) 288 times: E4M3 75.395 → 75.449 %, E5M2 69.194 →
/// 69.238 % (ZipNN: 75.95 / 69.80 %), one-thread decode by CPU time +3.9 to +9.1 % on both
/// vector paths, D1 read misses −41 / −59 % (BENCHMARKS.md, twenty-third session, fp823;
/// 25 bits left about two thirds of the gain, 1,000 no more than 200). The same charge on
/// the other dtypes' fields (twenty-ninth session, sw29): MiniLM BF16 65.853 → 65.880 %,
/// F16 84.460 → 84.489 %, F32 81.479 → 81.493 % (ZipNN: 66.47 / 84.81 / 81.90 %), one-thread
/// AVX2 decode by CPU time on Zen 3 BF16 +6.8 %, F16 +6.5 %, F32 +4.8 % (medians of 10
/// alternated pairs), the scalar path level; 50 to 400 bits measured alike. The fast level
/// plans few tables without a search and the max level's own search by size alone, so
/// neither charges (max also weighs the default's plan, which does, and keeps the smaller).
const SWITCH_BITS: f64 = 200.0;

/// Short blocks whose histograms one task of the refinement's count takes.
const FINE_PIECE: usize = 64;

/// Splits `layout`'s fields into streams; with `allow_joint`, the layout's joint variant
/// instead where the sample says it codes smaller.
pub(super) fn encode_split(
    base: Layout,
    allow_joint: bool,
    data: &[u8],
    opts: &EncodeOptions,
) -> Result<EncodedTensor, EntropyError> {
    let bits = base.field_bits();
    let esize = base.element_size();
    let chunk_len = 1usize << opts.chunk_log2;
    let chunk_bytes = chunk_len * esize;

    // A sample of every 16th block tells which fields are near-uniform even block by block
    // (sign and low mantissa bits): those are packed without counting them in full. The
    // same sample, counted a second time with the sign in the first field, tells whether
    // the joint layout pays (its other fields are the same as the base layout's).
    let candidates: Vec<Layout> = std::iter::once(base)
        .chain(base.joint().filter(|_| allow_joint))
        .collect();
    // The layout sample, the histograms and the table search use blocks of at least
    // PLAN_BLOCK_LOG2; streams with several tables are then refined on blocks of
    // `opts.block_log2` (see `StreamEncoder::refine`).
    let plan_log2 = opts.block_log2.max(PLAN_BLOCK_LOG2).min(opts.chunk_log2);
    let block_bytes = (1usize << plan_log2) * esize;
    let mut sampled_bits = vec![vec![0.0f64; bits.len()]; candidates.len()];
    let mut sampled = 0usize;
    // The fast level also sums the sample's histograms per field: their entropy against
    // the blocks' own tells which fields several tables could make smaller.
    let fast = opts.effort == Effort::Fast;
    let mut sample_totals =
        vec![vec![[0u64; 512]; if fast { bits.len() } else { 0 }]; candidates.len()];
    for block in data.chunks(block_bytes).step_by(16) {
        // Both layouts' histograms from one pass where the base layout has a joint one.
        let both = match candidates.as_slice() {
            [_, _] => base.count_sparse_with_joint(block),
            _ => None,
        };
        let hists: Vec<Vec<SparseHist>> = match both {
            Some(both) => both.into(),
            None => (candidates.iter().enumerate())
                .map(|(k, layout)| {
                    let fields: [bool; MAX_FIELDS] = std::array::from_fn(|f| k == 0 || f < 2);
                    layout.count_sparse(block, &fields[..bits.len()])
                })
                .collect(),
        };
        for (acc, hists) in sampled_bits.iter_mut().zip(&hists) {
            for (acc, h) in acc.iter_mut().zip(hists) {
                // The same sum, term by term, as `corrected_entropy_bits` of the dense
                // histogram (0 for a field not counted).
                *acc += sparse_entropy_bits(h);
            }
        }
        for (totals, hists) in sample_totals.iter_mut().zip(&hists) {
            for (total, h) in totals.iter_mut().zip(hists) {
                for &(v, c) in h {
                    total[usize::from(v) & 511] += u64::from(c);
                }
            }
        }
        sampled += block.len() / esize;
    }
    // Coded bits of the first two fields: entropy, or packing where that is less.
    let cost = |field_bits: &[f64]| -> f64 {
        field_bits[..2]
            .iter()
            .zip(bits)
            .map(|(&e, &b)| e.min(f64::from(b) * sampled as f64))
            .sum()
    };
    let pick = match sampled_bits.as_slice() {
        [plain, joint] if cost(joint) < (1.0 - JOINT_MIN_GAIN) * cost(plain) => 1,
        _ => 0,
    };
    let layout = candidates[pick];
    if pick == 1 {
        let (plain, joint) = sampled_bits.split_at_mut(1);
        joint[0][2..].copy_from_slice(&plain[0][2..]);
        if fast {
            let (plain, joint) = sample_totals.split_at_mut(1);
            joint[0][2..].copy_from_slice(&plain[0][2..]);
        }
    }
    let sampled_bits = sampled_bits.swap_remove(pick);
    let modelled: Vec<bool> = sampled_bits
        .iter()
        .zip(bits)
        .map(|(&e, &b)| e < 0.995 * f64::from(b) * sampled as f64)
        .collect();
    // The fast level gives one table to every modelled field whose sampled blocks'
    // entropies are within FAST_MIN_POTENTIAL of the sample's own: those fields are
    // counted per chunk below. The others are planned on blocks, as by default.
    let one_table: Vec<bool> = if fast {
        let totals = sample_totals.swap_remove(pick);
        (0..bits.len())
            .map(|f| {
                // (Per symbol, times the sample's symbols.)
                let whole = entropy_bits(&totals[f]) * sampled as f64;
                modelled[f] && sampled_bits[f] >= (1.0 - FAST_MIN_POTENTIAL) * whole
            })
            .collect()
    } else {
        vec![false; bits.len()]
    };
    let by_blocks: Vec<bool> = (0..bits.len())
        .map(|f| modelled[f] && !one_table[f])
        .collect();

    // Pass 1: per-block histograms of the modelled fields, counted straight from the input.
    // Sparse (a block holds a few dozen distinct exponents): a dense 2 KiB histogram per
    // block and field would be fresh memory the size of a sixth of a BF16 tensor.
    // Field by field, without clearing four dense histograms per block and field and
    // scanning every counter back (the dense count's fixed cost): the same histograms
    // as `Layout::count_sparse` gives per block.
    let mut by_field: Vec<Vec<SparseHist>> = (0..bits.len())
        .map(|f| match by_blocks[f] {
            true => count_blocks(layout, data, f, 1 << plan_log2),
            false => Vec::new(),
        })
        .collect();
    // The fast level's one-table fields: one histogram per chunk, no per-block counters
    // to clear and scan.
    let mut by_chunk: Vec<Vec<SparseHist>> = vec![Vec::new(); bits.len()];
    if one_table.contains(&true) {
        let hists: Vec<Vec<SparseHist>> = data
            .par_chunks(chunk_bytes)
            .map(|chunk| layout.count_sparse(chunk, &one_table))
            .collect();
        for chunk in hists {
            for (field, h) in by_chunk.iter_mut().zip(chunk) {
                field.push(h);
            }
        }
    }
    // At the default level table changes between blocks cost what they cost the decoder
    // (see SWITCH_BITS); the fast and max levels plan by size alone.
    let switch_bits = if opts.effort == Effort::Default {
        SWITCH_BITS
    } else {
        0.0
    };
    let mut encoders: Vec<StreamEncoder> = (0..bits.len())
        .map(|f| {
            if !modelled[f] {
                return StreamEncoder::packed(bits[f]);
            }
            if one_table[f] {
                let mut encoder =
                    StreamEncoder::plan_one_table(&by_chunk[f], bits[f], opts.chunk_log2);
                encoder.mark_raw(&by_chunk[f], opts.chunk_log2);
                return encoder;
            }
            let blocks = std::mem::take(&mut by_field[f]);
            let mut encoder = StreamEncoder::plan_sparse(
                &blocks,
                bits[f],
                plan_log2,
                opts.chunk_log2,
                opts.effort,
                switch_bits,
            );
            if encoder.can_refine(opts.block_log2) {
                let fine = count_blocks(layout, data, f, 1 << opts.block_log2);
                let coarse = Coarse {
                    hists: &blocks,
                    shift: plan_log2 - opts.block_log2,
                };
                let costs = encoder.refine(&fine, opts.block_log2, opts.chunk_log2, Some(coarse));
                encoder.mark_raw_with_costs(&fine, opts.block_log2, costs.as_deref());
            } else if plan_log2 > opts.block_log2 && encoder.may_have_raw(&blocks, plan_log2) {
                // Raw blocks are chosen on the short blocks (rows of FP16 precision
                // amid near-uniform low bytes are a few hundred symbols).
                let fine = count_blocks(layout, data, f, 1 << opts.block_log2);
                encoder.mark_raw(&fine, opts.block_log2);
            } else {
                encoder.mark_raw(&blocks, plan_log2);
            }
            encoder
        })
        .collect();
    if layout.is_joint() && encoders[0].is_packed() {
        // The sample missed that the joint first field has more distinct values than a
        // table holds (or codes no smaller than packing after all): the base layout.
        return encode_split(base, false, data, opts);
    }

    // Pass 2: code every chunk of every field.
    let code = |encoders: &[StreamEncoder]| -> Result<Vec<CodedStream>, EntropyError> {
        let pieces: Vec<Vec<Vec<u8>>> = data
            .par_chunks(chunk_bytes)
            .enumerate()
            .map(|(c, chunk)| {
                FieldBuffers::with(|bufs| {
                    if let (Layout::Bf16 | Layout::Bf16Joint, [exp, residual]) = (layout, encoders)
                    {
                        if residual.is_packed() {
                            // The common BF16 case: pack the residual while splitting.
                            let n = chunk.len() / 2;
                            let buf = &mut bufs.bufs[0];
                            grow(buf, n);
                            let mut packed = crate::recycle::buffer_filled((7 * n).div_ceil(8));
                            crate::float_split::split_bf16_packed_into(
                                layout.is_joint(),
                                chunk,
                                &mut buf[..n],
                                &mut packed,
                            );
                            return Ok(vec![exp.encode_chunk(c, &buf[..n])?, packed]);
                        }
                    }
                    let fields = bufs.split(layout, chunk);
                    encoders
                        .iter()
                        .zip(fields)
                        .map(|(e, f)| e.encode_chunk(c, f))
                        .collect()
                })
            })
            .collect::<Result<_, _>>()?;
        // Transpose chunk-major pieces to field-major without copying them.
        let mut by_field: Vec<Vec<Vec<u8>>> =
            vec![Vec::with_capacity(pieces.len()); encoders.len()];
        for chunk_pieces in pieces {
            for (f, p) in chunk_pieces.into_iter().enumerate() {
                by_field[f].push(p);
            }
        }
        Ok(encoders
            .iter()
            .zip(by_field)
            .map(|(e, p)| e.assemble(p))
            .collect())
    };
    let mut streams = code(&encoders)?;
    // The estimate can be wrong at the margin: never keep a coded field that is larger
    // than packing it.
    let n = data.len() / esize;
    let mut repack = false;
    for (f, s) in streams.iter().enumerate() {
        if !encoders[f].is_packed() && s.len() > 1 + crate::entropy::bitpack::packed_len(n, bits[f])
        {
            encoders[f] = StreamEncoder::packed(bits[f]);
            repack = true;
        }
    }
    if repack {
        streams = code(&encoders)?;
    }
    Ok(EncodedTensor {
        codec: Codec::Split(layout),
        chunk_log2: opts.chunk_log2,
        streams,
    })
}

/// One sparse histogram of field `f` per block of `block_len` elements of `data`,
/// counted in pieces of [`FINE_PIECE`] blocks, each piece on one thread.
fn count_blocks(layout: Layout, data: &[u8], f: usize, block_len: usize) -> Vec<SparseHist> {
    let pieces: Vec<Vec<SparseHist>> = data
        .par_chunks(block_len * layout.element_size() * FINE_PIECE)
        .map(|piece| layout.count_sparse_blocks(piece, f, block_len))
        .collect();
    pieces.into_iter().flatten().collect()
}
