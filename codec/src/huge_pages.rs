//! Transparent huge pages for the large outputs of a whole-file load, while they come cheap.
//!
//! A loader decodes into fresh memory, and the kernel maps it a page at a time: on the
//! Firecracker guests these loads are measured on, a fresh 4 KiB page costs ~1.6–2.7 µs
//! (a third to a half of a warm MiniLM load), a 2 MiB huge page 0.17–0.3 ms, i.e.
//! 0.35–0.7 µs per 4 KiB (`benches/fresh_pages.py`), as long as the host still backs it.
//! Where the guest has reported the free block to the host (virtio-balloon free page
//! reporting returns free 2 MiB blocks), the first touch of a huge page faults on the host
//! page by page: 4–9 ms for one. So outputs are advised `MADV_HUGEPAGE` only on systems
//! whose THP mode is `madvise` (with `always` the kernel does it unasked; with `never`
//! nothing can), every populate is timed ([`note_populate`]), and the first slow one stops
//! huge pages for the rest of the tensor and, for [`BACKOFF`], for every later one: a
//! dear host costs a load one or two huge pages, not all of them.

#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(target_os = "linux")]
use std::time::Duration;

/// The size of a huge page on x86-64 and most ARM kernels with 4 KiB pages.
#[cfg(target_os = "linux")]
pub(crate) const HUGE: usize = 2 << 20;

/// A populate slower than this per 4 KiB page requested means huge pages are dear: a
/// cheap huge page costs up to ~1.4 µs per 4 KiB asked for (0.35 ms when a 1 MiB piece
/// faults in its whole 2 MiB), 4 KiB pages ~1.6–4 µs under load, a dear huge page 16 µs
/// or more.
#[cfg(target_os = "linux")]
const DEAR_NS_PER_PAGE: u128 = 8_000;

/// How long after a dear populate no output is advised (memory freed since may have come
/// back cheap, but the next try costs a huge page again).
#[cfg(target_os = "linux")]
pub(crate) const BACKOFF: Duration = Duration::from_secs(30);

/// When the last dear populate was seen: milliseconds since [`epoch`] plus one (0: never).
#[cfg(target_os = "linux")]
static DEAR_AT_MS: AtomicU64 = AtomicU64::new(0);

#[cfg(target_os = "linux")]
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

#[cfg(target_os = "linux")]
fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1)
}

/// Whether a populate was dear within the last [`BACKOFF`].
#[cfg(target_os = "linux")]
pub(crate) fn dear() -> bool {
    let at = DEAR_AT_MS.load(Ordering::Relaxed);
    at != 0 && now_ms().saturating_add(1) < at.saturating_add(BACKOFF.as_millis() as u64)
}

/// Outputs advised now: populates are judged only while there are any.
#[cfg(target_os = "linux")]
static ACTIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether populates are to be timed (an output is advised now).
#[cfg(target_os = "linux")]
pub(crate) fn timing() -> bool {
    ACTIVE.load(Ordering::Relaxed) > 0
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): what a populate is judged by,
/// since wall time also counts the thread being preempted (a 2 MiB step of 4 KiB pages
/// took up to 10 ms of wall time beside other helpers' builds); the host's page faults
/// under a dear huge page run while the thread runs. `None` where it cannot be read.
#[cfg(target_os = "linux")]
pub(crate) fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    ok.then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Populates of fewer 4 KiB pages than this are not judged (too few to tell a huge page's
/// cost from noise).
#[cfg(target_os = "linux")]
pub(crate) const JUDGED_PAGES: usize = 64;

/// Records how long (CPU time of the calling thread, [`thread_cpu`]) mapping `pages`
/// fresh 4 KiB pages took (one `MADV_POPULATE_WRITE` while [`timing`]).
#[cfg(target_os = "linux")]
pub(crate) fn note_populate(pages: usize, took: Duration) {
    if pages >= JUDGED_PAGES && took.as_nanos() > DEAR_NS_PER_PAGE * pages as u128 {
        DEAR_AT_MS.store(now_ms().saturating_add(1), Ordering::Relaxed);
    }
}

/// Whether the kernel's THP mode is `madvise` and the user did not turn the advice off
/// with `MCODEC_HUGE_PAGES=0` (or `off`): for hosts where huge pages are always dear, and
/// for A/B measurements (read once).
#[cfg(target_os = "linux")]
fn thp_on_advice() -> bool {
    static MODE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| {
        let off = std::env::var("MCODEC_HUGE_PAGES").is_ok_and(|v| {
            let v = v.trim();
            v == "0" || v.eq_ignore_ascii_case("off")
        });
        !off && std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[madvise]"))
    })
}

