//! Delta coding on the real fine-tune family written by `benches/make_finetune.py`:
//! every tensor of both fine-tunes round-trips bit for bit with every method, and ULP is
//! smaller than BitX in total. The data is git-ignored and takes minutes of training to
//! make, so without it the test prints why and passes. Directory:
//! `$MCODEC_FINETUNE_DIR`, else `benches/data/finetune` in the workspace.

use std::path::PathBuf;

use mcodec::delta::{self, DeltaMethod};
use mcodec::safetensors;

fn load(path: &std::path::Path) -> (Vec<u8>, safetensors::Header) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = safetensors::parse(&bytes, bytes.len() as u64)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (bytes, header)
}

#[test]
fn real_fine_tunes_round_trip_and_ulp_beats_bitx() {
    let dir = std::env::var_os("MCODEC_FINETUNE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/data/finetune")
        });
    if !dir.join("READY").exists() {
        mcodec_fixtures::skip(format!(
            "no fine-tune family at {} (run benches/make_finetune.py)",
            dir.display()
        ));
        return;
    }
    let (base_bytes, base) = load(&dir.join("base/model.safetensors"));
    for ft in ["ft", "ft-frozen"] {
        let (ft_bytes, header) = load(&dir.join(ft).join("model.safetensors"));
        let mut totals = [0usize; DeltaMethod::ALL.len()];
        let mut changed = 0;
        for t in &header.tensors {
            let b = base
                .tensors
                .iter()
                .find(|b| b.name == t.name)
                .unwrap_or_else(|| panic!("{ft}: {} missing from the base", t.name));
            assert_eq!((&b.dtype, &b.shape), (&t.dtype, &t.shape), "{}", t.name);
            let base_t = &base_bytes[b.range.start as usize..b.range.end as usize];
            let target = &ft_bytes[t.range.start as usize..t.range.end as usize];
            changed += usize::from(base_t != target);
            let mut out = vec![0u8; target.len()];
            for (m, method) in DeltaMethod::ALL.into_iter().enumerate() {
                let method = if method.supports(&t.dtype) {
                    method
                } else {
                    DeltaMethod::BitX
                };
                let d = delta::encode_with(method, &t.dtype, base_t, target).unwrap();
                out.fill(0);
                delta::decode(&t.dtype, base_t, &d, &mut out).unwrap();
                assert!(out == target, "{ft}: {} {} differs", t.name, method.name());
                totals[m] += d.len();
            }
        }
        assert!(changed > 0, "{ft}: no tensor differs from the base");
        let [bitx, ulp] = totals;
        eprintln!(
            "{ft}: bitx {bitx} bytes, ulp {ulp} bytes ({:.2}% / {:.2}% of the file)",
            100.0 * bitx as f64 / ft_bytes.len() as f64,
            100.0 * ulp as f64 / ft_bytes.len() as f64
        );
        assert!(ulp < bitx, "{ft}: ulp {ulp} bytes, bitx {bitx}");
    }
}
