"""Loading: every dtype bit-exact, special values, empty and 0-dim tensors, safe_open
random access, threads, and errors."""

from __future__ import annotations

import struct
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import leftovers
from safetensors.torch import save_file as st_save_file

import mcodec
import mcodec.numpy
import mcodec.torch

TORCH_DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.uint16,
    torch.int32,
    torch.uint32,
    torch.int64,
    torch.uint64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
]


def raw(t: torch.Tensor) -> bytes:
    """A tensor's bytes, whatever its dtype and shape."""
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def special_values(dtype: torch.dtype, n: int = 1000) -> torch.Tensor:
    """Random bit patterns of ``dtype``: with every NaN payload, -0.0, subnormals and Inf
    that a random draw of the raw bits gives (and a few placed on purpose)."""
    size = torch.empty(0, dtype=dtype).element_size()
    g = torch.Generator().manual_seed(n * size)
    bits = torch.randint(0, 256, (n * size,), dtype=torch.uint8, generator=g)
    if dtype == torch.bool:
        bits = bits % 2
    t = bits.view(dtype)
    if dtype.is_floating_point and n >= 4:
        specials = torch.tensor([float("nan"), -0.0, float("inf"), -float("inf")])
        t[: len(specials)] = specials.to(dtype)
    return t


def tensors_of_every_dtype() -> dict[str, torch.Tensor]:
    out = {}
    for i, dtype in enumerate(TORCH_DTYPES):
        name = str(dtype).split(".")[-1]
        out[f"{name}.random"] = special_values(dtype, 997 + i).reshape(-1)
        out[f"{name}.scalar"] = special_values(dtype, 1)[0].clone()  # 0-dim
        out[f"{name}.empty"] = torch.empty((0, 3), dtype=dtype)
    # A float tensor large enough for several chunks of the entropy coder.
    out["weights.bf16"] = (
        (torch.randn(300_000, generator=torch.Generator().manual_seed(1)) * 0.02)
        .to(torch.bfloat16)
        .reshape(600, 500)
    )
    return out


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], Path]:
    d = tmp_path_factory.mktemp("load")
    tensors = tensors_of_every_dtype()
    st_save_file(tensors, d / "m.safetensors", metadata={"format": "pt"})
    mcodec.pack(d / "m.safetensors", d / "m.mcz")
    return tensors, d / "m.mcz"


def test_every_dtype_loads_bit_exact(packed) -> None:
    tensors, mcz = packed
    for threads in (None, 1, 2):
        loaded = mcodec.torch.load_file(mcz, threads=threads)
        assert list(loaded) == sorted(loaded, key=list(loaded).index)  # file order
        assert set(loaded) == set(tensors)
        for name, t in tensors.items():
            got = loaded[name]
            assert got.dtype == t.dtype, name
            assert got.shape == t.shape, name
            assert raw(got) == raw(t), name


def test_special_float_bits_survive(packed) -> None:
    _, mcz = packed
    loaded = mcodec.torch.load_file(mcz)
    f32 = loaded["float32.random"]
    bits = f32.view(torch.int32)
    assert torch.isnan(f32).any() and torch.isinf(f32).any()
    assert (bits == struct.unpack("<i", struct.pack("<f", -0.0))[0]).any()  # -0.0
    # Subnormals: exponent bits zero, mantissa nonzero.
    assert (((bits >> 23) & 0xFF) == 0).logical_and((bits & 0x7FFFFF) != 0).any()


def test_numpy_load(packed) -> None:
    tensors, mcz = packed
    try:
        import ml_dtypes  # noqa: F401

        has_ml_dtypes = True
    except ImportError:
        has_ml_dtypes = False
    if has_ml_dtypes:
        arrays = mcodec.numpy.load_file(mcz)
    else:
        with pytest.raises(mcodec.ArgumentError, match="ml_dtypes"):
            mcodec.numpy.load_file(mcz)
        arrays = {}
        with mcodec.safe_open(mcz, framework="np") as f:
            for name in f.keys():
                if not name.startswith(("bfloat16", "float8", "weights")):
                    arrays[name] = f.get_tensor(name)
    assert arrays
    for name, a in arrays.items():
        assert isinstance(a, np.ndarray)
        assert a.tobytes() == raw(tensors[name]), name
        assert list(a.shape) == list(tensors[name].shape), name


