//! The `.mcz` container (FORMAT.md §3): preamble, 64-byte aligned streams, an index of
//! every tensor and a trailer that locates and checks the index.
//!
//! The writer streams tensors out in batches, so memory is bounded by a batch rather than
//! the model; the reader needs only the bytes (typically a memory map) and gives random
//! access to any tensor. Every stream and every decoded tensor is checked against its
//! xxh3-64, so corruption cannot yield silently wrong weights.
//!
//! Modules, top-down: `writer` ([`pack`], [`pack_parts`]), `index` (the index codec:
//! its serialisation, its checked parser and [`replace_index`] for tools and tests that
//! rewrite an index), `reader` ([`Archive`]: opening, checking and decoding), `stream_out`
//! (writing the original file out, decoding overlapped with writing), and `error` (the
//! layer's error types).

mod error;
mod index;
mod load;
pub use index::{replace_index, trailer, StoredForm};
pub use load::DecodeTarget;
mod reader;
mod stream_out;
mod writer;

pub use error::{ContainerError, Corruption, Part, Unsupported};
pub use reader::Archive;
pub use writer::{pack, pack_parts, release_spare_buffers, PackOptions, PackStats};

use crate::dtype::Dtype;
use crate::tensor::Codec;

/// File magic (FORMAT.md §3.1).
pub const MAGIC: [u8; 8] = *b"\x89MCZ\r\n\x1a\n";
/// Trailer magic (FORMAT.md §3.4).
pub const TRAILER_MAGIC: [u8; 8] = *b"MCZ-END\0";
/// Format major version this code reads and writes.
pub const VERSION_MAJOR: u16 = 1;
/// Format minor version this code writes (1: the joint split codecs 6..=8; 2: compact
/// frequency tables, a zstd-coded index and 4-byte stream alignment; 3: run-coded block
/// table ids, stream mode 4; 4: raw blocks, stream mode 5).
pub const VERSION_MINOR: u16 = 4;
/// Alignment of every stream and of the index in files whose trailer names none (every
/// file before version 1.2).
pub const ALIGN: u64 = 64;
/// Alignment of every stream and of the index in the files this code writes (since 1.2;
/// recorded in the trailer): what chunk payloads need (FORMAT.md §3.2).
pub const STREAM_ALIGN: u64 = 4;
/// Smallest and largest stream alignment exponent a trailer may name (FORMAT.md §3.4).
pub const ALIGN_LOG2_RANGE: std::ops::RangeInclusive<u8> = 2..=6;
/// Size of the preamble and of the trailer.
pub const BLOCK: u64 = 64;
/// Longest tensor name accepted (its length is a `u16` in the index).
pub const MAX_NAME_LEN: usize = u16::MAX as usize;
/// Longest dtype name accepted (its length is a `u8` in the index).
pub const MAX_DTYPE_LEN: usize = u8::MAX as usize;
/// Most original bytes a file may decode to per byte of the file itself (FORMAT.md §6,
/// check 3a). A hostile file could otherwise claim terabytes from a few Const streams;
/// with this bound, decoding time and output are at most 1024 times the bytes actually
/// read (deflate's own limit is about 1032:1). The writer pads files that compress
/// better than this (models of zeros), so every file it writes is readable.
pub const MAX_EXPANSION: u64 = 1024;
/// Where the packed bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A safetensors file: the prefix is its header.
    Safetensors,
    /// Raw bytes packed with an explicit dtype.
    Raw,
}

/// One tensor as the index records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// Byte offset in the original file.
    pub original_offset: u64,
    /// Byte length in the original file.
    pub original_len: u64,
    /// xxh3-64 of the original bytes.
    pub checksum: u64,
    /// How it is coded.
    pub codec: Codec,
    /// Chunk length exponent (split codecs).
    pub chunk_log2: u8,
    /// Its streams.
    pub streams: Vec<StreamRef>,
}

impl TensorEntry {
    /// Total coded bytes.
    pub fn coded_len(&self) -> u64 {
        self.streams.iter().map(|s| s.len).sum()
    }
}

/// Location and checksum of one stream in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamRef {
    /// Absolute offset (a multiple of [`ALIGN`]).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// xxh3-64 of the stream bytes.
    pub checksum: u64,
}

/// The stored prefix: bytes of the original file before the first tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixRef {
    /// The stored stream.
    pub stream: StreamRef,
    /// Stored as is (false) or as a zstd frame (true).
    pub zstd: bool,
    /// Original length.
    pub raw_len: u64,
    /// xxh3-64 of the original prefix bytes.
    pub raw_checksum: u64,
}

