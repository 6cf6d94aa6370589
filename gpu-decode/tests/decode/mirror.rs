//! The kernel's CPU mirror against the CPU decoder: bit-identical on fixtures, generated
//! multi-chunk tensors of every float dtype and (when present) real MiniLM weights; and it
//! stays in bounds and reports corruption on damaged streams.

use crate::common::*;
use mcodec::container::Archive;
use mcodec::EncodeOptions;
use mcodec_gpu::plan::{Body, Prepared, DEFAULT_MAX_TABLES, MODE_CONST, MODE_PACKED, MODE_RANS};

/// Decodes every tensor of `mcz` with the mirror and compares with the CPU decoder.
/// Returns how many tensors the kernel path decoded, which stream modes it met and how
/// many kernel launches (table-count classes) the decode took.
pub(crate) fn check_file(mcz: &[u8], what: &str) -> (usize, [bool; 3], usize) {
    let archive = Archive::open(mcz).expect("open");
    let prepared = Prepared::new(&archive, None, DEFAULT_MAX_TABLES).expect("prepare");
    let all: Vec<usize> = (0..prepared.tensors.len()).collect();
    let (out, offsets) = mcodec_gpu::mirror_decode(&prepared, &all).expect("mirror decode");
    let mut kernel = 0;
    let mut modes = [false; 3];
    for (t, &off) in prepared.tensors.iter().zip(&offsets) {
        let want = cpu_tensor(&archive, t.index);
        let got = &out[off as usize..off as usize + want.len()];
        assert!(
            got == want.as_slice(),
            "{what}: tensor {:?} differs",
            t.name
        );
        if let Body::Split(d) = &t.body {
            kernel += 1;
            for f in &d.fields[..d.n_fields as usize] {
                modes[f.mode as usize] = true;
            }
        }
    }
    let (descs, _) = mcodec_gpu::launch_work(&prepared.tensors, &all, &offsets, 0, 0, 0);
    let launches = mcodec_gpu::plan::launches(&descs, mcodec_gpu::plan::DEFAULT_WARP_SLOTS);
    (kernel, modes, launches.len())
}

#[test]
fn mirror_matches_cpu_on_every_fixture() {
    let dir = golden_dir();
    let mut files = 0;
    let mut kernel = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures/golden") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "mcz") {
            let bytes = std::fs::read(&path).expect("read");
            kernel += check_file(&bytes, &path.display().to_string()).0;
            files += 1;
        }
    }
    assert!(
        files >= 5 && kernel > 100,
        "{files} files, {kernel} kernel tensors"
    );
}

#[test]
fn mirror_matches_cpu_on_multi_chunk_tensors_of_every_dtype() {
    let model = generated_model();
    let mut modes = [false; 3];
    let mut most_launches = 0;
    for (name, settings) in encode_settings() {
        let mcz = pack_with(&model, settings);
        let (kernel, m, launches) = check_file(&mcz, name);
        most_launches = most_launches.max(launches);
        assert!(kernel >= 5, "{name}: {kernel} tensors on the kernel path");
        for (a, b) in modes.iter_mut().zip(m) {
            *a |= b;
        }
    }
    assert!(
        modes[MODE_PACKED as usize] && modes[MODE_CONST as usize] && modes[MODE_RANS as usize],
        "modes met: {modes:?}"
    );
    println!("most kernel launches in one decode: {most_launches}");
}

#[test]
fn mirror_matches_cpu_on_minilm_when_present() {
    let mcz = match minilm_mcz() {
        Ok(m) => m,
        Err(why) => {
            skip(&format!(
                "no MiniLM weights ({why}); bench data is not in the repository"
            ));
            return;
        }
    };
    let (kernel, _, _) = check_file(&mcz, "minilm");
    assert!(kernel > 50, "{kernel} tensors on the kernel path");
}