def test_safe_open_random_access(packed) -> None:
    tensors, mcz = packed
    with mcodec.safe_open(mcz, framework="pt") as f:
        assert f.keys() == sorted(tensors)
        assert f.metadata() == {"format": "pt"}
        assert raw(f.get_tensor("int64.random")) == raw(tensors["int64.random"])
        s = f.get_slice("weights.bf16")
        assert s.get_shape() == [600, 500] and s.get_dtype() == "BF16"
        assert torch.equal(s[10:20], tensors["weights.bf16"][10:20])
        with pytest.raises(KeyError):
            f.get_tensor("missing")
        with pytest.raises(mcodec.TensorNotFoundError, match="missing"):
            f.get_tensor("missing")


def corrupt_stream_of(mcz: Path, tensor: str, out: Path) -> None:
    """Copies ``mcz`` to ``out`` with one byte of ``tensor``'s coded data flipped."""
    from mcodec import _native

    data = bytearray(mcz.read_bytes())
    # The coded bytes of a tensor are unique to it: find a window of them by trying
    # each byte of the data section until only that tensor fails.
    archive = _native.Archive(str(mcz))
    names = [e[0] for e in archive.entries()]
    for at in range(len(data) - 200, 64, -7):
        data[at] ^= 0x40
        out.write_bytes(bytes(data))
        try:
            broken = {n for n in names if not _loads(out, n)}
        except mcodec.Error:
            broken = set(names)
        if broken == {tensor}:
            return
        data[at] ^= 0x40
    raise AssertionError(f"no byte found that damages only {tensor}")


def _loads(path: Path, name: str) -> bool:
    try:
        with mcodec.safe_open(path) as f:
            f.get_tensor(name)
        return True
    except mcodec.CorruptError:
        return False


def test_get_tensor_decodes_only_that_tensor(packed, tmp_path: Path) -> None:
    tensors, mcz = packed
    bad = tmp_path / "bad.mcz"
    corrupt_stream_of(mcz, "weights.bf16", bad)
    with mcodec.safe_open(bad) as f:
        # Every other tensor still loads: nothing but the asked-for tensor is read.
        for name in f.keys():
            if name != "weights.bf16":
                assert raw(f.get_tensor(name)) == raw(tensors[name])
        with pytest.raises(mcodec.CorruptError, match="weights.bf16"):
            f.get_tensor("weights.bf16")
    with pytest.raises(mcodec.CorruptError, match="bad.mcz"):
        mcodec.torch.load_file(bad)


