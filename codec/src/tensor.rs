//! Tensor codec (FORMAT.md §4): turns one tensor's bytes into streams and back.
//!
//! Float tensors are split into fields ([`Layout`]), each field coded as one entropy
//! stream with a common chunk length, so chunk `c` of every stream covers the same
//! elements and chunks decode in parallel. Other dtypes go through zstd. Whatever is not
//! smaller than the original is stored as it is.

use rayon::prelude::*;

use crate::container::STREAM_ALIGN;
use crate::dtype::Dtype;
use crate::entropy::rans::{F16Merge, RawSpan};
use crate::entropy::stream::{
    sparse_entropy_bits, Coarse, CodedStream, Effort, SparseHist, StreamDecoder, StreamEncoder,
    StreamKind,
};
use crate::entropy::EntropyError;
use crate::float_split::{ByteField, Layout, MAX_FIELDS};

/// How a tensor's bytes are stored (index field `codec`, FORMAT.md §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// One stream holding the original bytes.
    Stored,
    /// One zstd frame of the original bytes.
    Zstd,
    /// Float split: one entropy stream per field of the dtype's [`Layout`].
    Split(Layout),
}

impl Codec {
    /// The byte that identifies the codec in the index.
    pub fn id(self) -> u8 {
        match self {
            Self::Stored => 0,
            Self::Zstd => 1,
            Self::Split(Layout::Bf16) => 2,
            Self::Split(Layout::F16) => 3,
            Self::Split(Layout::F32) => 4,
            Self::Split(Layout::F8) => 5,
            Self::Split(Layout::Bf16Joint) => 6,
            Self::Split(Layout::F16Joint) => 7,
            Self::Split(Layout::F32Joint) => 8,
        }
    }

    /// The format minor version (FORMAT.md §8) that introduced the codec: a file that
    /// uses it says at least this minor version in its preamble.
    pub fn minor_version(self) -> u16 {
        match self {
            Self::Split(layout) if layout.is_joint() => 1,
            _ => 0,
        }
    }

    /// Inverse of [`Self::id`].
    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::Stored,
            1 => Self::Zstd,
            2 => Self::Split(Layout::Bf16),
            3 => Self::Split(Layout::F16),
            4 => Self::Split(Layout::F32),
            5 => Self::Split(Layout::F8),
            6 => Self::Split(Layout::Bf16Joint),
            7 => Self::Split(Layout::F16Joint),
            8 => Self::Split(Layout::F32Joint),
            _ => return None,
        })
    }

    /// Number of streams the codec stores.
    pub fn stream_count(self) -> usize {
        match self {
            Self::Stored | Self::Zstd => 1,
            Self::Split(layout) => layout.field_bits().len(),
        }
    }

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Zstd => "zstd",
            Self::Split(Layout::Bf16) => "split-bf16",
            Self::Split(Layout::F16) => "split-f16",
            Self::Split(Layout::F32) => "split-f32",
            Self::Split(Layout::F8) => "split-f8",
            Self::Split(Layout::Bf16Joint) => "split-bf16-joint",
            Self::Split(Layout::F16Joint) => "split-f16-joint",
            Self::Split(Layout::F32Joint) => "split-f32-joint",
        }
    }
}

/// Errors of the tensor codec.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TensorError {
    /// A stream failed to parse or decode.
    #[error("stream {stream}: {source}")]
    Stream {
        /// Which stream of the tensor.
        stream: usize,
        /// What went wrong.
        #[source]
        source: EntropyError,
    },
    /// The zstd frame is corrupt or decodes to the wrong size.
    #[error("zstd stream: {0}")]
    Zstd(#[from] ZstdError),
    /// The stored stream has the wrong size.
    #[error("stored stream is {found} bytes, expected {expected}")]
    StoredSize {
        /// Bytes found.
        found: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// The index gives the codec another number of streams than it has.
    #[error("bad codec parameters: {codec} has {found} streams, expected {expected}")]
    StreamCount {
        /// The codec's name.
        codec: &'static str,
        /// Streams given.
        found: usize,
        /// Streams the codec has.
        expected: usize,
    },
    /// The chunk length exponent is outside [`CHUNK_LOG2_RANGE`].
    #[error("chunk length exponent {found} outside {min}..={max}")]
    ChunkLog2 {
        /// The exponent.
        found: u8,
        /// Smallest allowed.
        min: u8,
        /// Largest allowed.
        max: u8,
    },
    /// The block length exponent of [`EncodeOptions`] is outside what its chunks allow.
    #[error("block length exponent {found} outside {min}..={max}")]
    BlockLog2 {
        /// The exponent.
        found: u8,
        /// Smallest allowed.
        min: u8,
        /// Largest allowed (the chunk length exponent).
        max: u8,
    },
    /// The tensor's size is not a whole number of elements of its float layout.
    #[error(
        "bad codec parameters: {len} bytes is not a whole number of {element_size}-byte elements"
    )]
    PartialElement {
        /// Tensor bytes.
        len: usize,
        /// Element size.
        element_size: usize,
    },
    /// The output buffer does not have the tensor's size.
    #[error("output buffer is {found} bytes, tensor is {expected}")]
    OutputSize {
        /// Buffer bytes.
        found: usize,
        /// Tensor bytes.
        expected: usize,
    },
    /// The receiver of decoded pieces stopped the decode (its own error says why).
    #[error("the receiver of decoded pieces stopped the decode")]
    Stopped,
}

