//! How decoders populate their output pages ahead of the merge (see `prefault`).

/// The system's page size: 4 KiB on x86-64, but 16 or 64 KiB on some ARM kernels, where
/// `mincore` and `madvise` refuse addresses aligned to 4 KiB only.
#[cfg(target_os = "linux")]
pub(super) fn page_size() -> usize {
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
pub(super) struct Shares {
    pub(super) start: usize,
    pub(super) len: usize,
    pub(super) output_end: usize,
}

/// How many bytes at the head of a share `[start, start + len)` of `shares` lie in a
/// `block`-aligned block that starts in an earlier share (at or after `shares.start`,
/// before `start`), ends by `shares.output_end`, and of which that share holds at least
/// `judged` bytes: that share's task populates it (see [`prefault_task`]). 0 otherwise.
#[cfg(target_os = "linux")]
pub(super) fn head_owned_by_earlier(
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
pub(super) fn first_unmapped_page(first: usize, end: usize, page: usize) -> Option<usize> {
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
