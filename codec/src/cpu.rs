//! Run-time choice of the code path: AVX-512 (VBMI2), AVX2, or the portable scalar loops.
//!
//! Every path produces identical bytes; the choice only changes speed. By default the best
//! path the CPU has runs ([`SimdLevel::detect`]). The environment variable `MCODEC_SIMD`
//! (`auto`, `avx512`, `avx2` or `scalar`; `MCODEC_NO_SIMD=1` is a synonym for `scalar`)
//! picks one for testing and benchmarks, and [`set_simd_level`] does the same from code.
//!
//! A request the CPU cannot honour, or a value that is not one of the above, is an error
//! where it can be reported ([`simd_level_from_env`], which the CLI calls at start-up and
//! turns into a one-line error). Library users that never call it get a loud fallback
//! instead: on first use the codec prints one warning to stderr naming the request and
//! the path it takes, the best one the CPU has.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

/// A code path, from the portable one up. Later variants need more CPU features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Portable Rust, no intrinsics (every CPU; what ARM machines run).
    Scalar,
    /// x86-64 AVX2 (+ BMI1, POPCNT): Intel since 2013, AMD since 2015.
    Avx2,
    /// x86-64 AVX-512 F, BW, VL, VBMI, VBMI2, CD: AMD Zen 4/5, Intel Ice Lake and later servers.
    Avx512,
}

impl SimdLevel {
    /// Every level, portable first.
    pub const ALL: [SimdLevel; 3] = [Self::Scalar, Self::Avx2, Self::Avx512];

    /// The name `MCODEC_SIMD` and `mcodec bench` use for this level.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the level.
    pub fn is_supported(self) -> bool {
        match self {
            Self::Scalar => true,
            Self::Avx2 => has_avx2(),
            Self::Avx512 => has_avx512(),
        }
    }

    /// The best level this CPU supports.
    pub fn detect() -> Self {
        if has_avx512() {
            Self::Avx512
        } else if has_avx2() {
            Self::Avx2
        } else {
            Self::Scalar
        }
    }

    /// Every level this CPU supports, portable first.
    pub fn supported() -> Vec<Self> {
        Self::ALL.into_iter().filter(|l| l.is_supported()).collect()
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a requested code path cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimdError {
    /// `MCODEC_SIMD` holds something other than `auto`, `avx512`, `avx2` or `scalar`.
    #[error("MCODEC_SIMD={value:?} is not one of auto, avx512, avx2, scalar")]
    UnknownValue {
        /// The value found.
        value: String,
    },
    /// The requested path needs CPU features this machine lacks.
    #[error(
        "the {requested} code path is not supported by this CPU (best available: {available})"
    )]
    Unsupported {
        /// The path asked for.
        requested: SimdLevel,
        /// The best path the CPU has.
        available: SimdLevel,
    },
    /// `MCODEC_NO_SIMD=1` and an `MCODEC_SIMD` other than `scalar` or `auto` were both set.
    #[error("MCODEC_NO_SIMD=1 contradicts MCODEC_SIMD={requested}")]
    Contradiction {
        /// The path `MCODEC_SIMD` asked for.
        requested: SimdLevel,
    },
}

/// The path the environment asks for: `MCODEC_SIMD`, with `MCODEC_NO_SIMD=1` as a synonym
/// for `scalar`; unset or `auto` means [`SimdLevel::detect`].
pub fn simd_level_from_env() -> Result<SimdLevel, SimdError> {
    let no_simd = std::env::var_os("MCODEC_NO_SIMD").is_some_and(|v| !v.is_empty() && v != "0");
    let requested = match std::env::var("MCODEC_SIMD") {
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(v)) => {
            return Err(SimdError::UnknownValue {
                value: v.to_string_lossy().into_owned(),
            })
        }
        Ok(v) => parse_level(&v)?,
    };
    match (requested, no_simd) {
        (Some(level), true) if level != SimdLevel::Scalar => {
            Err(SimdError::Contradiction { requested: level })
        }
        (_, true) => Ok(SimdLevel::Scalar),
        (None, false) => Ok(SimdLevel::detect()),
        (Some(level), false) if level.is_supported() => Ok(level),
        (Some(level), false) => Err(SimdError::Unsupported {
            requested: level,
            available: SimdLevel::detect(),
        }),
    }
}

/// `auto` is `None`; names are case-insensitive and may be padded.
fn parse_level(value: &str) -> Result<Option<SimdLevel>, SimdError> {
    let v = value.trim().to_ascii_lowercase();
    if v == "auto" || v.is_empty() {
        return Ok(None);
    }
    SimdLevel::ALL
        .into_iter()
        .find(|l| l.name() == v)
        .map(Some)
        .ok_or_else(|| SimdError::UnknownValue {
            value: value.to_owned(),
        })
}

/// 0: follow the environment; otherwise 1 + the level's index.
static OVERRIDE: AtomicU8 = AtomicU8::new(0);

/// Runs the given path from now on, process-wide (all threads), instead of what the
/// environment asks for. Fails, changing nothing, when the CPU lacks the path.
pub fn set_simd_level(level: SimdLevel) -> Result<(), SimdError> {
    if !level.is_supported() {
        return Err(SimdError::Unsupported {
            requested: level,
            available: SimdLevel::detect(),
        });
    }
    OVERRIDE.store(1 + level as u8, Ordering::Relaxed);
    Ok(())
}

/// Drops a [`set_simd_level`] override: the environment's choice applies again.
pub fn reset_simd_level() {
    OVERRIDE.store(0, Ordering::Relaxed);
}

/// The path the codec runs now.
pub fn simd_level() -> SimdLevel {
    match OVERRIDE.load(Ordering::Relaxed) {
        0 => env_level(),
        n => SimdLevel::ALL[usize::from(n - 1)],
    }
}

/// The environment's choice, read once; a bad request falls back loudly to the best path.
fn env_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        simd_level_from_env().unwrap_or_else(|e| {
            let fallback = match e {
                SimdError::Contradiction { .. } => SimdLevel::Scalar,
                _ => SimdLevel::detect(),
            };
            eprintln!("mcodec: warning: {e}; using the {fallback} code path");
            fallback
        })
    })
}

static KERNEL_RUNS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// How many chunks (rANS) and element runs (float split) each path has coded in this
/// process, indexed like [`SimdLevel::ALL`]: lets tests prove a path really ran.
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
pub fn kernel_runs() -> [u64; 3] {
    std::array::from_fn(|i| KERNEL_RUNS[i].load(Ordering::Relaxed))
}

/// Counts one run of a kernel of `level` (a relaxed add per chunk, not per symbol).
pub(crate) fn note_run(level: SimdLevel) {
    KERNEL_RUNS[level.index()].fetch_add(1, Ordering::Relaxed);
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("bmi1")
        && is_x86_feature_detected!("popcnt")
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vbmi")
        && is_x86_feature_detected!("avx512vbmi2")
        && is_x86_feature_detected!("avx512cd")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for level in SimdLevel::ALL {
            assert_eq!(parse_level(level.name()), Ok(Some(level)));
        }
        assert_eq!(parse_level(" AVX2 "), Ok(Some(SimdLevel::Avx2)));
        assert_eq!(parse_level("auto"), Ok(None));
        assert!(matches!(
            parse_level("sse9"),
            Err(SimdError::UnknownValue { .. })
        ));
    }

    #[test]
    fn detection_is_consistent() {
        let best = SimdLevel::detect();
        assert!(best.is_supported());
        assert!(SimdLevel::supported().contains(&SimdLevel::Scalar));
        assert_eq!(SimdLevel::supported().last(), Some(&best));
    }
}
