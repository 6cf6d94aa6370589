//! `Archive::decode_tensor_releasing`: a mapped file's tensors decoded while their
//! compressed pages are dropped piece by piece give exactly what `decode_tensor` gives,
//! on any thread count, again after a release, and fail alike on damage.

mod common;

use common::{every_dtype_model, pack_small_chunks, Rng};
use mcodec::container::Archive;

/// A model of every dtype plus big tensors of several hundred chunk pairs (at the
/// 1024-element chunks of `pack_small_chunks`), odd lengths and NaN payloads included.
fn model() -> Vec<u8> {
    let mut rng = Rng(7);
    let mut big = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.weight(0.05)).collect() };
    let bf16: Vec<u8> = big(400_001)
        .iter()
        .enumerate()
        .flat_map(|(i, v)| {
            let h = if i % 9973 == 0 {
                0x7FC1
            } else {
                (v.to_bits() >> 16) as u16
            };
            h.to_le_bytes()
        })
        .collect();
    let f32: Vec<u8> = big(300_007)
        .iter()
        .enumerate()
        .flat_map(|(i, v)| {
            let b = if i % 7919 == 0 {
                0xFFC0_0123
            } else {
                v.to_bits()
            };
            b.to_le_bytes()
        })
        .collect();
    let small = every_dtype_model(3);
    // Reuse the small model's tensors by packing them beside the big ones: parse its
    // header for names, dtypes, shapes and bytes.
    let header_len = u64::from_le_bytes(small[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&small[8..8 + header_len]).unwrap();
    let data = &small[8 + header_len..];
    let mut tensors: Vec<(String, String, Vec<u64>, Vec<u8>)> =
        vec![("big-bf16".into(), "BF16".into(), vec![400_001], bf16)];
    for (name, t) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let off: Vec<usize> = t["data_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        tensors.push((
            name.clone(),
            t["dtype"].as_str().unwrap().into(),
            t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect(),
            data[off[0]..off[1]].to_vec(),
        ));
    }
    tensors.push(("big-f32".into(), "F32".into(), vec![300_007], f32));
    let refs: Vec<(&str, &str, Vec<u64>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), d.as_str(), s.clone(), b.clone()))
        .collect();
    common::safetensors(&refs)
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// Every tensor of `archive` decoded by `decode_tensor`: what the other paths must give.
fn decoded_by_decode_tensor(archive: &Archive) -> Vec<Vec<u8>> {
    (0..archive.index().tensors.len())
        .map(|i| {
            let mut out = vec![0u8; archive.index().tensors[i].original_len as usize];
            archive.decode_tensor(i, &mut out).unwrap();
            out
        })
        .collect()
}

