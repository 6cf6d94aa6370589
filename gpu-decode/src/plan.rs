//! Host preparation (FORMAT.md §7): parse and validate the chosen tensors' streams, copy
//! them into one arena, expand their frequency tables into the kernel's table layout and
//! describe each tensor and each run of chunks for the kernel.
//!
//! Everything the kernel (`kernels/mcz_decode.cu`) and its CPU mirror ([`crate::mirror`])
//! read comes from here, laid out exactly as the `#[repr(C)]` structs below, which match
//! the CUDA structs field for field.

use mcodec::container::{Archive, ContainerError, Part, StreamRef, TensorEntry};
use mcodec::format::{FreqTable, StreamLayout, LANES, MAX_TABLE_SYMBOLS, PROB_SCALE};
use mcodec::tensor::{Codec, CHUNK_LOG2_RANGE};
use mcodec::Layout;
use mcodec::{Dtype, TensorDecoder};
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

/// Warps per CTA (`WARPS` in the kernel).
pub const WARPS: usize = 8;
/// Decode steps staged per warp before a store (`STAGE_STEPS`).
pub const STAGE_STEPS: usize = 8;
/// Elements staged per warp.
pub const STAGE_ELEMS: usize = STAGE_STEPS * LANES;
/// Shared memory of one warp's staging buffer (room for 4-byte elements).
pub const STAGE_BYTES_PER_WARP: usize = STAGE_ELEMS * 4;
/// One expanded table: `u32` entry per symbol index (`start | (freq - 1) << 12`), `u16`
/// symbol value per index ([`table_symbol`]: the bits the symbol sets in the element,
/// shifted down by [`symbol_shift`]), `u8` symbol index per slot.
pub const TABLE_BYTES: usize = 4 * MAX_TABLE_SYMBOLS + 2 * MAX_TABLE_SYMBOLS + PROB_SCALE as usize;
/// Offset of the symbol array inside a table.
pub const TABLE_SYMBOLS_OFF: usize = 4 * MAX_TABLE_SYMBOLS;
/// Offset of the slot array inside a table.
pub const TABLE_SLOTS_OFF: usize = 6 * MAX_TABLE_SYMBOLS;
/// Most fields of a layout.
pub const MAX_FIELDS: usize = 4;
/// Elements a task (one CTA) should cover at least when the launch has chunks to spare,
/// so that copying the tables into shared memory (≤ 45 KiB for 8 tables) stays small
/// beside the output (≥ 1 MiB of BF16).
pub const MIN_TASK_ELEMS: usize = 1 << 19;

/// Warp slots the mirror and tests assume: an H200 (132 SMs) at 4 CTAs of [`WARPS`]
/// warps per SM. [`crate::GpuDecoder`] uses the device's own count.
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))] // tests and fuzz targets
pub const DEFAULT_WARP_SLOTS: usize = 132 * 4 * WARPS;

/// Chunks per task for chunks of `2^chunk_log2` elements when chunks are plentiful: one
/// per warp for chunks of 2^16 and more, more per warp for small chunks.
pub fn chunks_per_task(chunk_log2: u32) -> usize {
    WARPS * (MIN_TASK_ELEMS >> (WARPS.trailing_zeros() + chunk_log2).min(31)).max(1)
}
/// Alignment of every piece of the arena and of every output tensor.
pub const ARENA_ALIGN: usize = 16;
/// Default limit on one tensor's tables in shared memory: what fits an sm_90 CTA (227 KiB
/// of dynamic shared memory) beside the staging buffers. Tensors with more tables fall
/// back to the CPU.
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))] // tests and fuzz targets
pub const DEFAULT_MAX_TABLES: usize = 36;

/// Stream modes (FORMAT.md §5.5) as the kernel numbers them.
pub const MODE_PACKED: u32 = 0;
/// Const mode.
pub const MODE_CONST: u32 = 1;
/// rANS mode.
pub const MODE_RANS: u32 = 2;

/// Kernel error code: a chunk's end state or word count is wrong (FORMAT.md §6 check 11).
pub const ERR_CORRUPT_CHUNK: u32 = 1;
/// Kernel error code: a block names a table the stream does not have.
pub const ERR_BAD_TABLE_ID: u32 = 2;
/// Kernel error code: a packed or constant field's stream does not start with its mode
/// byte (and, for a constant, its value) where the descriptor says: the field's end check,
/// as the end state is a rANS field's.
pub const ERR_FIELD_HEADER: u32 = 3;