/// The parsed index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    /// What was packed.
    pub source: SourceKind,
    /// Original file length.
    pub original_len: u64,
    /// The original header bytes.
    pub prefix: PrefixRef,
    /// Tensors in original file order.
    pub tensors: Vec<TensorEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safetensors_file() -> Vec<u8> {
        let n = 50_000usize;
        let mut data = Vec::new();
        let mut seed = 1u64;
        for _ in 0..n {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05;
            data.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
        }
        data.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        let header = format!(
            r#"{{"__metadata__":{{"format":"pt"}},"w":{{"dtype":"BF16","shape":[{n}],"data_offsets":[0,{}]}},"i":{{"dtype":"I64","shape":[1],"data_offsets":[{},{}]}}}}   "#,
            2 * n,
            2 * n,
            2 * n + 8
        );
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.extend_from_slice(&data);
        f
    }

    fn pack_vec(input: &[u8], opts: &PackOptions) -> Vec<u8> {
        let mut out = Vec::new();
        pack(input, opts, &mut out, &|_| {}).unwrap();
        out
    }

    /// The prefetch order reads every byte of the file once; a tensor's streams are read
    /// side by side, a part of each at a time, and with parts as large as the tensor it
    /// is plain file order.
    #[test]
    fn prefetch_reads_every_byte_once_and_a_tensors_streams_side_by_side() {
        let packed = pack_vec(&safetensors_file(), &PackOptions::default());
        let archive = Archive::open(&packed).unwrap();
        let w = &archive.index().tensors[archive.find("w").unwrap()];
        assert_eq!(w.streams.len(), 2);
        for part in [4096, 10_000, u64::MAX] {
            let order = archive.read_order(packed.len(), part);
            let mut sorted = order.clone();
            sorted.sort_by_key(|r| r.start);
            let mut at = 0;
            for r in &sorted {
                assert_eq!(r.start, at, "part {part}: {order:?}");
                at = r.end;
            }
            assert_eq!(at, packed.len(), "part {part}");
            let within = |s: &StreamRef, r: &std::ops::Range<usize>| {
                r.start >= s.offset as usize && r.end <= (s.offset + s.len) as usize
            };
            let first_of_second = order.iter().position(|r| within(&w.streams[1], r));
            let last_of_first = order.iter().rposition(|r| within(&w.streams[0], r));
            if part == u64::MAX {
                assert_eq!(order, sorted, "file order");
            } else {
                assert!(first_of_second < last_of_first, "part {part}: {order:?}");
            }
        }
    }

    #[test]
    fn pack_unpack_is_byte_exact() {
        let input = safetensors_file();
        let packed = pack_vec(&input, &PackOptions::default());
        assert!(packed.len() < input.len() * 3 / 4);
        let archive = Archive::open(&packed).unwrap();
        assert_eq!(archive.index().tensors.len(), 2);
        let mut back = Vec::new();
        archive.unpack_to(&mut back, &|_| {}).unwrap();
        assert_eq!(back, input);
        let (stored, form) = archive.index().to_stored();
        assert_eq!(form.align, STREAM_ALIGN);
        assert_eq!(
            Index::parse_stored(&stored, packed.len() as u64, form).unwrap(),
            *archive.index()
        );
        // Stored as it is, the same index is a 1.1 index only if its offsets are 64-aligned.
        let serialized = archive.index().serialize();
        assert_eq!(
            Index::parse_aligned(&serialized, packed.len() as u64, STREAM_ALIGN).unwrap(),
            *archive.index()
        );
    }

    #[test]
    fn replace_index_rewrites_index_and_trailer_or_leaves_the_file_alone() {
        let packed = pack_vec(&safetensors_file(), &PackOptions::default());
        let mut index = Archive::open(&packed).unwrap().index().clone();
        index.tensors[0].checksum ^= 1;
        let mut edited = packed.clone();
        replace_index(&mut edited, &index).unwrap();
        let archive = Archive::open(&edited).unwrap();
        assert_eq!(*archive.index(), index);
        assert!(matches!(
            archive.verify(&|_| {}),
            Err(ContainerError::Checksum {
                what: Part::Tensor { .. },
                ..
            })
        ));
        let t = packed.len() - BLOCK as usize;
        let form = StoredForm::from_trailer(packed[t..].try_into().unwrap()).unwrap();
        let new_t = edited.len() - BLOCK as usize;
        let new_form = StoredForm::from_trailer(edited[new_t..].try_into().unwrap()).unwrap();
        assert_eq!(new_form.align, form.align);
        assert_ne!(new_form.index_raw_len, 0);

        let refused = |mut file: Vec<u8>| {
            let before = file.clone();
            let err = replace_index(&mut file, &index).unwrap_err();
            assert!(file == before, "{err}: file changed");
            err
        };
        let err = refused(packed[..2 * BLOCK as usize - 1].to_vec());
        assert!(matches!(
            err,
            ContainerError::Corrupt(Corruption::TooShort { .. })
        ));
        let mut past = packed.clone();
        past[t..t + 8].copy_from_slice(&(t as u64 + 1).to_le_bytes());
        let err = refused(past);
        assert!(matches!(
            err,
            ContainerError::Corrupt(Corruption::IndexPlacement { .. })
        ));
        let mut misaligned = packed.clone();
        misaligned[t + 40] = 7;
        let err = refused(misaligned);
        assert!(matches!(
            err,
            ContainerError::Corrupt(Corruption::Alignment { found: 7 })
        ));
    }

    #[test]
    fn unrepresentable_input_and_bad_options_are_refused() {
        let long_dtype = "X".repeat(300);
        let header =
            format!(r#"{{"t":{{"dtype":"{long_dtype}","shape":[2],"data_offsets":[0,2]}}}}"#);
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&[1, 2]);
        let err = pack(&file, &PackOptions::default(), Vec::new(), &|_| {}).unwrap_err();
        assert!(matches!(err, ContainerError::Unsupported(_)), "{err}");
        let mut opts = PackOptions::default();
        opts.encode.chunk_log2 = 10;
        opts.encode.block_log2 = 12;
        let err = pack(&safetensors_file(), &opts, Vec::new(), &|_| {}).unwrap_err();
        assert!(matches!(err, ContainerError::Unsupported(_)), "{err}");
    }

    #[test]
    fn streamed_unpack_matches_with_small_pieces() {
        let input = safetensors_file();
        let mut opts = PackOptions::default();
        opts.encode.chunk_log2 = 10;
        opts.encode.block_log2 = 8;
        let packed = pack_vec(&input, &opts);
        let archive = Archive::open(&packed).unwrap();
        let t = &archive.index().tensors[0];
        let decoder = archive.tensor_decoder(0).unwrap();
        let mut out = vec![0u8; t.original_len as usize];
        let mut pieces = 0;
        decoder
            .decode_pieces(3000, &mut |piece, range| {
                out[range].copy_from_slice(piece);
                pieces += 1;
                Ok(())
            })
            .unwrap();
        assert!(pieces > 10);
        let start = t.original_offset as usize;
        assert!(out == input[start..start + out.len()]);
    }

    #[test]
    fn parallel_unpack_into_matches_streamed_unpack() {
        let input = safetensors_file();
        let packed = pack_vec(&input, &PackOptions::default());
        let archive = Archive::open(&packed).unwrap();
        let mut out = vec![0xEEu8; input.len()];
        archive.unpack_into(&mut out).unwrap();
        assert!(out == input);
        assert!(archive.unpack_into(&mut out[1..]).is_err());
    }

    #[test]
    fn raw_input_with_tail_round_trips() {
        let input: Vec<u8> = (0..10_001u32).map(|i| (i % 251) as u8).collect();
        let opts = PackOptions {
            raw_dtype: Some(Dtype::BF16),
            ..Default::default()
        };
        let packed = pack_vec(&input, &opts);
        let archive = Archive::open(&packed).unwrap();
        assert_eq!(archive.index().source, SourceKind::Raw);
        let mut back = Vec::new();
        archive.unpack_to(&mut back, &|_| {}).unwrap();
        assert_eq!(back, input);
        assert!(matches!(
            pack(&input, &PackOptions::default(), Vec::new(), &|_| {}),
            Err(ContainerError::Safetensors(_))
        ));
    }

    #[test]
    fn every_truncation_and_many_bit_flips_fail_cleanly() {
        let input = safetensors_file();
        let packed = pack_vec(&input, &PackOptions::default());
        for cut in (0..packed.len()).step_by(97) {
            assert!(Archive::open(&packed[..cut]).is_err(), "truncated at {cut}");
        }
        for pos in (0..packed.len()).step_by(61) {
            let mut bad = packed.clone();
            bad[pos] ^= 1 << (pos % 8);
            let result = Archive::open(&bad).and_then(|a| {
                let mut out = Vec::new();
                a.unpack_to(&mut out, &|_| {}).map(|_| out)
            });
            // Padding bytes are not covered by checksums; any success must be exact.
            if let Ok(out) = result {
                assert_eq!(out, input, "flip at {pos} gave different bytes");
            }
        }
    }
}
