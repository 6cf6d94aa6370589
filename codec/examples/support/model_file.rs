//! Where the delta examples find a model, included with
//! `#[path = "support/model_file.rs"] mod model_file;`.

use std::path::PathBuf;

/// `arg` itself, or `arg/model.safetensors` when `arg` is a model directory.
pub fn model_file(arg: &str) -> PathBuf {
    let p = PathBuf::from(arg);
    if p.is_dir() {
        p.join("model.safetensors")
    } else {
        p
    }
}