/// [`TensorDesc::flags`]: an F32 (or F32 joint) tensor with raw blocks (format 1.4,
/// stream mode 5). The kernel decodes it with its F32 instance whose stream modes are all
/// read at run time (`MODES_ANY`), which has the raw step; the F32 instances specialised
/// by mode do not have it (their registers are all taken: gpu-decode/NOTES.md).
pub const FLAG_F32_RAW: u32 = 1;

/// The kernel's static shared memory (`struct Static`): the tensor descriptor, then per
/// warp and field the raw base and a word count.
pub const STATIC_SHARED_BYTES: usize =
    std::mem::size_of::<TensorDesc>() + 2 * WARPS * MAX_FIELDS * 4;

const _: () = assert!(STATIC_SHARED_BYTES == 496);
const _: () = assert!(TABLE_BYTES == 5632 && TABLE_BYTES.is_multiple_of(16));
const _: () = assert!(std::mem::size_of::<FieldDesc>() == 48);
const _: () = assert!(std::mem::size_of::<TensorDesc>() == 240);
const _: () = assert!(std::mem::size_of::<Task>() == 16);

/// One field stream as the kernel sees it (`struct FieldDesc`). Addresses are relative to
/// the arena until [`TensorDesc::relocate`] makes them absolute.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldDesc {
    /// The stream's first byte (its mode byte); 16-byte aligned.
    pub stream: u64,
    /// rANS: per chunk, `u64` payload offset from `stream`, `u32` payload length and
    /// `u32` length `R` of its raw area (FORMAT.md §5.5.1; 0 without raw blocks). A chunk
    /// whose length equals `R` is all raw: no states, no words.
    pub chunk_index: u64,
    /// rANS: the block table ids (one byte per block); an id equal to `n_tables` marks a
    /// raw block (stream mode 5).
    pub block_ids: u64,
    /// `MODE_*`.
    pub mode: u32,
    /// Symbol width in bits.
    pub bits: u32,
    /// Const: the symbol.
    pub value: u32,
    /// rANS: block length exponent.
    pub block_log2: u32,
    /// rANS: number of tables of this stream.
    pub n_tables: u32,
    /// rANS: index of the stream's first table among the tensor's tables.
    pub table_slot: u32,
}

/// One tensor as the kernel sees it (`struct TensorDesc`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TensorDesc {
    /// Output address, 16-byte aligned.
    pub dst: u64,
    /// Elements.
    pub n: u64,
    /// The tensor's expanded tables, back to back (relative to the table arena until
    /// relocated).
    pub tables: u64,
    /// 0 BF16, 1 F16, 2 F32, 3 F8.
    pub layout: u32,
    /// Chunk length exponent.
    pub chunk_log2: u32,
    /// Fields of the layout.
    pub n_fields: u32,
    /// Tables of all fields.
    pub n_tables: u32,
    /// What the kernel reports for a corrupt chunk of this tensor: its index in the
    /// model's prepared tensors (set by [`TensorDesc::relocate`]), so that an error names
    /// the right tensor whichever group was launched.
    pub tag: u32,
    /// `FLAG_*` bits ([`FLAG_F32_RAW`]).
    pub flags: u32,
    /// The field streams, in codec order.
    pub fields: [FieldDesc; MAX_FIELDS],
}

impl TensorDesc {
    /// The descriptor with absolute addresses: arena offsets moved to `arena`, table
    /// offsets to `tables`, output at `dst`; `tag` is the tensor's index among the
    /// prepared tensors.
    pub fn relocate(&self, arena: u64, tables: u64, dst: u64, tag: u32) -> Self {
        let mut d = *self;
        d.dst = dst;
        d.tag = tag;
        d.tables += tables;
        for f in &mut d.fields[..d.n_fields as usize] {
            f.stream += arena;
            if f.mode == MODE_RANS {
                f.chunk_index += arena;
                f.block_ids += arena;
            }
        }
        d
    }

    /// Chunks of the tensor.
    pub fn n_chunks(&self) -> u64 {
        self.n.div_ceil(1 << self.chunk_log2)
    }

    /// Bytes per element.
    #[cfg_attr(not(feature = "fuzzing"), allow(dead_code))] // tests and fuzz targets
    pub fn element_size(&self) -> usize {
        match self.layout {
            0 | 1 | 4 | 5 => 2,
            2 | 6 => 4,
            _ => 1,
        }
    }
}

/// A run of chunks of one tensor, decoded by one CTA (`struct Task`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Task {
    /// Index into the launch's tensor descriptors.
    pub tensor: u32,
    /// First chunk.
    pub first_chunk: u32,
    /// Number of chunks.
    pub n_chunks: u32,
    /// Padding to 16 bytes.
    pub pad: u32,
}

