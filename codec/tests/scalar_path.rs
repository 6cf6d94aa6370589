//! The portable scalar paths must produce exactly what the vector paths produce. This
//! test binary holds a single test because the switch is process-wide.

use std::path::Path;

use mcodec::container::{pack, Archive, PackOptions};

#[test]
fn scalar_and_vector_paths_write_and_read_identical_bytes() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data");
    for name in [
        "tiny-bf16.safetensors",
        "tiny-f32.safetensors",
        "special-values.safetensors",
    ] {
        let input = std::fs::read(data.join(name)).unwrap();
        let mut outputs = Vec::new();
        for simd in [true, false] {
            mcodec::cpu::set_simd_enabled(simd);
            let mut packed = Vec::new();
            pack(&input, &PackOptions::default(), &mut packed, &|_| {}).unwrap();
            let mut back = Vec::new();
            Archive::open(&packed)
                .unwrap()
                .unpack_to(&mut back, &|_| {})
                .unwrap();
            assert!(back == input, "{name}: round trip with simd={simd}");
            outputs.push(packed);
        }
        mcodec::cpu::set_simd_enabled(true);
        assert!(
            outputs[0] == outputs[1],
            "{name}: scalar and vector encoders differ"
        );
    }
}
