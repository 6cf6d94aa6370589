//! Every code path this CPU has (scalar, AVX2, AVX-512) must write and read exactly the
//! bytes the portable scalar path does. This test binary holds a single test because the
//! path switch is process-wide.
//!
//! The test fails, rather than skips, when a path the CPU supports did not run: each path's
//! kernel counters must have moved while it was selected.

use std::io::Write;
use std::path::Path;

use mcodec::container::{pack, Archive, PackOptions};
use mcodec::cpu::{kernel_runs, set_simd_level, simd_level, SimdLevel};

#[test]
fn every_supported_path_writes_and_reads_the_scalar_paths_bytes() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data");
    let supported = SimdLevel::supported();
    let mut ran = Vec::new();
    for name in [
        "tiny-bf16.safetensors",
        "tiny-f32.safetensors",
        "special-values.safetensors",
    ] {
        let input = std::fs::read(data.join(name)).unwrap();
        let mut reference: Option<Vec<u8>> = None;
        for &level in &supported {
            set_simd_level(level).unwrap();
            assert_eq!(simd_level(), level);
            let before = kernel_runs();
            let mut packed = Vec::new();
            pack(&input, &PackOptions::default(), &mut packed, &|_| {}).unwrap();
            let mut back = Vec::new();
            Archive::open(&packed)
                .unwrap()
                .unpack_to(&mut back, &|_| {})
                .unwrap();
            let after = kernel_runs();
            assert!(back == input, "{name}: round trip on the {level} path");
            if after[level as usize] > before[level as usize] && !ran.contains(&level) {
                ran.push(level);
            }
            match &reference {
                None => reference = Some(packed),
                Some(r) => assert!(*r == packed, "{name}: {level} encoder differs from scalar"),
            }
        }
    }
    mcodec::cpu::reset_simd_level();
    let names = |v: &[SimdLevel]| v.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ");
    // Written to stderr directly, not with `println!`, so that the harness does not
    // capture it: CI logs show which paths ran.
    writeln!(
        std::io::stderr(),
        "simd_paths: code paths supported by this CPU: {}; paths that ran: {}",
        names(&supported),
        names(&ran)
    )
    .unwrap();
    assert_eq!(
        ran,
        supported,
        "a path this CPU supports did not run (supported: {}, ran: {})",
        names(&supported),
        names(&ran)
    );
}
