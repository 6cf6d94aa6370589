//! Fuzz targets of mcodec: the checks live in [`checks`], the entry points in
//! `fuzz_targets/`.

pub mod checks;
pub mod gpu_plan;
pub mod store_object;