def test_big_tensors_anywhere_in_the_file(tmp_path: Path) -> None:
    """A whole-file load decodes each tensor of an eighth of the model or more on every
    thread where it comes in the file, and the tensors between them in parallel: big
    tensors first, in the middle and last load bit-exact, with any thread count, and a
    damaged big tensor in the middle fails the load, named."""
    g = torch.Generator().manual_seed(7)

    def weights(n: int) -> torch.Tensor:
        return (torch.randn(n, generator=g) * 0.02).to(torch.bfloat16)

    tensors = {
        "a.big": weights(600_000),
        "b.small": weights(5_000),
        "c.small": special_values(torch.bfloat16, 3_001),
        "d.big": weights(700_001),
        "e.small": weights(1_000),
        "f.empty": torch.empty(0, dtype=torch.bfloat16),
        "g.big": weights(650_000),
    }
    path = tmp_path / "m.mcz"
    mcodec.torch.save_file(tensors, path)
    for threads in (None, 1, 2, 3):
        loaded = mcodec.torch.load_file(path, threads=threads)
        assert list(loaded) == list(tensors)  # file order: one dtype, names sorted
        for name, t in tensors.items():
            assert raw(loaded[name]) == raw(t), (name, threads)
    # One flipped byte of d.big's coded data: tried at spaced positions until only
    # d.big fails (corrupt_stream_of's byte-by-byte walk from the end is slow here).
    bad = tmp_path / "bad.mcz"
    data = bytearray(path.read_bytes())
    for at in range(len(data) // 3, len(data) - 200, 997):
        data[at] ^= 0x40
        bad.write_bytes(bytes(data))
        if [n for n in tensors if not _loads(bad, n)] == ["d.big"]:
            break
        data[at] ^= 0x40
    else:
        raise AssertionError("no byte found that damages only d.big")
    for threads in (1, 2):
        with pytest.raises(mcodec.CorruptError, match="d.big"):
            mcodec.torch.load_file(bad, threads=threads)


def test_truncated_and_foreign_files(packed, tmp_path: Path) -> None:
    _, mcz = packed
    data = mcz.read_bytes()
    for cut in (0, 10, 100, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{cut}.mcz"
        p.write_bytes(data[:cut])
        with pytest.raises(mcodec.CorruptError, match=f"cut{cut}.mcz"):
            mcodec.torch.load_file(p)
    with pytest.raises(mcodec.MissingFileError):
        mcodec.torch.load_file(tmp_path / "absent.mcz")
    with pytest.raises(FileNotFoundError):
        mcodec.safe_open(tmp_path / "absent.mcz")


def test_bad_arguments(packed) -> None:
    _, mcz = packed
    with pytest.raises(mcodec.ArgumentError, match="framework"):
        mcodec.safe_open(mcz, framework="tf")
    with pytest.raises(mcodec.ArgumentError, match="threads"):
        mcodec.torch.load_file(mcz, threads=0)
    with pytest.raises(mcodec.ArgumentError, match="numpy"):
        mcodec.safe_open(mcz, framework="np", device="cuda")
    with pytest.raises(ValueError):
        mcodec.safe_open(mcz, device="nonsense")


def test_unpack_of_corrupt_file_leaves_nothing(packed, tmp_path: Path) -> None:
    _, mcz = packed
    bad = tmp_path / "bad.mcz"
    corrupt_stream_of(mcz, "weights.bf16", bad)
    out = tmp_path / "out.safetensors"
    with pytest.raises(mcodec.CorruptError):
        mcodec.unpack(bad, out)
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_gil_released_during_decode(tmp_path: Path) -> None:
    big = {
        "w": (torch.randn(48_000_000, generator=torch.Generator().manual_seed(3)) * 0.02).to(
            torch.bfloat16
        )
    }
    mcodec.torch.save_file(big, tmp_path / "big.mcz")
    ticks = 0
    done = threading.Event()

    def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1

    def load() -> None:
        for _ in range(3):
            mcodec.torch.load_file(tmp_path / "big.mcz", threads=1)

    loader = threading.Thread(target=load)
    counter = threading.Thread(target=tick)
    start = time.perf_counter()
    loader.start()
    counter.start()
    loader.join()
    done.set()
    counter.join()
    elapsed = time.perf_counter() - start
    # With the GIL held through a decode the counter would stall for its whole length;
    # released, it runs freely (millions of ticks a second).
    assert ticks > 20_000 * elapsed, (ticks, elapsed)


def _mapped_kib(path: Path) -> int:
    """Resident KiB of this process's maps of `path` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                inside = len(fields) > 5 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux /proc only")
def test_whole_load_leaves_no_file_pages_mapped(tmp_path: Path) -> None:
    # A whole-file load drops the compressed pages from the resident set as tensors
    # decode. Reading a page maps its cached neighbours too (a large folio, up to 2 MiB):
    # a tensor decoded after its neighbour was released mapped part of it back, and
    # 5 MB of all-MiniLM's 30 MB file stayed resident to the end of the load.
    g = torch.Generator().manual_seed(5)
    tensors = {"embed": (torch.randn(4_000_000, generator=g) * 0.02).to(torch.bfloat16)}
    for k in range(48):
        n = 150_000 if k % 4 else 600_000
        tensors[f"layer{k}"] = (torch.randn(n, generator=g) * 0.02).to(torch.bfloat16)
    mcz = tmp_path / "m.mcz"
    mcodec.torch.save_file(tensors, mcz)
    with open(mcz, "rb") as f:  # in the page cache, as after a first load
        while f.read(1 << 20):
            pass
    for threads in (1, 2):
        with mcodec.safe_open(mcz, framework="pt", threads=threads) as f:
            loaded = f._load_all()
            left = _mapped_kib(mcz.resolve())
        assert all(raw(loaded[k]) == raw(t) for k, t in tensors.items())
        # The index's last page and a page or two of padding at most.
        assert left <= 64, (threads, left)


def test_cuda_device(packed, monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        pytest.skip(
            "no CUDA device: the device='cuda' path is exercised by gpu-decode/run-on-gpu.sh"
        )
    tensors, mcz = packed
    # Decoded on the GPU: no warning that the whole load went through the CPU (tensors
    # the kernel does not take, such as stored integer ones, may be named in another).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = mcodec.torch.load_file(mcz, device="cuda")
    assert not [w for w in caught if "copying to" in str(w.message)], [
        str(w.message) for w in caught
    ]
    for name, t in tensors.items():
        assert loaded[name].device.type == "cuda"
        assert raw(loaded[name].cpu()) == raw(t)
    # And forced through the CPU, which says so once.
    monkeypatch.setenv("MCODEC_GPU", "0")
    mcodec._gpu._warned.discard("cpu")
    with pytest.warns(RuntimeWarning, match="CPU"):
        loaded = mcodec.torch.load_file(mcz, device="cuda")
    for name, t in tensors.items():
        assert raw(loaded[name].cpu()) == raw(t)