/// Why a tensor is not decoded by the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Stored or zstd-coded: decoded once on the CPU and kept uncompressed.
    NotSplit(&'static str),
    /// More tables than fit in shared memory.
    TooManyTables {
        /// Tables the tensor needs.
        tables: usize,
        /// Most that fit.
        limit: usize,
    },
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotSplit(codec) => write!(f, "codec {codec} has no GPU decoder"),
            Self::TooManyTables { tables, limit } => write!(
                f,
                "{tables} frequency tables, more than the {limit} that fit in shared memory"
            ),
        }
    }
}

/// How one prepared tensor is decoded.
// A model has at most thousands of tensors: 240 bytes each is not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Body {
    /// No elements: nothing to do.
    Empty,
    /// Decoded by the kernel.
    Split(TensorDesc),
    /// Decoded on the CPU at preparation and kept uncompressed in the arena at `offset`;
    /// "decoding" is a device-to-device copy.
    Raw {
        /// Arena offset.
        offset: u64,
        /// Why the kernel does not decode it.
        reason: Fallback,
    },
}

/// One prepared tensor.
#[derive(Clone, Debug)]
pub struct PreparedTensor {
    /// Index in the archive.
    pub index: usize,
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// Decoded size in bytes.
    pub out_len: u64,
    /// Expected xxh3-64 of the decoded bytes.
    pub checksum: u64,
    /// How it is decoded: public only with the `fuzzing` feature (tests, fuzz targets).
    #[cfg(feature = "fuzzing")]
    pub body: Body,
    #[cfg(not(feature = "fuzzing"))]
    pub(crate) body: Body,
}

/// Errors of host preparation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The archive refused a tensor (checksum, structure), before anything was uploaded.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// A stream failed this crate's own checks.
    #[error("tensor {name:?} stream {stream}: {problem}")]
    Stream {
        /// Tensor name.
        name: String,
        /// Stream index.
        stream: usize,
        /// What is wrong.
        problem: String,
    },
    /// A tensor index out of range.
    #[error("tensor index {index} out of range (the file has {count})")]
    NoSuchTensor {
        /// Index asked for.
        index: usize,
        /// Tensors in the file.
        count: usize,
    },
    /// The tensor is larger than this machine can address or the kernel can index.
    #[error("tensor {name:?} of {len} bytes is too large")]
    TooLarge {
        /// Tensor name.
        name: String,
        /// Size.
        len: u64,
    },
}

/// The chosen tensors of an archive, validated and laid out on the host, ready to upload
/// ([`GpuModel::upload_prepared`](crate::GpuModel::upload_prepared)): arena, tables and
/// descriptors. The fields are public only with the `fuzzing` feature (tests, fuzz
/// targets, examples), which the field pairs below select between.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Streams, chunk indexes and CPU-decoded fallbacks, each 16-byte aligned, followed
    /// by 16 bytes of padding (packed reads may touch up to 8 bytes past a stream).
    #[cfg(feature = "fuzzing")]
    pub arena: Vec<u8>,
    #[cfg(not(feature = "fuzzing"))]
    pub(crate) arena: Vec<u8>,
    /// Expanded tables, [`TABLE_BYTES`] each.
    #[cfg(feature = "fuzzing")]
    pub tables: Vec<u8>,
    #[cfg(not(feature = "fuzzing"))]
    pub(crate) tables: Vec<u8>,
    /// The tensors, in the order asked for.
    #[cfg(feature = "fuzzing")]
    pub tensors: Vec<PreparedTensor>,
    #[cfg(not(feature = "fuzzing"))]
    pub(crate) tensors: Vec<PreparedTensor>,
}

fn push_aligned(arena: &mut Vec<u8>, bytes: &[u8]) -> u64 {
    let at = arena.len().next_multiple_of(ARENA_ALIGN);
    arena.resize(at, 0);
    arena.extend_from_slice(bytes);
    at as u64
}

/// Layout number of the kernel.
fn layout_id(layout: Layout) -> u32 {
    match layout {
        Layout::Bf16 => 0,
        Layout::F16 => 1,
        Layout::F32 => 2,
        Layout::F8 => 3,
        Layout::Bf16Joint => 4,
        Layout::F16Joint => 5,
        Layout::F32Joint => 6,
    }
}

/// `Layout<L>::sym_shift`: how far the kernel shifts a table's symbol value up to place it
/// in the element (F32's exponent and sign+mantissa fields sit in the upper half; every
/// other field's bits fit the low 16).
pub fn symbol_shift(layout: u32, f: usize) -> u32 {
    if (layout == 2 || layout == 6) && f < 2 {
        16
    } else {
        0
    }
}