#[test]
fn damaged_streams_stay_in_bounds_and_are_reported() {
    // The host checks checksums, so this damages the arena after validation: what the
    // kernel would meet if device memory were corrupt or a check were missing. The mirror
    // panics on any access outside the uploaded buffers.
    let mcz = pack_with(
        &generated_model(),
        EncodeOptions {
            chunk_log2: 10,
            block_log2: 5,
            ..Default::default()
        },
    );
    let archive = Archive::open(&mcz).expect("open");
    let clean = Prepared::new(&archive, None, DEFAULT_MAX_TABLES).expect("prepare");
    let all: Vec<usize> = (0..clean.tensors.len()).collect();
    let (want, _) = mcodec_gpu::mirror_decode(&clean, &all).expect("clean decode");
    // Byte ranges of rANS fields: the block ids (uploaded as the host parsed them: mode 4
    // streams run-code them) and the payloads (from the first to the end of the last).
    let mut ranges = Vec::new();
    for t in &clean.tensors {
        if let Body::Split(d) = &t.body {
            for f in &d.fields[..d.n_fields as usize] {
                if f.mode == MODE_RANS {
                    let ids = f.block_ids as usize;
                    ranges.push((ids, ids + d.n.div_ceil(1 << f.block_log2) as usize));
                    let chunks = d.n.div_ceil(1 << d.chunk_log2) as usize;
                    let word = |i: usize| {
                        let at = f.chunk_index as usize + 8 * i;
                        u64::from_le_bytes(clean.arena[at..at + 8].try_into().unwrap()) as usize
                    };
                    let stream = f.stream as usize;
                    // The second word: the payload's length (low half), its raw area's.
                    let end = word(2 * chunks - 2) + (word(2 * chunks - 1) & 0xFFFF_FFFF);
                    ranges.push((stream + word(0), stream + end));
                }
            }
        }
    }
    assert!(!ranges.is_empty());
    let mut rng = mcodec_fixtures::rng::SplitMix64::new(99);
    let (mut reported, mut trials) = (0, 0);
    for _ in 0..60 {
        let mut damaged = Prepared {
            arena: clean.arena.clone(),
            tables: clean.tables.clone(),
            tensors: clean.tensors.clone(),
        };
        let (from, to) = ranges[rng.below(ranges.len() as u64) as usize];
        for _ in 0..4 {
            let at = from + rng.below((to - from) as u64) as usize;
            damaged.arena[at] ^= 1 << rng.below(8);
        }
        trials += 1;
        match mcodec_gpu::mirror_decode(&damaged, &all) {
            Err(e) => {
                assert!(e.to_string().contains("chunk"), "{e}");
                reported += 1;
            }
            // A flip in alignment padding changes nothing.
            Ok((out, _)) => assert_eq!(out.len(), want.len()),
        }
    }
    assert!(
        reported * 2 > trials,
        "{reported} of {trials} damaged arenas reported"
    );
}

/// `decode_into_raw` (the Python package's `device="cuda"` path) writes each tensor into
/// memory of its own, anywhere: here in reverse order with gaps between, which the mirror
/// decodes bit-identically to the CPU; a wrong length or a misaligned address is refused.
#[test]
fn raw_targets_in_scattered_memory_match_cpu() {
    use mcodec_gpu::RawTarget;
    const BASE: u64 = 7 << 40;
    let mcz = pack_with(&generated_model(), EncodeOptions::default());
    let archive = Archive::open(&mcz).expect("open");
    let prepared = Prepared::new(&archive, None, DEFAULT_MAX_TABLES).expect("prepare");
    // Reverse order, each tensor at a 16-byte multiple with 48 bytes of gap before it.
    let mut at = 0u64;
    let mut targets = Vec::new();
    for (i, t) in prepared.tensors.iter().enumerate().rev() {
        at = (at + 48).next_multiple_of(16);
        targets.push(RawTarget {
            tensor: i,
            address: BASE + at,
            len: t.out_len,
        });
        at += t.out_len;
    }
    const FILL: u8 = 0xA5;
    let mut out = vec![FILL; at as usize + 64];
    mcodec_gpu::mirror_decode_raw(&prepared, &targets, &mut out, BASE).expect("mirror decode");
    let mut written = 0;
    for target in &targets {
        let t = &prepared.tensors[target.tensor];
        let want = cpu_tensor(&archive, t.index);
        let from = (target.address - BASE) as usize;
        assert!(
            out[from..from + want.len()] == want[..],
            "tensor {:?} differs",
            t.name
        );
        // The gap before each tensor is untouched.
        assert!(
            out[from - 48..from].iter().all(|&b| b == FILL),
            "{:?}: gap written",
            t.name
        );
        written += want.len();
    }
    assert!(targets.len() >= 5 && written > 0);

    let big = targets
        .iter()
        .position(|t| t.len > 0)
        .expect("a non-empty tensor");
    let mut wrong_len = targets.clone();
    wrong_len[big].len -= 1;
    let e = mcodec_gpu::mirror_decode_raw(&prepared, &wrong_len, &mut out, BASE).unwrap_err();
    assert!(e.to_string().contains("bytes given"), "{e}");
    let mut misaligned = targets.clone();
    misaligned[big].address += 8;
    let e = mcodec_gpu::mirror_decode_raw(&prepared, &misaligned, &mut out, BASE).unwrap_err();
    assert!(e.to_string().contains("not 16-byte aligned"), "{e}");
}