#[test]
fn releasing_decodes_exactly_what_decode_tensor_does() {
    let file = pack_small_chunks(&model());
    let reference = Archive::open(&file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.mcz");
    std::fs::write(&path, &file).unwrap();
    let mapped = Archive::open_path(&path).unwrap();
    let want = decoded_by_decode_tensor(&reference);
    assert!(
        want.iter().any(|w| w.len() > 1 << 20),
        "a tensor of many pieces"
    );
    for threads in [1, 2, 3] {
        pool(threads).install(|| {
            // Twice: the second decode reads the released pages back from the file.
            for round in 0..2 {
                for (i, w) in want.iter().enumerate() {
                    let mut out = vec![0x5Au8; w.len()];
                    mapped
                        .decode_tensor_releasing(i, &mut out)
                        .unwrap_or_else(|e| panic!("tensor {i}, {threads} threads: {e}"));
                    assert!(out == *w, "tensor {i}, {threads} threads, round {round}");
                }
            }
        });
    }
    // In-memory archives have nothing to release and decode alike.
    let mut out = vec![0u8; want[0].len()];
    reference.decode_tensor_releasing(0, &mut out).unwrap();
    assert!(out == want[0]);
}

/// A copy of a file with one byte flipped, and that byte's offset.
type DamagedCopy = (u64, Vec<u8>);

/// The small-chunk model's file, the index of its tensor "big-bf16", and copies of the file
/// each damaged by one flipped byte in that tensor's last (coded) stream: mid-stream and at
/// its last byte.
fn big_tensor_damaged() -> (Vec<u8>, usize, Vec<DamagedCopy>) {
    let file = pack_small_chunks(&model());
    let index = Archive::open(&file).unwrap().index().clone();
    let (i, t) = index
        .tensors
        .iter()
        .enumerate()
        .find(|(_, t)| t.name == "big-bf16")
        .unwrap();
    let s = t.streams.last().unwrap();
    let damaged = [s.offset + s.len / 2, s.offset + s.len - 1]
        .into_iter()
        .map(|at| {
            let mut bad = file.clone();
            bad[at as usize] ^= 0x10;
            (at, bad)
        })
        .collect();
    (file, i, damaged)
}

#[test]
fn releasing_fails_on_damage_as_decode_tensor_does() {
    let (file, i, damaged) = big_tensor_damaged();
    let len = Archive::open(&file).unwrap().index().tensors[i].original_len as usize;
    let dir = tempfile::tempdir().unwrap();
    for (at, bad) in damaged {
        let path = dir.path().join(format!("bad-{at}.mcz"));
        std::fs::write(&path, &bad).unwrap();
        let mapped = Archive::open_path(&path).unwrap();
        for threads in [1, 2] {
            pool(threads).install(|| {
                let mut a = vec![0u8; len];
                let mut b = vec![0u8; len];
                let plain = mapped.decode_tensor(i, &mut a).unwrap_err().to_string();
                let releasing = mapped
                    .decode_tensor_releasing(i, &mut b)
                    .unwrap_err()
                    .to_string();
                assert_eq!(releasing, plain, "byte {at}, {threads} threads");
                assert!(plain.contains("big-bf16"), "{plain}");
            });
        }
    }
}

/// A big tensor (6 MB) from a cold page cache (the file's pages dropped with
/// `posix_fadvise`; where the file system keeps them, the warm path runs instead), read
/// ahead by `prefetch` while it decodes: exact, into fresh and into written memory alike.
#[cfg(target_os = "linux")]
#[test]
fn releasing_from_a_cold_page_cache_decodes_exactly() {
    use std::os::fd::AsRawFd;
    let mut rng = Rng(11);
    let f32: Vec<u8> = (0..1_500_000)
        .flat_map(|_| rng.weight(0.05).to_bits().to_le_bytes())
        .collect();
    let file = pack_small_chunks(&common::safetensors(&[(
        "big",
        "F32",
        vec![1_500_000],
        f32.clone(),
    )]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cold.mcz");
    std::fs::write(&path, &file).unwrap();
    for (threads, fresh) in [(1, true), (2, true), (3, false)] {
        let f = std::fs::File::open(&path).unwrap();
        f.sync_all().unwrap();
        // SAFETY: a plain system call on a descriptor this test owns.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let mapped = Archive::open_file(&f).unwrap();
        let i = mapped.find("big").unwrap();
        pool(threads).install(|| {
            mapped.prefetch();
            // A fresh allocation this large is fresh pages; the other is written first.
            let mut out = if fresh {
                vec![0u8; f32.len()]
            } else {
                vec![0x5Au8; f32.len()]
            };
            mapped.decode_tensor_releasing(i, &mut out).unwrap();
            assert!(out == f32, "{threads} threads, fresh output {fresh}");
        });
    }
}

/// The resident kilobytes of this process's mappings of the file at `path`
/// (`/proc/self/smaps`).
#[cfg(target_os = "linux")]
fn mapped_kb(path: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_str().unwrap();
    let mut ours = false;
    let mut kb = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: address range, permissions, offset, device, inode, path.
            ours = line.ends_with(name);
        } else if ours && first == "Rss:" {
            kb += words.next().unwrap().parse::<u64>().unwrap();
        }
    }
    kb
}

/// `decode_tensor_releasing_later` decodes exactly what `decode_tensor` does and leaves
/// the pages of a tensor's streams (beyond whole steps of a big one) mapped, and one
/// `release_tensors` call over all of them drops them from the resident set.
#[cfg(target_os = "linux")]
#[test]
fn release_tensors_drops_what_decoding_releasing_later_left() {
    let file = pack_small_chunks(&model());
    let reference = Archive::open(&file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later.mcz");
    std::fs::write(&path, &file).unwrap();
    let mapped = Archive::open_path(&path).unwrap();
    let n = mapped.index().tensors.len();
    assert!(
        mapped_kb(&path) <= 16,
        "opening leaves little mapped: {} KiB",
        mapped_kb(&path)
    );
    pool(2).install(|| {
        for i in 0..n {
            let len = reference.index().tensors[i].original_len as usize;
            let (mut want, mut got) = (vec![0u8; len], vec![0x5Au8; len]);
            reference.decode_tensor(i, &mut want).unwrap();
            mapped.decode_tensor_releasing_later(i, &mut got).unwrap();
            assert!(got == want, "tensor {i}");
        }
    });
    let before = mapped_kb(&path);
    assert!(
        before * 1024 > file.len() as u64 / 2,
        "the decoded streams stay mapped: {before} KiB of a {} byte file",
        file.len()
    );
    // Out-of-range indices are ignored; tensors given twice are released once.
    let mut all: Vec<usize> = (0..n).rev().collect();
    all.extend([0, n, usize::MAX]);
    mapped.release_tensors(&all);
    let after = mapped_kb(&path);
    assert!(
        after <= 16,
        "released: {after} KiB still mapped (was {before})"
    );
    // Released pages come back from the page cache.
    let mut out = vec![0u8; reference.index().tensors[0].original_len as usize];
    mapped.decode_tensor(0, &mut out).unwrap();
    let mut want = vec![0u8; out.len()];
    reference.decode_tensor(0, &mut want).unwrap();
    assert!(out == want);
}

/// Runs `f` on `threads` threads of their own at once (what a loader's pool does).
fn on_threads(threads: usize) -> impl FnOnce(&(dyn Fn() + Sync)) {
    move |f| {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(f);
            }
        })
    }
}

