//! The binary's heap (glibc on Linux; elsewhere these do nothing): the buffers of a few
//! hundred KiB to a few MiB that the decoders and the store allocate and free per object
//! (object reads, decoder buffers, slot tables) served from the threads' heaps in
//! transparent huge pages, instead of each from fresh 4 KiB pages the kernel maps and
//! zeroes one fault at a time. This is close to what `GLIBC_TUNABLES=
//! glibc.malloc.hugetlb=1:glibc.malloc.top_pad=32MiB:glibc.malloc.mmap_threshold=32MiB:
//! glibc.malloc.trim_threshold=128MiB` gives a process, which it cannot set for itself
//! (there is no `mallopt` for `hugetlb`). A 45 MB hub-store `get` (2 threads): page
//! faults ~2,350 → ~550, CPU −5 to −6 % (BENCHMARKS.md, twenty-fourth session).
//!
//! Only an `mcodec` process does this ([`crate::process::main`]: the binary, or the Python
//! package's `mcodec` console script), and only for `pack` and `store` (`store get` as
//! above; `pack` of MiniLM BF16: ~11,450 → ~1,350 faults, CPU −14 to −18 % in three of
//! four sets). Not for the other commands: `unpack` measured slower (+3 to +6 % CPU,
//! ~5,200 more faults: its main thread clearing heap memory that a fresh mapping would
//! give it zeroed). The library (and the Python package's API) leave the allocator alone.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether [`tune`] ran (the heap advice follows it).
static TUNED: AtomicBool = AtomicBool::new(false);

/// Sets glibc's malloc thresholds: blocks up to 4 MiB from the heap (not a fresh
/// mapping each, faulted in and unmapped again), heaps grown 32 MiB at a time and
/// trimmed only past 128 MiB free; larger (tensor-sized) blocks stay fresh mappings.
/// Makes [`advise_thread_heap`] act. Call before any other thread exists.
pub(crate) fn tune() {
    TUNED.store(true, Ordering::Relaxed);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TOP_PAD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// Advises the calling thread's glibc heap for transparent huge pages, as
/// `glibc.malloc.hugetlb=1` does for every heap glibc creates (run on each worker of the
/// pool as it starts). A thread's heap (not the main one) is a reservation of 64 MiB
/// aligned to its size, found from a block allocated on it; a block in the main heap
/// (below the program break) is left alone. Its first 2 MiB, which already holds small
/// pages (the heap's header, the thread's caches), is collapsed into one huge page.
/// Advice only: where an assumption fails, page sizes are all that changes, never data.
/// Does nothing unless [`tune`] ran.
pub(crate) fn advise_thread_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    if TUNED.load(Ordering::Relaxed) {
        // glibc's HEAP_MAX_SIZE on 64-bit targets: 2 × DEFAULT_MMAP_THRESHOLD_MAX.
        const HEAP_MAX: usize = 64 << 20;
        const HUGE_PAGE: usize = 2 << 20;
        // A block too large for the thread's small-block caches, so it comes from the
        // heap itself; kept opaque (an allocation seen to be unused may be left out).
        let probe: Vec<u8> = std::hint::black_box(Vec::with_capacity(64 << 10));
        let at = probe.as_ptr().addr();
        // SAFETY: `sbrk(0)` only reads the current program break.
        let brk = unsafe { libc::sbrk(0) }.addr();
        if at >= brk {
            let base = std::ptr::without_provenance_mut::<libc::c_void>(at & !(HEAP_MAX - 1));
            // SAFETY: advice on the address space this thread's heap reserved: neither
            // call changes any byte of memory, and both fail harmlessly on a range that
            // is not what they expect (unmapped, or not collapsible).
            unsafe {
                libc::madvise(base, HEAP_MAX, libc::MADV_HUGEPAGE);
                libc::madvise(base, HUGE_PAGE, libc::MADV_COLLAPSE);
            }
        }
        drop(probe);
    }
}
