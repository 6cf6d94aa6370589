//! Prints the kernel's PTX for an architecture (default `compute_90`), for inspection.

fn main() {
    let arch = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "compute_90".into());
    match mcodec_gpu::compile_ptx(&arch) {
        Ok(ptx) => print!("{ptx}"),
        Err(e) => {
            eprintln!("dump_ptx: {e}");
            std::process::exit(1);
        }
    }
}
