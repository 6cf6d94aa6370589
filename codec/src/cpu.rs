//! Run-time choice between the vector (AVX-512) and the portable scalar code paths.
//!
//! Both paths produce identical bytes; the switch exists for testing the scalar path on
//! machines that have the vector one, and for users who want to rule SIMD out. The
//! environment variable `MCODEC_NO_SIMD=1` turns the vector paths off at start-up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static FORCE_SCALAR: AtomicBool = AtomicBool::new(false);

/// Turns the vector code paths on (`true`, the default where the CPU has them) or off.
pub fn set_simd_enabled(enabled: bool) {
    FORCE_SCALAR.store(!enabled, Ordering::Relaxed);
}

/// True when the AVX-512 paths (F, BW, VL, VBMI, VBMI2) may run: the CPU has them, they
/// were not switched off, and `MCODEC_NO_SIMD` is not set.
pub fn avx512_enabled() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    let available = *AVAILABLE.get_or_init(|| {
        let disabled = std::env::var_os("MCODEC_NO_SIMD").is_some_and(|v| v != "0");
        !disabled && detect_avx512()
    });
    available && !FORCE_SCALAR.load(Ordering::Relaxed)
}

#[cfg(target_arch = "x86_64")]
fn detect_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vbmi")
        && is_x86_feature_detected!("avx512vbmi2")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_avx512() -> bool {
    false
}
