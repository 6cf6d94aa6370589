//! Compiles the kernel source with NVRTC for every architecture we support, so a syntax
//! or type error in the .cu file cannot land. Needs only libnvrtc, no GPU: CI installs
//! the `nvidia-cuda-nvrtc-cu12` wheel and puts its lib folder on LD_LIBRARY_PATH.

#[test]
fn kernel_compiles_to_ptx_for_sm80_and_sm90() {
    let ptx = match mcodec_gpu::compile_ptx("compute_80") {
        Err(mcodec_gpu::GpuError::NvrtcMissing(why)) => {
            crate::common::skip(&format!("NVRTC not found ({why})"));
            return;
        }
        other => other.expect("compile for compute_80"),
    };
    let ptx90 = mcodec_gpu::compile_ptx("compute_90").expect("compile for compute_90");
    for (arch, ptx) in [("sm_80", &ptx), ("sm_90", &ptx90)] {
        assert!(
            ptx.contains(&format!(".target {arch}")),
            "{arch}: no target line"
        );
        assert!(
            ptx.contains(".entry mcz_decode"),
            "{arch}: kernel entry missing"
        );
        // PTX ISA 8.x loads on every driver from CUDA 12 on; 9.x needs CUDA 13 drivers.
        let version = ptx
            .lines()
            .find_map(|l| l.trim().strip_prefix(".version "))
            .expect("version line");
        println!("{arch}: PTX ISA {version}, {} bytes", ptx.len());
    }
    // The device loads a cubin built for its own architecture (no PTX ISA version can
    // stop it); check that NVRTC builds one.
    let (cubin, log) = mcodec_gpu::compile_cubin("sm_90").expect("cubin for sm_90");
    assert_eq!(&cubin[..4], b"\x7fELF", "a cubin is an ELF image");
    let (major, minor) = mcodec_gpu::nvrtc_version().expect("NVRTC version");
    println!(
        "sm_90 cubin: {} bytes (NVRTC {major}.{minor}); {}",
        cubin.len(),
        log.trim()
    );
}
