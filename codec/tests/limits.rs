//! Hostile sizes, counts and offsets: each test builds a file that is valid except for one
//! claim (checksums fixed up, so the limit check and not a checksum refuses it) and checks
//! the error, and that nothing was allocated from the claim.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use common::{every_dtype_model, pack_small_chunks, unpack, with_index};
use mcodec::container::{
    pack, Archive, ContainerError, Corruption, Index, PackOptions, MAX_EXPANSION,
};
use mcodec::entropy::stream::StreamDecoder;
use mcodec::tensor::{Codec, TensorDecoder};
use mcodec::Dtype;

/// Records the largest single allocation made on any thread (the decoders work on rayon's
/// threads, not only the caller's), so a test can show that a hostile claim was refused
/// before anything was sized from it. The tests of this file run one at a time
/// ([`serial`]), so no other test's allocations count.
struct PeakAlloc;

/// The largest single allocation since [`largest_alloc`] reset it, on any thread.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// Held by every test of this file: the allocation counters are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// Set on the threads of a [`measured_pool`]: their allocations also count in
    /// [`POOL_LIVE`] / [`POOL_PEAK`] (the decoder's work runs on pool threads, not the
    /// caller's).
    static MEASURED: Cell<bool> = const { Cell::new(false) };
}

/// Bytes allocated and not yet freed by measured threads, and the most at any time.
static POOL_LIVE: AtomicUsize = AtomicUsize::new(0);
static POOL_PEAK: AtomicUsize = AtomicUsize::new(0);

fn measured() -> bool {
    MEASURED.try_with(Cell::get).unwrap_or(false)
}

fn count(grow: usize, shrink: usize) {
    let live = POOL_LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
    POOL_LIVE.fetch_sub(shrink, Ordering::Relaxed);
    POOL_PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only atomics and a
// const thread-local `Cell<bool>`, which neither allocate nor have a destructor.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        if measured() {
            count(layout.size(), 0);
        }
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if measured() {
            count(0, layout.size());
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        if measured() {
            count(new_size, layout.size());
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Runs `f` and returns its result with the largest allocation made meanwhile, on any
/// thread (by `f` and the pool threads it runs work on; the caller holds [`serial`]).
fn largest_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    let r = f();
    (r, LARGEST.load(Ordering::Relaxed))
}

/// A pool whose threads' allocations count in [`POOL_PEAK`]. Its threads are kept, so
/// memory they keep in thread-locals stays counted as live.
fn measured_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(|_| MEASURED.with(|m| m.set(true)))
        .build()
        .unwrap()
}