/// The value a table stores for symbol `sym` of field `f` of `layout` (kernel layout id):
/// the bits the symbol sets in the element, shifted down by [`symbol_shift`], so that a
/// decode step merges it with at most one shift.
pub fn table_symbol(layout: u32, f: usize, sym: u16) -> u16 {
    let bits = crate::mirror::contrib(layout, f, u32::from(sym)) >> symbol_shift(layout, f);
    debug_assert!(bits <= 0xFFFF, "layout {layout} field {f} symbol {sym}");
    bits as u16
}

/// Appends the expanded form of `table`, a table of field `f` of a tensor of `layout`
/// (kernel layout id; see [`TABLE_BYTES`]).
pub fn expand_table(table: &FreqTable, layout: u32, f: usize, out: &mut Vec<u8>) {
    let base = out.len();
    out.resize(base + TABLE_BYTES, 0);
    let t = &mut out[base..];
    let mut start = 0usize;
    for (j, (&sym, &freq)) in table.symbols().iter().zip(table.freqs()).enumerate() {
        let freq = usize::from(freq);
        let entry = (start as u32) | (((freq - 1) as u32) << 12);
        t[4 * j..4 * j + 4].copy_from_slice(&entry.to_le_bytes());
        t[TABLE_SYMBOLS_OFF + 2 * j..TABLE_SYMBOLS_OFF + 2 * j + 2]
            .copy_from_slice(&table_symbol(layout, f, sym).to_le_bytes());
        t[TABLE_SLOTS_OFF + start..TABLE_SLOTS_OFF + start + freq].fill(j as u8);
        start += freq;
    }
}

impl Prepared {
    /// Prepares tensors `select` of `archive` (all of them for `None`). Every stream's
    /// checksum and structure is checked here, on the host, through the archive's own
    /// decoder and again by this crate's parser. Tensors the kernel cannot decode are
    /// decoded on the CPU (checksum checked) and listed by [`Self::fallbacks`].
    pub fn new(
        archive: &Archive<'_>,
        select: Option<&[usize]>,
        max_tables: usize,
    ) -> Result<Self, PlanError> {
        let count = archive.index().tensors.len();
        let all: Vec<usize> = (0..count).collect();
        let select = select.unwrap_or(&all);
        let mut p = Prepared::default();
        for &i in select {
            if i >= count {
                return Err(PlanError::NoSuchTensor { index: i, count });
            }
            p.add(archive, i, max_tables)?;
        }
        p.arena
            .resize(p.arena.len().next_multiple_of(ARENA_ALIGN) + 16, 0);
        Ok(p)
    }

    /// The tensors decoded on the CPU instead of the GPU, with the reason.
    pub fn fallbacks(&self) -> impl Iterator<Item = (&PreparedTensor, &Fallback)> {
        self.tensors.iter().filter_map(|t| match &t.body {
            Body::Raw { reason, .. } => Some((t, reason)),
            _ => None,
        })
    }

    fn add(&mut self, archive: &Archive<'_>, i: usize, max_tables: usize) -> Result<(), PlanError> {
        let entry = &archive.index().tensors[i];
        let too_large = || PlanError::TooLarge {
            name: entry.name.clone(),
            len: entry.original_len,
        };
        let out_len = usize::try_from(entry.original_len).map_err(|_| too_large())?;
        let mut prepared = PreparedTensor {
            index: i,
            name: entry.name.clone(),
            dtype: entry.dtype.clone(),
            shape: entry.shape.clone(),
            out_len: entry.original_len,
            checksum: entry.checksum,
            body: Body::Empty,
        };
        // A fallback is decoded straight into the arena by the archive's decoder, which
        // checks the xxh3 of the decoded bytes in place: the arena holds what was verified.
        let fallback = |p: &mut Self, reason: Fallback| -> Result<Body, PlanError> {
            let at = p.arena.len().next_multiple_of(ARENA_ALIGN);
            p.arena.resize(at + out_len, 0);
            archive.decode_tensor(i, &mut p.arena[at..])?;
            Ok(Body::Raw {
                offset: at as u64,
                reason,
            })
        };
        prepared.body = match entry.codec {
            _ if out_len == 0 => {
                // Nothing is uploaded; the streams are still checked.
                archive.tensor_decoder(i)?;
                Body::Empty
            }
            Codec::Split(layout) => {
                let n = out_len / layout.element_size();
                // Copy first, then check the copy: stream checksums, the CPU decoder's
                // header checks and this crate's parser all read the arena, so the bytes
                // uploaded are the bytes verified even if the file changes meanwhile.
                archive.check_padding_of(Some(i))?;
                let mark = self.arena.len();
                let at: Vec<usize> = entry
                    .streams
                    .iter()
                    .map(|s| push_aligned(&mut self.arena, archive.stream_unverified(s)) as usize)
                    .collect();
                let parsed = verify_and_parse(&self.arena, &at, entry, layout, n, out_len)?;
                // After the parse, which checked the chunk length exponent (a hostile
                // one would overflow the shift).
                if n.div_ceil(1 << entry.chunk_log2) > u32::MAX as usize {
                    return Err(too_large());
                }
                let tables: usize = parsed.iter().map(|s| s.tables.len()).sum();
                if tables > max_tables {
                    self.arena.truncate(mark);
                    fallback(
                        self,
                        Fallback::TooManyTables {
                            tables,
                            limit: max_tables,
                        },
                    )?
                } else {
                    Body::Split(self.add_split(layout, n, entry.chunk_log2, &at, parsed))
                }
            }
            other => fallback(self, Fallback::NotSplit(other.name()))?,
        };
        self.tensors.push(prepared);
        Ok(())
    }