/// A zstd frame that is not exactly one frame of the expected size.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZstdError {
    /// zstd cannot find the frame's end.
    #[error("bad frame: {reason}")]
    BadFrame {
        /// zstd's name for the error.
        reason: &'static str,
    },
    /// Bytes follow the first frame.
    #[error("the first frame ends at byte {frame_end} of {len}: trailing bytes or a second frame")]
    TrailingBytes {
        /// Where the first frame ends.
        frame_end: usize,
        /// Stream length.
        len: usize,
    },
    /// The frame header declares another size than the index.
    #[error("frame declares {declared} bytes, expected {expected}")]
    DeclaredSize {
        /// Size in the frame header.
        declared: u64,
        /// Size in the index.
        expected: u64,
    },
    /// The frame header cannot be read.
    #[error("unreadable frame header")]
    UnreadableHeader,
    /// The frame decodes to another size than expected.
    #[error("decoded {found} bytes, expected {expected}")]
    DecodedSize {
        /// Bytes it decoded to (for a frame that ran short while streaming: at least
        /// the bytes before the failure).
        found: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// The frame holds more bytes than expected.
    #[error("frame holds more than {expected} bytes")]
    TooLong {
        /// Bytes expected.
        expected: u64,
    },
    /// zstd's decoder failed; its own message.
    #[error("{0}")]
    Decoder(String),
}

/// Smallest and largest chunk length exponent a file may declare (FORMAT.md §4.2).
pub const CHUNK_LOG2_RANGE: std::ops::RangeInclusive<u8> = 10..=22;
/// Largest piece size of [`TensorDecoder::decode_overlapped`].
const OVERLAP_PIECE_BYTES: usize = 8 << 20;
/// Output bytes per merge step when a one-thread decode hands the output to its caller
/// step by step: half of a 32 KiB L1 data cache, so that the caller (the checksum) reads
/// each step from L1 instead of a whole chunk pair (2 MiB of F32) from L3.
const SINK_STEP_BYTES: usize = 16 << 10;

/// Default chunk length exponent: 262 144 elements per chunk. Longer chunks spend less on
/// rANS states (0.006 instead of 0.018 bit per symbol); a multi-GB model still has
/// thousands of chunks for CPU threads and GPU warps.
pub const DEFAULT_CHUNK_LOG2: u8 = 18;

/// Default block length exponent: streams with several tables get blocks of 256
/// elements (the tables are searched on blocks of 2048, `PLAN_BLOCK_LOG2`, then refined),
/// and each stream keeps longer blocks where they code smaller. Format 1.3's run-coded
/// block ids cost a few bits per change of table instead of a byte per block, so short
/// blocks follow the weights' scale along a tensor (rows of 384 in MiniLM): MiniLM's F32
/// file 65 KB smaller than 1.2's blocks of 2048, the other dtypes 12–21 KB smaller
/// (BENCHMARKS.md, fifteenth session).
pub const DEFAULT_BLOCK_LOG2: u8 = 8;
/// Shortest blocks the encoder's table search runs on: shorter ones (the default) are
/// planned by refining its tables ([`StreamEncoder::refine`]).
const PLAN_BLOCK_LOG2: u8 = 11;
/// Block length exponent of the archival setting.
pub const MAX_BLOCK_LOG2: u8 = 8;

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

/// What the default level's FP8 plans charge a change of table from one block to the
/// next, in bits beyond its id ([`StreamEncoder::plan_sparse`]). An FP8 decode
/// is its rANS loop (~89 % of its instructions), and each change costs that loop ~0.2 µs
/// (~700 cycles) on Zen 4 while the new table's 16 KiB of slot entries come from L2;
/// MiniLM's FP8 files changed tables within chunks 6,071 (E4M3) and 16,037 (E5M2) times per
/// decode, nearly all in the word embedding. At 200 bits (25 bytes) they change 288 times: MiniLM E4M3 75.395 → 75.449 %,
/// E5M2 69.194 → 69.238 % (ZipNN: 75.95 / 69.80 %), one-thread decode by CPU time +3.9 to
/// +9.1 % on both vector paths, D1 read misses −41 / −59 % (BENCHMARKS.md, twenty-third
/// session, fp823). 25 bits left 1,151 / 1,333 changes and about two thirds of the gain;
/// 1,000 bits 97 / 87 changes for 0.03 more points and no measured gain over 200.
const FP8_SWITCH_BITS: f64 = 200.0;

/// Short blocks whose histograms one task of the refinement's count takes.
const FINE_PIECE: usize = 64;

/// Splits `layout`'s fields into streams; with `allow_joint`, the layout's joint variant
/// instead where the sample says it codes smaller.
fn encode_split(
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
    // FP8 at the default level: table changes between blocks cost what they cost the
    // decoder (see FP8_SWITCH_BITS); every other field is planned by size alone.
    let switch_bits = if base == Layout::F8 && opts.effort == Effort::Default {
        FP8_SWITCH_BITS
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

/// Per-thread field buffers, reused across chunks and tensors: a fresh chunk-sized
/// allocation per chunk would cost a page fault per 4 KiB.
#[derive(Default)]
struct FieldBuffers {
    /// Encoder: one buffer per field.
    bufs: [Vec<u16>; MAX_FIELDS],
    /// Decoder: two buffers per field, for a pair of chunks.
    pairs: [[Vec<u16>; 2]; MAX_FIELDS],
    /// Decoder: the same for rANS-coded fields that the merge reads as bytes.
    byte_pairs: [[Vec<u8>; 2]; MAX_FIELDS],
}

/// Makes `buf` at least `n` long: buffers only grow, to the longest piece decoded so far.
fn grow<T: Copy + Default>(buf: &mut Vec<T>, n: usize) {
    if buf.len() < n {
        buf.resize(n, T::default());
    }
}

thread_local! {
    static FIELD_BUFFERS: std::cell::RefCell<FieldBuffers> = std::cell::RefCell::new(FieldBuffers::default());
}

impl FieldBuffers {
    /// Runs `f` with this thread's buffers (never re-entered: `f` does no nested work).
    fn with<R>(f: impl FnOnce(&mut FieldBuffers) -> R) -> R {
        FIELD_BUFFERS.with(|b| f(&mut b.borrow_mut()))
    }

    fn split(&mut self, layout: Layout, chunk: &[u8]) -> Vec<&mut [u16]> {
        let n = chunk.len() / layout.element_size();
        let count = layout.field_bits().len();
        let mut views: Vec<&mut [u16]> = self.bufs[..count]
            .iter_mut()
            .map(|b| {
                grow(b, n);
                &mut b[..n]
            })
            .collect();
        layout.split(chunk, &mut views);
        views
    }
}

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

/// The system's page size: 4 KiB on x86-64, but 16 or 64 KiB on some ARM kernels, where
/// `mincore` and `madvise` refuse addresses aligned to 4 KiB only.
#[cfg(target_os = "linux")]
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions and only reads system configuration.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(page)
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096)
    })
}

