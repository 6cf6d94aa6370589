//! Output buffers on huge pages: decoding into fresh memory (a just-allocated tensor)
//! costs one page fault per 4 KiB page; asking for transparent huge pages first cuts the
//! faults of large tensors 512-fold where the kernel allows it (`madvise` mode).

/// Smallest buffer worth advising: below a couple of huge pages there is little to gain.
const MIN_BYTES: usize = 4 << 20;
/// The x86-64 / arm64 huge page size.
const HUGE_PAGE: usize = 2 << 20;

/// Hints that the `len` bytes at `address` (memory the caller owns) be backed by huge
/// pages. Advice only: failures are ignored and the bytes are unchanged.
pub(crate) fn advise(address: usize, len: usize) {
    #[cfg(target_os = "linux")]
    if len >= MIN_BYTES {
        let start = address.next_multiple_of(HUGE_PAGE);
        let end = (address + len) / HUGE_PAGE * HUGE_PAGE;
        if end > start {
            // SAFETY: MADV_HUGEPAGE changes how the kernel backs pages of a mapping, never
            // their contents; the range lies inside the caller's buffer (rounded inwards
            // to huge-page boundaries) and an unmapped range only makes the call fail.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (address, len, MIN_BYTES, HUGE_PAGE);
}