    fn add_split(
        &mut self,
        layout: Layout,
        n: usize,
        chunk_log2: u8,
        streams: &[usize],
        parsed: Vec<ParsedStream>,
    ) -> TensorDesc {
        // Raw blocks carry the id equal to their stream's table count (the parser allows
        // no other id past the tables). An F32 tensor with them runs the kernel's
        // MODES_ANY instance.
        let raw = parsed.iter().any(|s| {
            s.mode == MODE_RANS
                && s.block_ids
                    .iter()
                    .any(|&t| usize::from(t) >= s.tables.len())
        });
        let layout_id = layout_id(layout);
        let mut desc = TensorDesc {
            n: n as u64,
            tables: self.tables.len() as u64,
            layout: layout_id,
            chunk_log2: u32::from(chunk_log2),
            n_fields: streams.len() as u32,
            flags: if raw && matches!(layout_id, 2 | 6) {
                FLAG_F32_RAW
            } else {
                0
            },
            ..Default::default()
        };
        let mut table_slot = 0u32;
        for (k, (&stream, s)) in streams.iter().zip(parsed).enumerate() {
            let stream = stream as u64;
            let f = &mut desc.fields[k];
            f.stream = stream;
            f.bits = s.bits;
            f.mode = s.mode;
            f.value = s.value;
            if s.mode == MODE_RANS {
                let index: Vec<u8> = s
                    .payloads
                    .iter()
                    .zip(&s.raw_areas)
                    .flat_map(|(&(off, len), &raw)| [off as u64, len as u64 | u64::from(raw) << 32])
                    .flat_map(u64::to_le_bytes)
                    .collect();
                f.chunk_index = push_aligned(&mut self.arena, &index);
                // The ids as the parser decoded them (run-coded in mode 4 streams).
                f.block_ids = push_aligned(&mut self.arena, &s.block_ids);
                f.block_log2 = s.block_log2;
                f.n_tables = s.tables.len() as u32;
                f.table_slot = table_slot;
                table_slot += f.n_tables;
                for t in &s.tables {
                    expand_table(t, desc.layout, k, &mut self.tables);
                }
            }
        }
        desc.n_tables = table_slot;
        desc
    }
}

/// Checks the arena copies at `at` of `entry`'s streams: each against its xxh3-64, all
/// through the CPU decoder's own header checks, then each through [`parse_stream`].
fn verify_and_parse(
    arena: &[u8],
    at: &[usize],
    entry: &TensorEntry,
    layout: Layout,
    n: usize,
    out_len: usize,
) -> Result<Vec<ParsedStream>, PlanError> {
    let copies: Vec<&[u8]> = entry
        .streams
        .iter()
        .zip(at)
        .map(|(s, &a)| &arena[a..a + s.len as usize])
        .collect();
    let check = |(k, (s, bytes)): (usize, (&StreamRef, &&[u8]))| {
        let computed = xxh3_64(bytes);
        if computed == s.checksum {
            Ok(())
        } else {
            Err(ContainerError::Checksum {
                what: Part::UploadCopy {
                    tensor: entry.name.clone(),
                    stream: k,
                },
                stored: s.checksum,
                computed,
            })
        }
    };
    // Large streams are hashed in parallel, as the container does.
    if entry.coded_len() > 1 << 20 {
        entry
            .streams
            .par_iter()
            .zip(copies.par_iter())
            .enumerate()
            .try_for_each(check)?;
    } else {
        entry
            .streams
            .iter()
            .zip(copies.iter())
            .enumerate()
            .try_for_each(check)?;
    }
    TensorDecoder::new(entry.codec, entry.chunk_log2, out_len, &copies).map_err(|source| {
        ContainerError::Tensor {
            name: entry.name.clone(),
            source,
        }
    })?;
    copies
        .iter()
        .zip(layout.field_bits())
        .enumerate()
        .map(|(k, (bytes, &bits))| {
            parse_stream(bytes, bits, n, entry.chunk_log2).map_err(|problem| PlanError::Stream {
                name: entry.name.clone(),
                stream: k,
                problem,
            })
        })
        .collect()
}