/// Maps the pages of an output slice before it is written, in one system call
/// (`MADV_POPULATE_WRITE`, Linux ≥ 5.14) instead of one page fault per 4 KiB: fresh
/// output memory (a loader's new tensor) otherwise costs a trap per page inside the
/// merge loop, measured at about a third of a cold decode on a KVM guest. Only whole pages
/// inside `dst` are touched, and only from the first page that is not mapped yet
/// ([`first_unmapped_page`]): on memory that is mapped already (a reused output buffer)
/// the kernel would still walk every page, measured at ~8 % of a warm one-thread decode.
/// On older kernels the call fails and the pages fault in as before.
pub(crate) fn prefault(dst: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        let page = page_size();
        if dst.len() < 16 * page {
            return;
        }
        let start = dst.as_mut_ptr() as usize;
        let first = start.next_multiple_of(page);
        let end = (start + dst.len()) / page * page;
        let Some(first) = first_unmapped_page(first, end, page) else {
            return;
        };
        if end > first {
            // Timed while a huge-page advice is out: a slow populate ends it.
            let timed = crate::huge_pages::timing()
                .then(crate::huge_pages::thread_cpu)
                .flatten();
            // SAFETY: [first, end) lies inside `dst`, which this thread holds exclusively;
            // MADV_POPULATE_WRITE changes no byte of memory that is mapped (it maps missing
            // pages as a write fault would: zero for fresh anonymous memory, a private
            // copy of file pages), so the slice's contents are unchanged.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    end - first,
                    libc::MADV_POPULATE_WRITE,
                );
            }
            if let (Some(t0), Some(t1)) = (timed, timed.and(crate::huge_pages::thread_cpu())) {
                crate::huge_pages::note_populate((end - first) / page, t1.saturating_sub(t0));
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = dst;
}

/// [`prefault`] for `dst`, one task's share of the slice starting at `piece_start` of an
/// output ending at `output_end`, decoded by several tasks at once in shares of `share`
/// bytes. While an output is advised for huge pages ([`crate::huge_pages::timing`]), the
/// part of `dst` in a 2 MiB block that starts in an earlier task's share of the same slice
/// (and ends inside the output, so it was advised) is left to that task: populating any
/// page of an advised block maps the whole block, and two threads faulting the same empty
/// block at once each allocate and zero a huge page, of which one is thrown away (a
/// 2-thread load of MiniLM BF16 allocated 11–20 huge pages for the 10 it mapped; 1 thread:
/// 10). The task owning the block populates it first thing; this one's decoder writes its
/// first output byte only after decoding its chunk pair's fields (FP8 writes as it
/// decodes), and a write that comes first faults the block in, as before. Only where the
/// owner asks for enough of the block that its populate is judged
/// ([`crate::huge_pages::note_populate`]): otherwise a dear huge page would go unnoticed
/// and the advice would stay. Only pages are mapped here or not: no byte of the output
/// depends on it.
pub(crate) fn prefault_task(dst: &mut [u8], piece_start: usize, share: usize, output_end: usize) {
    #[cfg(target_os = "linux")]
    if crate::huge_pages::timing() {
        let skip = head_owned_by_earlier(
            dst.as_ptr() as usize,
            dst.len(),
            Shares {
                start: piece_start,
                len: share,
                output_end,
            },
            crate::huge_pages::HUGE,
            crate::huge_pages::JUDGED_PAGES * page_size(),
        );
        prefault(&mut dst[skip..]);
        return;
    }
    let _ = (piece_start, share, output_end);
    prefault(dst);
}

/// A slice of an output cut into shares of `len` bytes from `start`, the output ending at
/// `output_end`.
#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
struct Shares {
    start: usize,
    len: usize,
    output_end: usize,
}

/// How many bytes at the head of a share `[start, start + len)` of `shares` lie in a
/// `block`-aligned block that starts in an earlier share (at or after `shares.start`,
/// before `start`), ends by `shares.output_end`, and of which that share holds at least
/// `judged` bytes: that share's task populates it (see [`prefault_task`]). 0 otherwise.
#[cfg(target_os = "linux")]
fn head_owned_by_earlier(
    start: usize,
    len: usize,
    shares: Shares,
    block: usize,
    judged: usize,
) -> usize {
    let first = start / block * block;
    if first >= start || first < shares.start || shares.len == 0 {
        return 0;
    }
    let inside = first
        .checked_add(block)
        .is_some_and(|e| e <= shares.output_end);
    // The end of the share holding `first`.
    let owner_end = shares.start + ((first - shares.start) / shares.len + 1) * shares.len;
    if inside && owner_end - first >= judged {
        (first + block - start).min(len)
    } else {
        0
    }
}