#[test]
fn decode_scratch_is_sized_by_what_is_decoded_not_the_chunk_length() {
    let _serial = serial();
    // A small tensor written with the longest chunk the format allows (2^22 elements):
    // the decoder's per-thread field buffers used to be sized by the chunk length (8 MiB
    // per field and buffer, 64 MiB a thread at most), left resident by any few-KB file.
    let n = 3000usize;
    let data: Vec<u8> = (0..n)
        .flat_map(|i| (((i * 7919) % 251) as u16 + 0x3c00).to_le_bytes())
        .collect();
    let opts = PackOptions::new().chunk_log2(22).raw_dtype(Dtype::BF16);
    let mut file = Vec::new();
    pack(&data, &opts, &mut file, &|_| {}).unwrap();
    let archive = Archive::open(&file).unwrap();
    assert_eq!(archive.index().tensors[0].chunk_log2, 22);
    let pool = measured_pool(2);
    let mut out = vec![0u8; data.len()];
    POOL_PEAK.store(POOL_LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    pool.install(|| archive.decode_tensor(0, &mut out)).unwrap();
    assert_eq!(out, data);
    let peak = POOL_PEAK.load(Ordering::Relaxed);
    // Two fields, two buffers each, of at most n u16s, plus tables and bookkeeping.
    let allowed = 16 * data.len() + (1 << 20);
    assert!(
        peak <= allowed,
        "decoding {} bytes allocated up to {peak} bytes on the pool's threads (allowed {allowed})",
        data.len()
    );
}

fn raw_pack(data: &[u8], dtype: Dtype) -> Vec<u8> {
    let opts = PackOptions {
        raw_dtype: Some(dtype),
        ..Default::default()
    };
    let mut out = Vec::new();
    pack(data, &opts, &mut out, &|_| {}).unwrap();
    out
}

fn index_of(file: &[u8]) -> Index {
    Archive::open(file).unwrap().index().clone()
}

/// Opens and fully decodes `file` (as `mcodec unpack` would, streamed), returning the error
/// and the largest allocation made.
fn refuse(file: &[u8]) -> (ContainerError, usize) {
    let (r, peak) = largest_alloc(|| {
        let archive = Archive::open(file)?;
        archive.unpack_to(std::io::sink(), &|_| {})
    });
    (r.expect_err("hostile file accepted"), peak)
}

#[test]
fn a_tensor_of_2_pow_40_bytes_is_refused_before_allocation() {
    let _serial = serial();
    // A BF16 tensor of one repeated value: both fields are Const streams (3 bytes each),
    // so only the index says how large it is.
    let file = raw_pack(&[0x80, 0x3f].repeat(4096), Dtype::BF16);
    let mut index = index_of(&file);
    assert!(index.tensors[0].coded_len() <= 6, "{:?}", index.tensors[0]);
    let claim = 1u64 << 40;
    index.original_len = claim;
    index.tensors[0].original_len = claim;
    index.tensors[0].shape = vec![claim / 2];
    let hostile = with_index(&file, &index);
    let (err, peak) = refuse(&hostile);
    match err {
        ContainerError::Limit {
            requested, allowed, ..
        } => {
            assert_eq!(requested, claim);
            assert_eq!(allowed, hostile.len() as u64 * MAX_EXPANSION);
        }
        e => panic!("expected a limit error, got {e}"),
    }
    assert!(peak < 1 << 20, "allocated {peak} bytes for a refused file");
}

#[test]
fn const_claims_up_to_the_limit_decode_within_it() {
    let _serial = serial();
    // The largest claim a file of this size may make decodes, in bounded pieces; one
    // element more is refused.
    let file = raw_pack(&[0x80, 0x3f].repeat(4096), Dtype::BF16);
    let index = index_of(&file);
    let claim_for = |len: usize| (len as u64 * MAX_EXPANSION) / 2 * 2;
    // The file claiming `claim` bytes (with the checksum of that content).
    let claiming = |claim: u64| {
        let mut index = index.clone();
        index.original_len = claim;
        index.tensors[0].original_len = claim;
        index.tensors[0].shape = vec![claim / 2];
        let content = [0x80, 0x3f].repeat(claim as usize / 2);
        index.tensors[0].checksum = xxhash_rust::xxh3::xxh3_64(&content);
        (with_index(&file, &index), content)
    };
    // The zstd-coded index (format 1.2) changes length with what it records: find the
    // claim that is the limit of the file that makes it.
    let mut claim = claim_for(file.len());
    let (at_limit, content) = loop {
        let (f, content) = claiming(claim);
        if claim_for(f.len()) == claim {
            break (f, content);
        }
        claim = claim_for(f.len());
    };
    let (out, peak) = largest_alloc(|| unpack(&at_limit));
    assert!(out.unwrap() == content);
    assert!(
        peak <= 2 * claim as usize,
        "allocated {peak} for a {claim}-byte output"
    );

    // One element more than its own file allows.
    let mut over = claim + 2;
    let hostile = loop {
        let (f, _) = claiming(over);
        if over > f.len() as u64 * MAX_EXPANSION {
            break f;
        }
        over = claim_for(f.len()) + 2;
    };
    let (err, _) = refuse(&hostile);
    assert!(matches!(err, ContainerError::Limit { .. }), "{err}");
}

#[test]
fn the_writer_pads_files_that_compress_beyond_the_limit() {
    let _serial = serial();
    let zeros = vec![0u8; 8 << 20];
    let file = raw_pack(&zeros, Dtype::BF16);
    assert!(file.len() as u64 * MAX_EXPANSION >= zeros.len() as u64);
    assert!(
        file.len() < (zeros.len() / 1000),
        "padded to {} bytes",
        file.len()
    );
    assert!(unpack(&file).unwrap() == zeros);
}

#[test]
fn shapes_whose_product_overflows_are_refused() {
    let _serial = serial();
    let file = pack_small_chunks(&every_dtype_model(1));
    let mut index = index_of(&file);
    let t = &mut index.tensors[0];
    t.shape = vec![1 << 32, 1 << 32, 2];
    let (err, peak) = refuse(&with_index(&file, &index));
    assert!(
        matches!(err, ContainerError::Corrupt(Corruption::Shape { ref source, .. }) if source.shape == [1 << 32, 1 << 32, 2] && source.needs.is_none()),
        "{err}"
    );
    assert!(peak < 1 << 20);
}

#[test]
fn tensor_counts_and_offsets_beyond_the_file_are_refused() {
    let _serial = serial();
    let file = pack_small_chunks(&every_dtype_model(1));
    let index = index_of(&file);
    let at = common::index_offset(&file);

    // A tensor count of 2^32 - 1 in an index of a few hundred bytes.
    let mut bytes = index.serialize();
    let count_at = 1 + 8 + 24 + 1 + 8 + 8;
    bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let (r, peak) = largest_alloc(|| Index::parse(&bytes, at as u64));
    assert!(matches!(
        r,
        Err(ContainerError::Corrupt(Corruption::TensorCount {
            count: 4294967295,
            ..
        }))
    ));
    assert!(peak < 1 << 20);

    // A stream reaching past the stream area, and one whose end overflows.
    for (offset, len) in [(64, at as u64), (u64::MAX - 63, 128), (1 << 40, 64)] {
        let mut bad = index.clone();
        bad.tensors[0].streams[0].offset = offset;
        bad.tensors[0].streams[0].len = len;
        let (err, _) = refuse(&with_index(&file, &bad));
        assert!(
            matches!(err, ContainerError::Corrupt(Corruption::StreamPlacement { offset: o, len: l, .. }) if o == offset && l == len),
            "{err}"
        );
    }

    // A tensor ending past the original, or not where the next one starts.
    let mut bad = index.clone();
    bad.tensors[0].original_len = u64::MAX;
    let (err, _) = refuse(&with_index(&file, &bad));
    assert!(
        matches!(
            err,
            ContainerError::Corrupt(Corruption::Shape { .. } | Corruption::TensorEnd { .. })
        ),
        "{err}"
    );

    // A prefix claiming more than the header limit.
    let mut bad = index.clone();
    bad.prefix.raw_len = 1 << 40;
    let (err, peak) = refuse(&with_index(&file, &bad));
    assert!(
        matches!(err, ContainerError::Corrupt(Corruption::PrefixSize { raw_len, .. }) if raw_len == 1 << 40),
        "{err}"
    );
    assert!(peak < 1 << 20);
}

#[test]
fn stream_sizes_that_overflow_are_refused() {
    let _serial = serial();
    // Symbol counts near usize::MAX must not overflow the size computations.
    let rans = {
        let mut s = vec![2u8, 1, 5];
        s.extend_from_slice(&1u16.to_le_bytes()); // one symbol
        s.extend_from_slice(&0u16.to_le_bytes()); // symbol 0
        s.extend_from_slice(&4096u16.to_le_bytes()); // frequency 4096: a valid table
        s
    };
    for n in [usize::MAX, usize::MAX / 2, usize::MAX / 4 + 1, 1 << 62] {
        for stream in [&[0u8, 1, 2, 3][..], &rans] {
            for bits in [1, 9] {
                assert!(StreamDecoder::parse(stream, bits, n, 1 << 10).is_err());
            }
        }
    }
    // The tensor layer sizes nothing from the claim: Const streams parse for any count.
    let layout = mcodec::float_split::Layout::Bf16;
    let (r, peak) = largest_alloc(|| {
        TensorDecoder::new(
            Codec::Split(layout),
            16,
            usize::MAX - 1,
            &[&[1, 0, 0], &[1, 0, 0]],
        )
        .map(|_| ())
    });
    assert!(r.is_ok());
    assert!(peak < 1 << 20, "allocated {peak} bytes");
    let (r, peak) = largest_alloc(|| {
        TensorDecoder::new(Codec::Split(layout), 16, usize::MAX - 1, &[&rans, &[0]]).map(|_| ())
    });
    assert!(r.is_err());
    assert!(peak < 1 << 20, "allocated {peak} bytes");
}

#[test]
fn trailing_zstd_frames_and_wrong_declared_sizes_are_refused() {
    let _serial = serial();
    let data: Vec<u8> = (0..4000u32).flat_map(|i| (i / 9).to_le_bytes()).collect();
    let one = zstd::bulk::compress(&data, 3).unwrap();
    let dec = TensorDecoder::new(Codec::Zstd, 0, data.len(), &[&one]).unwrap();
    let mut out = vec![0u8; data.len()];
    dec.decode(&mut out).unwrap();
    assert!(out == data);

    let (a, b) = data.split_at(6000);
    let mut two = zstd::bulk::compress(a, 3).unwrap();
    two.extend_from_slice(&zstd::bulk::compress(b, 3).unwrap());
    let err = TensorDecoder::new(Codec::Zstd, 0, data.len(), &[&two]).unwrap_err();
    assert!(err.to_string().contains("second frame"), "{err}");
    let mut trailing = one.clone();
    trailing.push(0);
    assert!(TensorDecoder::new(Codec::Zstd, 0, data.len(), &[&trailing]).is_err());
    let err = TensorDecoder::new(Codec::Zstd, 0, data.len() + 4, &[&one]).unwrap_err();
    assert!(err.to_string().contains("declares"), "{err}");
}

#[test]
fn nonzero_padding_is_refused() {
    let _serial = serial();
    let file = pack_small_chunks(&every_dtype_model(1));
    let index = index_of(&file);
    // The gap after the first stream that does not end on the alignment.
    let s = std::iter::once(&index.prefix.stream)
        .chain(index.tensors.iter().flat_map(|t| &t.streams))
        .find(|s| (s.offset + s.len) % 64 != 0)
        .unwrap();
    let mut bad = file.clone();
    bad[(s.offset + s.len) as usize] = 1;
    let err = Archive::open(&bad).unwrap_err();
    assert!(err.to_string().contains("nonzero padding"), "{err}");
}

/// A memory-mapped file's padding is checked with the stream before each gap (opening
/// does not read pages all over the file): the tensor owning that stream, the whole-file
/// paths and `verify` refuse it; every other tensor still decodes.
#[test]
fn nonzero_padding_of_a_mapped_file_is_refused_when_read() {
    let _serial = serial();
    let file = pack_small_chunks(&every_dtype_model(1));
    let index = index_of(&file);
    // A tensor stream that does not end on the alignment (4 bytes since format 1.2: one
    // that ends on a multiple of 4 has no padding after it), and its tensor.
    let (owner, s) = index
        .tensors
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.streams.iter().map(move |s| (i, s)))
        .find(|(_, s)| (s.offset + s.len) % mcodec::container::STREAM_ALIGN != 0)
        .unwrap();
    let mut bad = file.clone();
    bad[(s.offset + s.len) as usize] = 1;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.mcz");
    std::fs::write(&path, &bad).unwrap();
    let archive = Archive::open_path(&path).expect("opening does not read the padding");
    for (i, t) in archive.index().tensors.iter().enumerate() {
        let mut out = vec![0u8; t.original_len as usize];
        let result = archive.decode_tensor(i, &mut out);
        if i == owner {
            let err = result.unwrap_err();
            assert!(err.to_string().contains("nonzero padding"), "{err}");
            assert!(archive.tensor_decoder(i).is_err());
            assert!(archive.check_padding_of(Some(i)).is_err());
        } else {
            result.unwrap_or_else(|e| panic!("tensor {i}: {e}"));
        }
    }
    let err = archive.verify(&|_| {}).unwrap_err();
    assert!(err.to_string().contains("nonzero padding"), "{err}");
    assert!(archive.unpack_to(std::io::sink(), &|_| {}).is_err());
    // The same bytes in memory are refused on open, as before.
    assert!(Archive::from_vec(bad).is_err());
}