/// What the planner needs of one field stream.
struct ParsedStream {
    mode: u32,
    bits: u32,
    value: u32,
    block_log2: u32,
    tables: Vec<FreqTable>,
    block_ids: Vec<u8>,
    payloads: Vec<(usize, usize)>,
    /// Per chunk, the length `R` of its raw area (FORMAT.md §5.5.1; 0 in mode 3 and 4
    /// streams).
    raw_areas: Vec<u32>,
}

/// Parses a field stream of `n` symbols of `bits` bits (FORMAT.md §5.5) with the CPU
/// decoder's own parser ([`StreamLayout::parse`]: one parser for the stream header and
/// chunk index), plus the one rule the kernel needs before it runs: payloads of whole
/// 16-bit words (the CPU decoder checks that only when it decodes a chunk).
fn parse_stream(bytes: &[u8], bits: u32, n: usize, chunk_log2: u8) -> Result<ParsedStream, String> {
    if !CHUNK_LOG2_RANGE.contains(&chunk_log2) {
        return Err(format!(
            "chunk length exponent {chunk_log2} outside {CHUNK_LOG2_RANGE:?}"
        ));
    }
    let layout = StreamLayout::parse(bytes, bits, n, 1 << chunk_log2).map_err(|e| e.to_string())?;
    let mut s = ParsedStream {
        mode: MODE_PACKED,
        bits,
        value: 0,
        block_log2: 0,
        tables: Vec::new(),
        block_ids: Vec::new(),
        payloads: Vec::new(),
        raw_areas: Vec::new(),
    };
    match layout {
        StreamLayout::Packed => {}
        StreamLayout::Const(v) => {
            s.mode = MODE_CONST;
            s.value = u32::from(v);
        }
        StreamLayout::Rans {
            tables,
            block_log2,
            block_ids,
            payloads,
        } => {
            if let Some((c, (_, len))) = payloads.iter().enumerate().find(|(_, p)| p.1 % 2 != 0) {
                return Err(format!("chunk {c} payload of {len} bytes is odd"));
            }
            s.mode = MODE_RANS;
            s.block_log2 = u32::from(block_log2);
            s.tables = tables;
            s.raw_areas = raw_areas(&block_ids, s.tables.len(), block_log2, bits, n, chunk_log2);
            // The kernel's chunk index holds lengths as u32 (the parser bounds a payload by
            // its chunk's symbols: at most 128 + 2^24 bytes or so).
            if let Some((c, (_, len))) = payloads
                .iter()
                .enumerate()
                .find(|(_, p)| p.1 > u32::MAX as usize)
            {
                return Err(format!("chunk {c} payload of {len} bytes is too long"));
            }
            s.block_ids = block_ids;
            s.payloads = payloads;
        }
    }
    Ok(s)
}

/// Per chunk of a stream of `n` symbols in chunks of `2^chunk_log2`, the length of its raw
/// area (FORMAT.md §5.5.1): `2·ceil(r·bits/16)` for its `r` symbols in blocks whose id is
/// `t` (the table count). The ids were checked by the parser (one per block, each ≤ `t`).
fn raw_areas(
    ids: &[u8],
    t: usize,
    block_log2: u8,
    bits: u32,
    n: usize,
    chunk_log2: u8,
) -> Vec<u32> {
    let (chunk, block) = (1usize << chunk_log2, 1usize << block_log2);
    (0..n.div_ceil(chunk))
        .map(|c| {
            let (lo, hi) = (c * chunk, ((c + 1) * chunk).min(n));
            let raw: usize = (lo / block..hi.div_ceil(block))
                .filter(|&b| ids.get(b).is_some_and(|&id| usize::from(id) == t))
                .map(|b| (b * block + block).min(hi) - (b * block).max(lo))
                .sum();
            // At most 2^22 symbols of 9 bits: fits u32.
            (raw * bits as usize).div_ceil(16) as u32 * 2
        })
        .collect()
}

