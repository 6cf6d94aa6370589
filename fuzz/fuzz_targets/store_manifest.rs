//! The store's manifest parser on arbitrary bytes must never panic; whatever it accepts
//! must be safe to act on (names and paths that cannot leave their directory, sizes that
//! add up) and must survive a serialise/parse round trip unchanged. Object headers are
//! parsed from the same bytes as a second, cheaper check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcodec_store::manifest::{validate_name, validate_path, Manifest};
use mcodec_store::object::Header;

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data);
    let Ok(m) = Manifest::parse(data) else {
        return;
    };
    validate_name(&m.name).expect("accepted name is valid");
    for f in &m.files {
        validate_path(&f.path).expect("accepted path is valid");
        assert!(!f.path.split('/').any(|c| c == ".." || c.is_empty()));
        assert!(!f.path.starts_with('/'));
        if let Some(st) = &f.safetensors {
            let total: u64 = st.header_len + st.tensors.iter().map(|t| t.len).sum::<u64>();
            assert_eq!(total, f.size);
            for t in &st.tensors {
                // An object's name follows from the tensor's key and its delta base.
                assert_eq!(t.object, t.expected_object());
                assert!(t.inline.is_none() || t.delta_base.is_none());
            }
        }
    }
    let again = Manifest::parse(&m.to_json()).expect("a serialised manifest parses");
    assert_eq!(again, m);
});