/// The whole huge pages of one output advised `MADV_HUGEPAGE`, until [`Advised::end`] (or
/// drop) advises them `MADV_NOHUGEPAGE`: in `madvise` mode the same as never advised,
/// so that khugepaged does not later fill memory the allocator reuses with huge pages.
pub(crate) struct Advised {
    #[cfg(target_os = "linux")]
    start: usize,
    #[cfg(target_os = "linux")]
    len: usize,
    #[cfg(target_os = "linux")]
    ended: AtomicBool,
}

/// Advises the 2 MiB-aligned blocks inside `out` for huge pages, where that may pay: on
/// Linux in THP mode `madvise`, no dear populate seen lately, and at least one whole
/// block inside. Changes no byte of `out`.
pub(crate) fn advise(out: &mut [u8]) -> Option<Advised> {
    #[cfg(target_os = "linux")]
    {
        if out.len() < 2 * HUGE || !thp_on_advice() || dear() {
            return None;
        }
        let addr = out.as_mut_ptr() as usize;
        let start = addr.next_multiple_of(HUGE);
        let end = (addr + out.len()) / HUGE * HUGE;
        if end <= start {
            return None;
        }
        // SAFETY: [start, end) lies inside `out`, which the caller holds exclusively;
        // MADV_HUGEPAGE changes only how later faults map it (a huge page is zeroed like
        // a small one; pages already mapped keep their contents), no byte of it.
        let ok =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) }
                == 0;
        ok.then(|| {
            ACTIVE.fetch_add(1, Ordering::Relaxed);
            Advised {
                start,
                len: end - start,
                ended: AtomicBool::new(false),
            }
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = out;
        None
    }
}

impl Advised {
    /// Ends the advice (once; later calls do nothing): pages mapped so far stay as they
    /// are, later faults map 4 KiB pages.
    pub(crate) fn end(&self) {
        #[cfg(target_os = "linux")]
        if !self.ended.swap(true, Ordering::Relaxed) {
            ACTIVE.fetch_sub(1, Ordering::Relaxed);
            // SAFETY: the range was advised by `advise` inside memory the decode still
            // holds; MADV_NOHUGEPAGE changes how later faults map it, no byte of it.
            unsafe {
                libc::madvise(
                    self.start as *mut libc::c_void,
                    self.len,
                    libc::MADV_NOHUGEPAGE,
                );
            }
        }
    }

    /// Ends the advice if a populate was dear since (see the module's docs).
    pub(crate) fn end_if_dear(&self) {
        #[cfg(target_os = "linux")]
        if dear() {
            self.end();
        }
    }
}

impl Drop for Advised {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn advice_keeps_contents_and_ends_once() {
        // 6 MiB holds at least two whole 2 MiB blocks wherever the allocator puts it.
        let mut buf: Vec<u8> = (0..6 << 20).map(|i: usize| (i % 251) as u8).collect();
        let advised = advise(&mut buf);
        // None off THP mode `madvise`, or while another test's slow populate counts.
        if let Some(a) = advised.as_ref() {
            assert!(a.len >= 2 * HUGE && a.start.is_multiple_of(HUGE));
            assert!(timing());
            a.end();
            a.end(); // a second end does nothing (and does not count down twice)
        }
        drop(advised);
        assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        // Too small for a whole block: nothing advised.
        assert!(advise(&mut [0u8; 4096]).is_none());
    }

    #[test]
    fn a_slow_populate_marks_huge_pages_dear() {
        note_populate(64, Duration::from_micros(64)); // 1 µs a page: cheap
        note_populate(10, Duration::from_secs(1)); // too few pages to judge
        note_populate(256, Duration::from_millis(9)); // 35 µs a page: a dear huge page
        assert!(dear());
    }
}