/// The tasks of one launch: runs of chunks of each kernel tensor in `descs` (indexes into
/// `descs`). Work is distributed by the launch's total chunk count against the device's
/// `warp_slots`: each warp gets `ceil(total / warp_slots)` chunks (at least one), but no
/// more than [`chunks_per_task`] allows, so a launch with few chunks spreads them one per
/// warp over as many CTAs as it takes, and one with many keeps its CTAs large.
pub fn tasks(descs: &[TensorDesc], warp_slots: usize) -> Vec<Task> {
    let total: u64 = descs.iter().map(TensorDesc::n_chunks).sum();
    let fill = total.div_ceil(warp_slots.max(1) as u64).max(1);
    let mut tasks = Vec::new();
    for (t, d) in descs.iter().enumerate() {
        let chunks = d.n_chunks();
        let per_task = (WARPS as u64 * fill).min(chunks_per_task(d.chunk_log2) as u64);
        let mut first = 0u64;
        while first < chunks {
            let count = (chunks - first).min(per_task);
            tasks.push(Task {
                tensor: t as u32,
                first_chunk: first as u32,
                n_chunks: count as u32,
                pad: 0,
            });
            first += count;
        }
    }
    tasks
}

/// Upper bounds of the table-count classes that [`launches`] puts into separate kernel
/// launches: the most tables per tensor at which 4, 3 and 2 CTAs fit an sm_90 SM (228 KiB
/// of shared memory, 1 KiB reserved per CTA, the staging buffers and the kernel's static
/// shared memory, [`STATIC_SHARED_BYTES`]);
/// tensors with more run at 1 CTA per SM.
pub const TABLE_CLASSES: [u32; 3] = [8, 12, 19];

/// One kernel launch: its descriptors, its tasks (indexes into `descs`) and its dynamic
/// shared memory.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// The launch's tensor descriptors.
    pub descs: Vec<TensorDesc>,
    /// One per CTA.
    pub tasks: Vec<Task>,
    /// Dynamic shared memory per CTA.
    pub shared: usize,
}

/// Splits the kernel work `descs` into launches by table count ([`TABLE_CLASSES`]), so
/// that one tensor with many tables does not set the shared memory (and so the CTAs per
/// SM) of every other; each launch's work is distributed over `warp_slots`
/// ([`tasks`]). Descriptors keep their order within a launch; empty classes launch
/// nothing.
pub fn launches(descs: &[TensorDesc], warp_slots: usize) -> Vec<Launch> {
    let class = |d: &TensorDesc| {
        TABLE_CLASSES
            .iter()
            .position(|&most| d.n_tables <= most)
            .unwrap_or(TABLE_CLASSES.len())
    };
    (0..=TABLE_CLASSES.len())
        .filter_map(|c| {
            let descs: Vec<TensorDesc> = descs.iter().filter(|d| class(d) == c).copied().collect();
            (!descs.is_empty()).then(|| Launch {
                tasks: tasks(&descs, warp_slots),
                shared: shared_bytes(&descs),
                descs,
            })
        })
        .collect()
}