#[test]
fn hostile_zstd_indexes_and_alignments_are_refused_before_allocation() {
    use mcodec::container::{trailer, StoredForm};
    let _serial = serial();
    let file = pack_small_chunks(&every_dtype_model(1));
    let at = common::index_offset(&file);
    let index = index_of(&file);
    let (stored, form) = index.to_stored();
    assert_ne!(form, StoredForm::V1_1);
    let rebuild = |stored: &[u8], form: StoredForm| {
        let mut out = file[..at].to_vec();
        out.extend_from_slice(stored);
        out.extend_from_slice(&trailer(at as u64, stored, index.original_len, form));
        out
    };
    assert!(Archive::open(&rebuild(&stored, form)).is_ok());
    let open_err = |f: &[u8]| {
        let (r, peak) = largest_alloc(|| Archive::open(f).map(|_| ()));
        assert!(peak < 1 << 20, "allocated {peak} bytes for a refused file");
        r.expect_err("hostile file accepted")
    };
    let frame_err = |e: ContainerError| {
        assert!(
            matches!(e, ContainerError::Corrupt(Corruption::IndexFrame { .. })),
            "{e}"
        )
    };
    // A decoded length far beyond what the stored bytes may expand to.
    let huge = StoredForm {
        index_raw_len: u64::MAX / 2,
        ..form
    };
    frame_err(open_err(&rebuild(&stored, huge)));
    // A decoded length one off, either way.
    for raw in [form.index_raw_len - 1, form.index_raw_len + 1] {
        let off = StoredForm {
            index_raw_len: raw,
            ..form
        };
        frame_err(open_err(&rebuild(&stored, off)));
    }
    // A frame cut short anywhere, or followed by a byte.
    for len in 0..stored.len() {
        let _ = open_err(&rebuild(&stored[..len], form));
    }
    let mut longer = stored.clone();
    longer.push(0);
    frame_err(open_err(&rebuild(&longer, form)));
    // Alignment exponents outside 2..=6.
    for bad in [1u8, 7, 255] {
        let mut f = rebuild(&stored, form);
        let t = f.len() - 64;
        f[t + 40] = bad;
        let check = xxhash_rust::xxh3::xxh3_64(&f[t..t + 56]);
        f[t + 56..].copy_from_slice(&check.to_le_bytes());
        let e = open_err(&f);
        assert!(
            matches!(e, ContainerError::Corrupt(Corruption::Alignment { found }) if found == bad),
            "{e}"
        );
    }
    // The same index stored as it is with a 64-byte alignment claimed: the 4-aligned
    // streams are refused.
    let raw = index.serialize();
    let _ = open_err(&rebuild(&raw, StoredForm::V1_1));
}
