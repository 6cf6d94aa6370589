# Sourced by run-on-gpu.sh and ab-on-gpu.sh (needs $root, the repository root).
# pick PATTERN: the newest library matching PATTERN, looked for first in the CUDA
# toolkit, then in the Python packages' nvidia/*/lib folders, the system's, and the
# NVRTC wheel CI installs; prints nothing when none is found.
pick() {
    local d f
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
        $(python3 -c 'import glob, site; print(" ".join(g for s in site.getsitepackages() for g in glob.glob(s + "/nvidia/*/lib")))' 2>/dev/null) \
        /usr/lib/x86_64-linux-gnu "$root"/target/nvrtc-wheel/nvidia/*/lib; do
        f=$(ls "$d"/$1 2>/dev/null | sort -V | tail -n 1)
        if [ -n "$f" ]; then
            echo "$f"
            return
        fi
    done
}