/// Dynamic shared memory a launch over `descs` needs.
pub fn shared_bytes(descs: &[TensorDesc]) -> usize {
    let tables = descs.iter().map(|d| d.n_tables as usize).max().unwrap_or(0);
    WARPS * STAGE_BYTES_PER_WARP + tables * TABLE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanded_table_matches_the_cpu_slot_table() {
        let t = FreqTable::from_counts(&[0, 5, 0, 9, 1, 0, 0, 300]).unwrap();
        let mut out = Vec::new();
        expand_table(&t, 0, 0, &mut out);
        assert_eq!(out.len(), TABLE_BYTES);
        let mut start = 0u32;
        for (j, &f) in t.freqs().iter().enumerate() {
            let e = u32::from_le_bytes(out[4 * j..4 * j + 4].try_into().unwrap());
            assert_eq!((e & 0xFFF, (e >> 12) + 1), (start, u32::from(f)));
            let sym = u16::from_le_bytes(out[TABLE_SYMBOLS_OFF + 2 * j..][..2].try_into().unwrap());
            assert_eq!(sym, t.symbols()[j] << 6, "BF16 exponent field: symbol << 6");
            for s in start..start + u32::from(f) {
                assert_eq!(usize::from(out[TABLE_SLOTS_OFF + s as usize]), j);
            }
            start += u32::from(f);
        }
        assert_eq!(start, PROB_SCALE);
    }

    /// A rANS-coded stream of `n` 9-bit symbols in chunks of 2^10, blocks of 2^5.
    fn rans_stream(n: usize) -> Vec<u8> {
        use mcodec::entropy::stream::{Effort, StreamEncoder};
        let symbols: Vec<u16> = (0..n as u32)
            .map(|i| ((i * 7919) % 13 + (i / 500) % 3) as u16)
            .collect();
        let hists: Vec<Vec<u32>> = symbols
            .chunks(32)
            .map(|b| {
                let mut h = vec![0u32; 512];
                b.iter().for_each(|&s| h[usize::from(s)] += 1);
                h
            })
            .collect();
        let enc = StreamEncoder::plan(&hists, 9, 5, 10, Effort::Default);
        let pieces = symbols
            .chunks(1024)
            .enumerate()
            .map(|(c, s)| enc.encode_chunk(c, s).expect("planned from these symbols"))
            .collect();
        enc.assemble(pieces).to_vec()
    }

    #[test]
    fn parser_accepts_good_streams_and_refuses_damaged_headers() {
        let n = 5000;
        let good = rans_stream(n);
        let parsed = parse_stream(&good, 9, n, 10).expect("good stream");
        assert_eq!(parsed.mode, MODE_RANS);
        assert_eq!(parsed.payloads.len(), n.div_ceil(1024));
        // Every truncation is refused.
        for len in 0..good.len() {
            assert!(
                parse_stream(&good[..len], 9, n, 10).is_err(),
                "truncated to {len}"
            );
        }
        // Wrong sizes, widths and chunkings are refused.
        assert!(parse_stream(&good, 9, n + 1024, 10).is_err());
        assert!(parse_stream(&good, 9, n, 4).is_err());
        assert!(parse_stream(&good, 9, n, 23).is_err());
        // Any single damaged byte of the header and index either parses to a stream whose
        // payloads tile it, or is refused; nothing panics.
        let index_end = parsed.payloads[0].0;
        for at in 0..index_end {
            for flip in [1u8, 0x80, 0xFF] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                if let Ok(p) = parse_stream(&bad, 9, n, 10) {
                    let (last, len) = *p.payloads.last().expect("payloads");
                    assert_eq!(last + len, bad.len());
                    assert!(p.tables.len() <= MAX_TABLE_SYMBOLS);
                }
            }
        }
        assert!(parse_stream(&[7], 9, 1, 10).is_err());
        assert!(
            parse_stream(&[1, 0, 2], 9, 1, 10).is_err(),
            "const wider than 9 bits"
        );
        assert!(
            parse_stream(&[0, 0], 9, 1, 10).is_err(),
            "packed of wrong length"
        );
    }

    #[test]
    fn tasks_cover_every_chunk_once() {
        let d = |n: u64, log2: u32| TensorDesc {
            n,
            chunk_log2: log2,
            ..Default::default()
        };
        let descs = [
            d(1, 10),
            d(1 << 20, 10),
            d((17 << 16) + 5, 16),
            d(3 << 18, 18),
        ];
        assert_eq!(chunks_per_task(18), WARPS);
        assert_eq!(chunks_per_task(16), WARPS);
        assert_eq!(chunks_per_task(10), 64 * WARPS);
        let total: u64 = descs.iter().map(TensorDesc::n_chunks).sum();
        for slots in [1, 64, 4224, 1 << 20] {
            let tasks = tasks(&descs, slots);
            for (t, desc) in descs.iter().enumerate() {
                let mut next = 0;
                for task in tasks.iter().filter(|k| k.tensor == t as u32) {
                    assert_eq!(task.first_chunk, next);
                    let most = chunks_per_task(desc.chunk_log2) as u32;
                    assert!((1..=most).contains(&task.n_chunks));
                    next += task.n_chunks;
                }
                assert_eq!(u64::from(next), desc.n_chunks());
            }
            // With warp slots to spare, every warp gets one chunk: as many warps as chunks.
            if slots as u64 >= total {
                assert!(tasks.iter().all(|k| k.n_chunks as usize <= WARPS));
            }
        }
        // Launches by table count: every descriptor in exactly one, shared memory sized by
        // its own class.
        let mut mixed = descs.to_vec();
        for (d, tables) in mixed.iter_mut().zip([1, 30, 9, 8]) {
            d.n_tables = tables;
        }
        let ls = launches(&mixed, 4224);
        assert_eq!(ls.len(), 3);
        assert_eq!(ls.iter().map(|l| l.descs.len()).sum::<usize>(), mixed.len());
        assert_eq!(ls[0].descs.len(), 2, "1 and 8 tables share the first class");
        assert_eq!(ls[0].shared, shared_bytes(&[mixed[3]]));
        assert!(ls[2].shared > ls[1].shared && ls[1].shared > ls[0].shared);
        // Few slots: CTAs as large as chunks_per_task allows.
        assert!(tasks(&descs, 1)
            .iter()
            .any(|k| k.n_chunks as usize == chunks_per_task(10)));
    }
}
