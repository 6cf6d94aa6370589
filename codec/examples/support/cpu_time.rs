//! CPU-time clocks for the measuring examples, which include this file with
//! `#[path = "support/cpu_time.rs"] mod cpu_time;`. Other processes sharing the cores
//! inflate wall time but not the CPU time of the code being measured.
#![allow(dead_code)] // each example uses some of these

/// CPU time of the calling thread, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    clock_seconds(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process (every thread), in seconds.
pub fn process_cpu_seconds() -> f64 {
    clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The calling thread's CPU time from a starting point: `CpuClock::now()`, then
/// `elapsed()` in seconds.
pub struct CpuClock(f64);

impl CpuClock {
    /// Starts measuring.
    pub fn now() -> Self {
        Self(thread_cpu_seconds())
    }

    /// Seconds of this thread's CPU time since [`CpuClock::now`].
    pub fn elapsed(&self) -> f64 {
        thread_cpu_seconds() - self.0
    }
}

fn clock_seconds(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to write.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
