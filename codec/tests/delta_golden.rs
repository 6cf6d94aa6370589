//! Golden ULP deltas pin FORMAT.md §9.3: `fixtures/golden/delta/ulp1-*.bin` were written by
//! the first (single-stream) layout and `ulp2-*.bin` by the 4-lane chunked layout; both
//! must keep decoding to their targets. `ulp3-*.bin` are the 32-lane layout the encoder
//! writes now, and encoding the same pair must reproduce them byte for byte. To re-bless
//! the current layout after an intended change:
//! `MCODEC_BLESS=1 cargo test -p mcodec --test delta_golden` (the `ulp1` and `ulp2` files
//! are never rewritten).

use std::path::PathBuf;

use mcodec::delta::{self, DeltaMethod};
use mcodec::dtype::Dtype;

const DTYPES: [(&str, Dtype); 6] = [
    ("bf16", Dtype::BF16),
    ("f16", Dtype::F16),
    ("f32", Dtype::F32),
    ("f64", Dtype::F64),
    ("f8e4m3", Dtype::F8E4M3),
    ("f8e5m2", Dtype::F8E5M2),
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden/delta")
}

// The pair the golden deltas were made from is the `delta_decode` fuzz target's base of
// seed 0 (so the golden deltas are that target's seeds too).
#[path = "../../fuzz/src/checks/delta_decode.rs"]
#[allow(dead_code)]
mod delta_decode;

/// A deterministic fine-tune-shaped pair of `n` elements plus a ragged tail of one byte.
fn pair(dtype: &Dtype, n: usize) -> (Vec<u8>, Vec<u8>) {
    delta_decode::pair(dtype, n, 0)
}

const N: usize = 5003;

#[test]
fn older_layout_deltas_still_decode() {
    for layout in ["ulp1", "ulp2"] {
        for (name, dtype) in DTYPES {
            let (base, target) = pair(&dtype, N);
            let path = dir().join(format!("{layout}-{name}.bin"));
            let d = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(delta::method_of(&d), Ok(DeltaMethod::Ulp));
            let mut out = vec![0u8; base.len()];
            delta::decode(&dtype, &base, &d, &mut out).unwrap();
            assert!(out == target, "{layout}-{name}: delta decodes wrongly");
            let mut buf = base.clone();
            delta::decode_in_place(&dtype, &mut buf, &d).unwrap();
            assert!(
                buf == target,
                "{layout}-{name}: delta decodes wrongly in place"
            );
        }
    }
}

#[test]
fn current_layout_is_stable() {
    let bless = std::env::var_os("MCODEC_BLESS").is_some();
    for (name, dtype) in DTYPES {
        let (base, target) = pair(&dtype, N);
        let d = delta::encode_with(DeltaMethod::Ulp, &dtype, &base, &target).unwrap();
        let path = dir().join(format!("ulp3-{name}.bin"));
        if bless {
            std::fs::write(&path, &d).unwrap();
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut out = vec![0u8; base.len()];
        delta::decode(&dtype, &base, &golden, &mut out).unwrap();
        assert!(out == target, "{name}: golden delta decodes wrongly");
        let mut buf = base.clone();
        delta::decode_in_place(&dtype, &mut buf, &golden).unwrap();
        assert!(
            buf == target,
            "{name}: golden delta decodes wrongly in place"
        );
        assert!(
            d == golden,
            "{name}: the encoder no longer writes the golden bytes"
        );
    }
}
