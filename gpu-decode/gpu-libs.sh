# Sourced by run-on-gpu.sh, ab-on-gpu.sh and chunk-sweep.sh (needs $root, the repository root).
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

# The prebuilt folder's tools (build-for-gpu.sh ships them xz'd: a device call carries
# 64 MiB). unxz_to SRC DEST: Python's lzma unpacks, xz where Python lacks it.
unxz_to() {
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2" 2> /dev/null ||
        xz -dc "$1" > "$2"
}

# unpack_tool DIR NAME DEST: binary NAME of prebuilt folder DIR (NAME.xz, or NAME.gz and
# NAME of older builds) as the executable DEST; fails if DIR has none.
unpack_tool() {
    local dir=$1 name=$2 dest=$3
    if [ -f "$dir/$name.xz" ]; then
        unxz_to "$dir/$name.xz" "$dest"
    elif [ -f "$dir/$name.gz" ]; then
        gzip -dc "$dir/$name.gz" > "$dest"
    elif [ -f "$dir/$name" ]; then
        cp "$dir/$name" "$dest"
    else
        return 1
    fi && chmod +x "$dest"
}

# wheel_cli DIR DEST: installs the Python package of prebuilt folder DIR
# (wheel/mcodec-*.whl.xz) with --no-deps into a new private folder (the machine's torch
# and numpy are used), prints that folder, and writes DEST: an executable running the
# package's `mcodec` command, the CLI (the same program, linked into the package). For a
# folder of older builds (the CLI as mcodec.gz, no xz'd wheel) DEST is that CLI and
# nothing is printed. Fails if DIR has neither.
wheel_cli() {
    local dir=$1 dest=$2 packed whl py
    packed=$(ls "$dir"/wheel/mcodec-*.whl.xz 2> /dev/null | head -n 1)
    if [ -z "$packed" ]; then
        unpack_tool "$dir" mcodec "$dest"
        return
    fi
    whl=$(mktemp -d)/$(basename "$packed" .xz)
    py=$(mktemp -d)
    unxz_to "$packed" "$whl" &&
        python3 -m pip install --quiet --no-deps --no-index --target "$py" "$whl" >&2 || return 1
    # shellcheck disable=SC2016 # $PYTHONPATH and $@ are the wrapper's, at its run
    printf '#!/bin/sh\nPYTHONPATH=%s${PYTHONPATH:+:$PYTHONPATH} exec python3 -m mcodec "$@"\n' "$py" > "$dest"
    chmod +x "$dest"
    echo "$py"
}