/// The first page of the page-aligned range `[first, end)` that is not resident
/// (`mincore`), `Some(first)` if that cannot be told, `None` if every page is. `mincore`
/// reads the page tables without faulting anything in: a few nanoseconds per page, against
/// hundreds for `MADV_POPULATE_WRITE` on a page that is mapped already.
#[cfg(target_os = "linux")]
fn first_unmapped_page(first: usize, end: usize, page: usize) -> Option<usize> {
    const WINDOW: usize = 1024;
    let mut status = [0u8; WINDOW];
    let mut at = first;
    while at < end {
        let pages = ((end - at) / page).min(WINDOW);
        // SAFETY: `[at, at + pages·page)` lies inside the caller's slice (page-aligned,
        // within `[first, end)`), and `status` has room for `pages` bytes; mincore only
        // writes `status`.
        let ok = unsafe {
            libc::mincore(
                at as *mut libc::c_void,
                pages * page,
                status.as_mut_ptr().cast(),
            )
        } == 0;
        if !ok {
            return Some(at);
        }
        if let Some(k) = status[..pages].iter().position(|&s| s & 1 == 0) {
            return Some(at + k * page);
        }
        at += pages * page;
    }
    None
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

/// Order-0 entropy of a histogram, in bits per symbol.
pub(crate) fn entropy_bits(hist: &[u64]) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let t = total as f64;
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| -(c as f64 / t) * (c as f64 / t).log2())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(dtype: &Dtype, data: &[u8], opts: &EncodeOptions) -> EncodedTensor {
        let enc = encode(dtype, data, opts);
        let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
        let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let dec = TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &streams).unwrap();
        let mut out = vec![0xA5u8; data.len()];
        dec.decode(&mut out).unwrap();
        assert_eq!(out, data, "{dtype} via {}", enc.codec.name());
        enc
    }

    fn gaussian_bf16(n: usize) -> Vec<u8> {
        let mut seed = 42u64;
        (0..n)
            .flat_map(|_| {
                let mut acc = 0.0f32;
                for _ in 0..4 {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    acc += (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                }
                let bits = (acc * 0.03).to_bits();
                ((bits >> 16) as u16).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn bf16_weights_compress_and_round_trip() {
        let data = gaussian_bf16(300_001);
        let opts = EncodeOptions {
            chunk_log2: 14,
            ..Default::default()
        };
        let enc = round_trip(&Dtype::BF16, &data, &opts);
        assert_eq!(enc.codec, Codec::Split(Layout::Bf16));
        assert!(
            enc.coded_len() * 100 < data.len() * 72,
            "{} of {}",
            enc.coded_len(),
            data.len()
        );
    }

    /// How a piece test cuts a tensor: the unit's size in bytes (None where the codec has
    /// no chunks), the decoder of whole units at an offset, units per piece, and the
    /// element counts to try.
    struct PieceUnit {
        unit_bytes: fn(&TensorDecoder<'_>) -> Option<usize>,
        decode: fn(&TensorDecoder<'_>, usize, &mut [u8]) -> Result<(), TensorError>,
        unit_elements: usize,
        units_per_piece: [usize; 2],
        lengths: &'static [usize],
    }

    /// Decodes every tensor of `unit`'s lengths piece by piece, last piece first, and checks
    /// the result against the whole tensor; then that misaligned, oversized and
    /// out-of-range pieces are refused.
    fn check_pieces(unit: &PieceUnit) {
        let opts = EncodeOptions {
            chunk_log2: 10,
            block_log2: 10,
            ..EncodeOptions::default()
        };
        for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32, Dtype::F8E4M3] {
            for &n in unit.lengths {
                let width = dtype.element_size().unwrap();
                let data: Vec<u8> = gaussian_bf16(n * width / 2 + 1)[..n * width].to_vec();
                let enc = round_trip(&dtype, &data, &opts);
                let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
                let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
                let dec =
                    TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &streams).unwrap();
                let Some(unit_bytes) = (unit.unit_bytes)(&dec) else {
                    assert!((unit.decode)(&dec, 0, &mut vec![0; data.len()]).is_err());
                    continue;
                };
                assert_eq!(unit_bytes, unit.unit_elements * width);
                for units in unit.units_per_piece {
                    let piece = unit_bytes * units;
                    let mut out = vec![0xA5u8; data.len()];
                    let starts: Vec<usize> = (0..data.len()).step_by(piece).collect();
                    for &at in starts.iter().rev() {
                        let end = (at + piece).min(data.len());
                        (unit.decode)(&dec, at, &mut out[at..end]).unwrap();
                    }
                    assert!(out == data, "{dtype} n {n} units {units}");
                }
                let mut out = vec![0u8; unit_bytes + 2];
                if data.len() > unit_bytes + 2 {
                    assert!((unit.decode)(&dec, 0, &mut out).is_err());
                }
                assert!((unit.decode)(&dec, unit_bytes / 2, &mut out[..unit_bytes]).is_err());
                assert!((unit.decode)(&dec, data.len(), &mut out[..2]).is_err());
            }
        }
    }

    /// Pieces of whole chunk pairs, decoded in any order on this thread, give what a whole
    /// decode gives (every layout, a short last pair, a tensor shorter than one pair);
    /// other ranges, and codecs without chunks, are refused.
    #[test]
    fn pieces_decode_what_the_whole_tensor_decodes() {
        check_pieces(&PieceUnit {
            unit_bytes: |dec| dec.pair_bytes(),
            decode: |dec, at, out| dec.decode_piece(at, out),
            unit_elements: 2 * 1024,
            units_per_piece: [1, 2],
            lengths: &[5000, 2048, 700],
        });
    }

    /// Pieces of whole chunks (not pairs), in any order, give what a whole decode gives
    /// (every layout, a short last chunk, a tensor shorter than one chunk, pieces that
    /// start on the second chunk of a pair); other ranges are refused.
    #[test]
    fn chunk_pieces_decode_what_the_whole_tensor_decodes() {
        check_pieces(&PieceUnit {
            unit_bytes: |dec| dec.chunk_bytes(),
            decode: |dec, at, out| dec.decode_chunks(at, out),
            unit_elements: 1024,
            units_per_piece: [1, 3],
            lengths: &[5000, 2048, 1024, 700],
        });
    }

    /// With one thread, `decode_overlapped` hands the output over in merge steps of at
    /// most [`SINK_STEP_BYTES`] (an FP8 chunk pair coded straight into its bytes: the
    /// pair), in order and all of it, and the bytes are the tensor's: every layout, coded
    /// and packed byte fields, a short last pair and a tail that is no whole step; with
    /// two threads, whole pieces as before.
    #[test]
    fn one_thread_overlapped_decode_hands_over_every_step_in_order() {
        let opts = EncodeOptions {
            chunk_log2: 14,
            ..EncodeOptions::default()
        };
        let n = 3 * (1 << 14) + 777;
        for (dtype, skew) in [
            (Dtype::BF16, false),
            (Dtype::F16, false),
            (Dtype::F32, false),
            (Dtype::F32, true),
            (Dtype::F8E4M3, false),
        ] {
            let width = dtype.element_size().unwrap();
            let mut data: Vec<u8> = gaussian_bf16(n * width / 2 + 1)[..n * width].to_vec();
            if skew {
                // Few values in both low mantissa bytes: the writer codes them, and the
                // decoder decodes them into bytes.
                for e in data.chunks_exact_mut(4) {
                    e[0] &= 0x0F;
                    e[1] &= 0x07;
                }
            }
            let enc = round_trip(&dtype, &data, &opts);
            assert!(matches!(enc.codec, Codec::Split(_)), "{dtype}");
            let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
            let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let dec = TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &streams).unwrap();
            if skew {
                let kinds = dec.stream_kinds();
                assert!(
                    matches!(kinds[2], StreamKind::Rans(_))
                        && matches!(kinds[3], StreamKind::Rans(_)),
                    "{kinds:?}"
                );
            }
            let pair = dec.pair_bytes().unwrap();
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut out = vec![0xA5u8; data.len()];
                let out_start = out.as_ptr() as usize;
                let mut pieces: Vec<(usize, usize)> = Vec::new();
                pool.install(|| {
                    dec.decode_overlapped(&mut out, &mut |piece| {
                        pieces.push((piece.as_ptr() as usize - out_start, piece.len()));
                    })
                })
                .unwrap();
                assert!(out == data, "{dtype} {threads} threads");
                let mut at = 0;
                for &(start, len) in &pieces {
                    assert_eq!(start, at, "{dtype} {threads} threads: out of order");
                    at += len;
                }
                assert_eq!(at, data.len(), "{dtype} {threads} threads");
                let largest = pieces.iter().map(|p| p.1).max().unwrap();
                // FP8 takes no steps (its one field is decoded straight into the output)
                // and F32 none by choice (see `decode_overlapped`): one pair per piece.
                match (threads, matches!(dtype, Dtype::F8E4M3 | Dtype::F32)) {
                    (1, false) => assert!(largest <= SINK_STEP_BYTES, "{dtype}: {largest}"),
                    (1, true) => assert!(largest <= pair, "{dtype}: {largest}"),
                    _ => assert!(largest > SINK_STEP_BYTES, "{dtype}: {largest}"),
                }
            }
        }
    }

    /// Byte fields with raw blocks (mode 5) amid coded ones: the merge reads the raw
    /// runs where they lie in the payloads, in parts cut at the runs' ends, whole chunks,
    /// one-thread steps and pieces alike (F32's two mantissa bytes, F16's first field).
    #[test]
    fn raw_runs_of_byte_fields_are_merged_in_place() {
        let opts = EncodeOptions {
            chunk_log2: 14,
            ..EncodeOptions::default()
        };
        let n = 3 * (1 << 14) + 777;
        let mut next = crate::entropy::xorshift(7);
        // Rows of 1,000 elements: every third one noise in the fields the decoder
        // reads as bytes (raw blocks), the others few values (coded blocks).
        let noisy = |i: usize| (i / 1000) % 3 == 1;
        let f32s: Vec<u8> = gaussian_bf16(2 * n)
            .chunks_exact(4)
            .enumerate()
            .flat_map(|(i, e)| {
                let r = next();
                let (lo, mid) = if noisy(i) {
                    (r as u8, (r >> 8) as u8)
                } else {
                    (r as u8 & 0x0F, (r >> 8) as u8 & 0x07)
                };
                [lo, mid, e[2], e[3]]
            })
            .collect();
        let f16s: Vec<u8> = gaussian_bf16(n)
            .chunks_exact(2)
            .enumerate()
            .flat_map(|(i, e)| {
                let r = next();
                let hi = if noisy(i) { r as u8 } else { e[1] };
                [e[0], hi]
            })
            .collect();
        for (dtype, data) in [(Dtype::F32, f32s), (Dtype::F16, f16s)] {
            let enc = round_trip(&dtype, &data, &opts);
            let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
            let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let raw_fields = owned.iter().filter(|s| s.first() == Some(&5)).count();
            let expected = if dtype == Dtype::F32 { 2 } else { 1 };
            assert_eq!(raw_fields, expected, "{dtype}: streams with raw blocks");
            let dec = TensorDecoder::new(enc.codec, enc.chunk_log2, data.len(), &streams).unwrap();
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut out = vec![0xA5u8; data.len()];
                pool.install(|| dec.decode(&mut out)).unwrap();
                assert!(out == data, "{dtype} {threads} threads: decode");
                let mut out = vec![0x5Au8; data.len()];
                let mut seen = 0;
                pool.install(|| dec.decode_overlapped(&mut out, &mut |p| seen += p.len()))
                    .unwrap();
                assert!(
                    out == data && seen == data.len(),
                    "{dtype} {threads} threads"
                );
            }
        }
    }

    #[test]
    fn every_dtype_round_trips_including_odd_sizes() {
        let data = gaussian_bf16(5000);
        for name in [
            "BF16", "F16", "F32", "F8_E4M3", "F8_E5M2", "I64", "U8", "BOOL", "F64", "X9",
        ] {
            for len in [0, 1, 2, 3, 4, 8, 63, 64, 1000, 9999, 10000] {
                for opts in [EncodeOptions::default(), EncodeOptions::fast()] {
                    round_trip(&Dtype::parse(name), &data[..len], &opts);
                }
            }
        }
        round_trip(&Dtype::F32, &data, &EncodeOptions::max());
    }

    /// The tensor's stream kinds, from its encoded form.
    fn kinds(enc: &EncodedTensor, len: usize) -> Vec<StreamKind> {
        let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
        let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        TensorDecoder::new(enc.codec, enc.chunk_log2, len, &streams)
            .unwrap()
            .stream_kinds()
    }

    /// The fast level round-trips every float dtype bit-exactly over several chunks,
    /// specials included (NaNs with payloads, ±0.0, ±inf, subnormals); it gives one table
    /// to a field of steady statistics and keeps several for one whose scale drifts from
    /// block to block, as the default level does.
    #[test]
    fn fast_level_round_trips_and_keeps_several_tables_where_they_pay() {
        let fast = EncodeOptions {
            chunk_log2: 14,
            ..EncodeOptions::fast()
        };
        // F32 weights whose scale changes every 2048 elements (period 3 blocks, so the
        // encoder's sample of every 16th block sees every scale).
        let noise = gaussian_bf16(128 * 2048);
        let mut f32s: Vec<u8> = noise
            .as_chunks::<2>()
            .0
            .iter()
            .enumerate()
            .flat_map(|(i, w)| {
                let low = (i as u32).wrapping_mul(2_654_435_761) >> 16;
                let x = f32::from_bits(u32::from(u16::from_le_bytes(*w)) << 16 | low);
                (x * [1.0f32, 1e-3, 30.0][(i / 2048) % 3]).to_le_bytes()
            })
            .collect();
        let specials: [u32; 8] = [
            0x7FC0_0000,
            0xFFC0_0001,
            0x7F80_0001,
            0x8000_0000,
            0x0000_0000,
            0x7F80_0000,
            0xFF80_0000,
            0x0000_0001,
        ];
        for (k, s) in specials.iter().enumerate() {
            let at = 4 * (k * 30_011 % (f32s.len() / 4));
            f32s[at..at + 4].copy_from_slice(&s.to_le_bytes());
        }
        let enc = round_trip(&Dtype::F32, &f32s, &fast);
        let multi = kinds(&enc, f32s.len());
        assert!(
            matches!(multi[0], StreamKind::Rans(t) if t >= 2),
            "{multi:?}"
        );
        let default = round_trip(&Dtype::F32, &f32s, &EncodeOptions::default());
        assert!(
            enc.coded_len() as f64 <= default.coded_len() as f64 * 1.01,
            "fast {} vs default {}",
            enc.coded_len(),
            default.coded_len()
        );
        // Steady statistics: one table, and no more than a percent over the default.
        let steady = gaussian_bf16(100_000);
        let enc = round_trip(&Dtype::BF16, &steady, &fast);
        assert_eq!(kinds(&enc, steady.len())[0], StreamKind::Rans(1));
        let default = round_trip(&Dtype::BF16, &steady, &EncodeOptions::default());
        assert!(enc.coded_len() as f64 <= default.coded_len() as f64 * 1.01);
        // Every dtype over the same bytes, odd tails cut off, specials included.
        for name in ["BF16", "F16", "F32", "F8_E4M3", "F8_E5M2"] {
            for len in [f32s.len(), f32s.len() - 3, 70_001, 4097] {
                let dtype = Dtype::parse(name);
                let len = len - len % dtype.element_size().unwrap();
                round_trip(&dtype, &f32s[..len], &fast);
                round_trip(&dtype, &f32s[..len], &EncodeOptions::fast());
            }
        }
    }

    #[test]
    fn incompressible_data_is_stored() {
        let mut seed = 7u64;
        let data: Vec<u8> = (0..4096)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        assert_eq!(
            round_trip(&Dtype::F16, &data, &EncodeOptions::default()).codec,
            Codec::Stored
        );
        assert_eq!(
            round_trip(&Dtype::I32, &data, &EncodeOptions::default()).codec,
            Codec::Stored
        );
    }

    #[test]
    fn decoder_rejects_mismatched_parameters() {
        let data = gaussian_bf16(10_000);
        let enc = encode(&Dtype::BF16, &data, &EncodeOptions::default());
        let owned: Vec<Vec<u8>> = enc.streams.iter().map(CodedStream::to_vec).collect();
        let streams: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        assert!(TensorDecoder::new(enc.codec, 30, data.len(), &streams).is_err());
        assert!(TensorDecoder::new(enc.codec, enc.chunk_log2, data.len() + 2, &streams).is_err());
        assert!(TensorDecoder::new(enc.codec, enc.chunk_log2, data.len() + 1, &streams).is_err());
        assert!(TensorDecoder::new(
            Codec::Split(Layout::F32),
            enc.chunk_log2,
            data.len(),
            &streams
        )
        .is_err());
        assert!(TensorDecoder::new(Codec::Stored, 0, data.len(), &streams[..1]).is_err());
    }

    /// `n` Gaussian-like weights of mean `mean` and standard deviation `std` as `dtype`
    /// (F16, BF16 or F32; the narrow ones truncated), the negative ones scaled by
    /// `negative_scale`. A mean of 1.08 σ makes 86 % of them positive, and the sign then
    /// depends on the magnitude, as in a real embedding with skewed signs.
    fn skewed(dtype: &Dtype, n: usize, mean: f32, std: f32, negative_scale: f32) -> Vec<u8> {
        let mut seed = 0x5157_u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut out = Vec::with_capacity(n * 4);
        for _ in 0..n {
            // Irwin–Hall: six uniforms have variance 1/2.
            let value = mean + ((0..6).map(|_| next()).sum::<f32>() - 3.0) * std * 1.41;
            let value = if value < 0.0 {
                value * negative_scale
            } else {
                value
            };
            let x = value.to_bits();
            match dtype {
                Dtype::F32 => out.extend_from_slice(&x.to_le_bytes()),
                Dtype::F16 => {
                    // F16: normal values only (weights this small never overflow).
                    let exp = ((x >> 23) & 0xFF) as i32 - 127 + 15;
                    let h = if exp <= 0 {
                        (x >> 16) as u16 & 0x8000
                    } else {
                        let mantissa = ((x >> 13) & 0x3FF) as u16;
                        ((x >> 16) as u16 & 0x8000) | ((exp as u16) << 10) | mantissa
                    };
                    out.extend_from_slice(&h.to_le_bytes());
                }
                _ => out.extend_from_slice(&((x >> 16) as u16).to_le_bytes()),
            }
        }
        out
    }

    /// Bits of an optimal Huffman code of the histogram's symbols (a static code over
    /// single symbols can be no shorter).
    fn huffman_bits(hist: &[u64]) -> u64 {
        use std::cmp::Reverse;
        let mut heap: std::collections::BinaryHeap<Reverse<u64>> = hist
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| Reverse(c))
            .collect();
        let mut bits = 0;
        while heap.len() > 1 {
            let (Reverse(a), Reverse(b)) = (heap.pop().unwrap(), heap.pop().unwrap());
            bits += a + b;
            heap.push(Reverse(a + b));
        }
        bits
    }

    /// A lower bound of what ZipNN stores for `data` (`esize`-byte floats): it groups the
    /// bytes of each 256 KiB chunk by position in the element (with or without first
    /// rotating the sign next to the mantissa; the bound takes the smaller) and Huffman
    /// codes each group. Here each group costs its optimal Huffman code under its own
    /// histogram, with no header or table: no such coder does better.
    fn zipnn_lower_bound(data: &[u8], esize: usize) -> usize {
        let grouped_bits = |rotate: bool| -> u64 {
            data.chunks(256 << 10)
                .map(|chunk| {
                    let mut hists = vec![vec![0u64; 256]; esize];
                    for e in chunk.chunks_exact(esize) {
                        let mut w = [0u8; 4];
                        w[..esize].copy_from_slice(e);
                        let mut x = u32::from_le_bytes(w);
                        if rotate {
                            let top = 8 * esize as u32 - 1;
                            x = ((x << 1) | (x >> top)) & (((1u64 << (top + 1)) - 1) as u32);
                        }
                        for (g, h) in hists.iter_mut().enumerate() {
                            h[((x >> (8 * g)) & 0xFF) as usize] += 1;
                        }
                    }
                    hists.iter().map(|h| huffman_bits(h)).sum::<u64>()
                })
                .sum()
        };
        (grouped_bits(false).min(grouped_bits(true)) / 8) as usize
    }

    #[test]
    fn skewed_signs_are_coded_with_the_exponent_and_no_larger_than_zipnn() {
        let n = 600_000;
        let cases = [
            // The issue's case: an F16 embedding 86 % positive.
            (
                Dtype::F16,
                skewed(&Dtype::F16, n, 0.0216, 0.02, 1.0),
                Layout::F16Joint,
            ),
            // Signs balanced but tied to the magnitude: negatives 8 times smaller.
            (
                Dtype::BF16,
                skewed(&Dtype::BF16, n, 0.0, 0.04, 0.125),
                Layout::Bf16Joint,
            ),
            (
                Dtype::F32,
                skewed(&Dtype::F32, n / 2, 0.0216, 0.02, 1.0),
                Layout::F32Joint,
            ),
        ];
        for (dtype, data, joint) in cases {
            let opts = EncodeOptions::default();
            let enc = round_trip(&dtype, &data, &opts);
            let bound = zipnn_lower_bound(&data, joint.element_size());
            let base = Layout::for_dtype(&dtype).unwrap();
            let plain = encode_split(base, false, &data, &opts).unwrap();
            eprintln!(
                "{dtype}: {} {} plain {} bytes {:?}, ZipNN at least {bound} (of {})",
                enc.codec.name(),
                enc.coded_len(),
                plain.coded_len(),
                plain.streams.iter().map(|s| s.len()).collect::<Vec<_>>(),
                data.len()
            );
            assert_eq!(enc.codec, Codec::Split(joint), "{dtype}");
            assert!(
                enc.coded_len() <= bound,
                "{dtype}: {} > {bound}",
                enc.coded_len()
            );
            assert!(
                plain.coded_len() > enc.coded_len(),
                "{dtype}: the sign cost nothing"
            );
        }
        // The issue's case is real: with the sign stored raw, F16 is larger than ZipNN.
        let data = skewed(&Dtype::F16, n, 0.0216, 0.02, 1.0);
        let plain = encode_split(Layout::F16, false, &data, &EncodeOptions::default()).unwrap();
        assert!(plain.coded_len() > zipnn_lower_bound(&data, 2));
    }

    #[test]
    fn symmetric_signs_keep_the_plain_layouts() {
        for (dtype, data) in [
            (Dtype::BF16, gaussian_bf16(200_000)),
            (Dtype::F16, skewed(&Dtype::F16, 200_000, 0.0, 0.02, 1.0)),
            (Dtype::F32, skewed(&Dtype::F32, 100_000, 0.0, 0.02, 1.0)),
        ] {
            let enc = round_trip(&dtype, &data, &EncodeOptions::default());
            assert_eq!(
                enc.codec,
                Codec::Split(Layout::for_dtype(&dtype).unwrap()),
                "{dtype}"
            );
        }
    }

    #[test]
    fn joint_codecs_have_their_own_ids_and_minor_version() {
        for id in 0..=255u8 {
            if let Some(codec) = Codec::from_id(id) {
                assert_eq!(codec.id(), id);
                let joint = matches!(codec, Codec::Split(l) if l.is_joint());
                assert_eq!(codec.minor_version(), u16::from(joint), "{}", codec.name());
                assert_eq!(joint, (6..=8).contains(&id));
            } else {
                assert!(id > 8);
            }
        }
    }

    /// A fresh private anonymous read-write mapping of `len` bytes (no page mapped yet),
    /// which the caller unmaps.
    #[cfg(target_os = "linux")]
    fn fresh_anonymous_map(len: usize) -> *mut libc::c_void {
        // SAFETY: a new mapping at an address the kernel picks: nothing else is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        base
    }

    /// Whether `MADV_POPULATE_WRITE` maps pages here, probed on a mapping of its own
    /// (independently of [`prefault`], which the test below checks).
    #[cfg(target_os = "linux")]
    fn populate_write_works(page: usize) -> bool {
        let len = 4 * page;
        let base = fresh_anonymous_map(len);
        // SAFETY: the fresh mapping just made, advised, probed and unmapped here.
        unsafe {
            let advised = libc::madvise(base, len, libc::MADV_POPULATE_WRITE) == 0;
            let mapped = first_unmapped_page(base as usize, base as usize + len, page).is_none();
            assert_eq!(libc::munmap(base, len), 0);
            advised && mapped
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_huge_block_is_left_to_the_share_it_starts_in() {
        const B: usize = 2 << 20;
        const M: usize = 1 << 20;
        const J: usize = 64 * 4096;
        // A slice of 1 MiB shares starting 1.5 MiB + 16 bytes past a block boundary (like a
        // tensor's memory from malloc), in an output ending far beyond.
        let piece = 5 * B + M + M / 2 + 16;
        let shares = |output_end| Shares {
            start: piece,
            len: M,
            output_end,
        };
        let all = shares(piece + 64 * M);
        // The first share starts the slice: the block before it is an earlier call's.
        assert_eq!(head_owned_by_earlier(piece, M, all, B, J), 0);
        // The second, 1 MiB in, lies wholly in the block starting at 6 B, which begins in
        // the first share, half a MiB before its end.
        assert_eq!(head_owned_by_earlier(piece + M, M, all, B, J), M);
        // A shorter last share: all of it.
        assert_eq!(head_owned_by_earlier(piece + M, 4096, all, B, J), 4096);
        // The third starts in the same block and keeps what lies past it.
        let third = piece + 2 * M;
        assert_eq!(head_owned_by_earlier(third, M, all, B, J), 7 * B - third);
        // A block that runs past the output's end was not advised: populate it all.
        assert_eq!(
            head_owned_by_earlier(piece + M, M, shares(7 * B - 1), B, J),
            0
        );
        // A share starting on a block boundary owns its block.
        let aligned = Shares {
            start: 6 * B,
            ..all
        };
        assert_eq!(head_owned_by_earlier(7 * B, M, aligned, B, J), 0);
        // A block that began before the slice was mapped by an earlier call.
        let late = Shares {
            start: 6 * B + 8,
            ..all
        };
        assert_eq!(head_owned_by_earlier(6 * B + 8 + M, M, late, B, J), 0);
        // The owner would ask for under `judged` bytes of the block (it starts 16 bytes
        // before the owner's end): its populate would not be judged, so populate here too.
        let tight = Shares {
            start: 6 * B - M + 16,
            ..all
        };
        assert_eq!(head_owned_by_earlier(6 * B + 16, M, tight, B, J), 0);
    }

    /// The resident check finds the first page not yet mapped, and prefaulting maps the
    /// rest without changing a byte, also across more pages than one `mincore` window.
    #[cfg(target_os = "linux")]
    #[test]
    fn prefault_maps_only_what_is_missing_and_keeps_contents() {
        let page = page_size();
        let pages = 2500;
        let len = pages * page;
        // Unmapped at the end of the test and used only through the slice below meanwhile.
        let base = fresh_anonymous_map(len);
        // SAFETY: `base` maps `len` writable bytes, zero-filled, owned by this test.
        let buf = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), len) };
        let at = |p: usize| base as usize + p * page;
        let end = at(pages);
        assert_eq!(first_unmapped_page(at(0), end, page), Some(at(0)));
        // Pages 0..1100 written (past the first window of 1024 pages).
        for p in 0..1100 {
            buf[p * page + 7] = (p % 251) as u8 + 1;
        }
        assert_eq!(first_unmapped_page(at(0), end, page), Some(at(1100)));
        prefault(&mut buf[5..]);
        // Every whole page inside the slice is mapped now, unless an emulator (qemu-user
        // ignores most `madvise` advice) or a kernel before 5.14 leaves the pages to fault
        // in, which this test then says; nothing written changed either way.
        if populate_write_works(page) {
            assert_eq!(first_unmapped_page(at(1), end, page), None);
        } else {
            eprintln!(
                "prefault_maps_only_what_is_missing_and_keeps_contents: SKIPPED the mapping \
                 check: MADV_POPULATE_WRITE had no effect here (kernel < 5.14 or emulator)"
            );
        }
        for p in 0..pages {
            let expect = if p < 1100 { (p % 251) as u8 + 1 } else { 0 };
            assert_eq!(buf[p * page + 7], expect, "page {p}");
        }
        assert!(buf[pages * page - 1] == 0 && buf[6] == 0);
        // A mapped range is left alone (no error, nothing changes).
        prefault(buf);
        assert_eq!(buf[7], 1);
        // SAFETY: the mapping made above; `buf` is not used after this.
        assert_eq!(unsafe { libc::munmap(base, len) }, 0);
    }
}