/// `decode_many` gives every tensor exactly, whatever the threads working through it
/// (none at all included: the caller's thread then does it all), the order of the
/// targets and whether pages are released; each tensor is reported done once.
#[test]
fn decode_many_decodes_exactly_on_any_threads() {
    let file = pack_small_chunks(&model());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.mcz");
    std::fs::write(&path, &file).unwrap();
    let mapped = Archive::open_path(&path).unwrap();
    let n = mapped.index().tensors.len();
    let want = decoded_by_decode_tensor(&mapped);
    for threads in [0, 1, 2, 3] {
        for (release, reverse) in [(true, false), (false, true), (true, true)] {
            let mut outs: Vec<Vec<u8>> = want.iter().map(|w| vec![0x5Au8; w.len()]).collect();
            let mut targets: Vec<(usize, &mut [u8])> = outs
                .iter_mut()
                .enumerate()
                .map(|(i, o)| (i, o.as_mut_slice()))
                .collect();
            if reverse {
                targets.reverse();
            }
            let done = std::sync::Mutex::new(Vec::new());
            mapped
                .decode_many(targets, release, on_threads(threads), &|i| {
                    done.lock().unwrap().push(i)
                })
                .unwrap_or_else(|e| panic!("{threads} threads: {e}"));
            let mut done = done.into_inner().unwrap();
            done.sort_unstable();
            assert_eq!(done, (0..n).collect::<Vec<_>>(), "{threads} threads");
            for (i, (o, w)) in outs.iter().zip(&want).enumerate() {
                assert!(o == w, "tensor {i}, {threads} threads, release {release}");
            }
        }
    }
    // A buffer of the wrong length is refused before anything is decoded.
    let mut short = vec![0u8; want[0].len() - 1];
    let err = mapped
        .decode_many(vec![(0, &mut short)], true, on_threads(2), &|_| {})
        .unwrap_err();
    assert!(err.to_string().contains("buffer"), "{err}");
}

/// Damage inside a big tensor's streams fails `decode_many` with the error that
/// `decode_tensor` gives (the tensor named), on one thread or several, without a panic.
#[test]
fn decode_many_fails_on_damage_as_decode_tensor_does() {
    let (file, i, damaged) = big_tensor_damaged();
    let index = Archive::open(&file).unwrap().index().clone();
    for (at, bad) in damaged {
        let archive = Archive::open(&bad).unwrap();
        let mut a = vec![0u8; index.tensors[i].original_len as usize];
        let plain = archive.decode_tensor(i, &mut a).unwrap_err().to_string();
        for threads in [1, 2, 3] {
            let mut outs: Vec<Vec<u8>> = index
                .tensors
                .iter()
                .map(|t| vec![0u8; t.original_len as usize])
                .collect();
            let targets = outs
                .iter_mut()
                .enumerate()
                .map(|(i, o)| (i, o.as_mut_slice()))
                .collect();
            let many = archive
                .decode_many(targets, false, on_threads(threads), &|_| {})
                .unwrap_err()
                .to_string();
            assert_eq!(many, plain, "byte {at}, {threads} threads");
            assert!(plain.contains("big-bf16"), "{plain}");
        }
    }
}
