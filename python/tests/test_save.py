"""save_file writes .mcz files that unpack to exactly safetensors' own bytes; pack and
unpack keep the CLI's guarantees."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import leftovers
from safetensors.numpy import save_file as st_np_save_file
from safetensors.torch import save_file as st_save_file
from test_load import raw, tensors_of_every_dtype

import mcodec
import mcodec.numpy
import mcodec.torch


@pytest.mark.parametrize("metadata", [None, {}, {"format": "pt"}])
def test_torch_save_file_unpacks_to_safetensors_bytes(tmp_path: Path, metadata) -> None:
    tensors = tensors_of_every_dtype()
    st_save_file(tensors, tmp_path / "ref.safetensors", metadata=metadata)
    mcodec.torch.save_file(tensors, tmp_path / "m.mcz", metadata=metadata)
    mcodec.unpack(tmp_path / "m.mcz", tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    loaded = mcodec.torch.load_file(tmp_path / "m.mcz")
    assert all(raw(loaded[k]) == raw(v) for k, v in tensors.items())


def header(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def test_several_metadata_keys(tmp_path: Path) -> None:
    # safetensors orders several metadata keys differently from run to run (a hash map):
    # compare the parsed header and the data, and mcodec's own order is the dict's.
    tensors = {"b": torch.ones(3), "a": torch.zeros(2, dtype=torch.float16)}
    meta = {"zeta": "1", "alpha": "2", "mid": "3"}
    st_save_file(tensors, tmp_path / "ref.safetensors", metadata=meta)
    mcodec.torch.save_file(tensors, tmp_path / "m.mcz", metadata=meta)
    mcodec.unpack(tmp_path / "m.mcz", tmp_path / "m.safetensors")
    ours, our_data = header(tmp_path / "m.safetensors")
    ref, ref_data = header(tmp_path / "ref.safetensors")
    assert ours == ref and our_data == ref_data
    assert list(ours["__metadata__"]) == list(meta)


def test_numpy_save_file_unpacks_to_safetensors_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.standard_normal((64, 33)).astype(np.float32),
        "f16": rng.standard_normal(1001).astype(np.float16),
        "i64": np.arange(7, dtype=np.int64),
        "u8": np.zeros((0,), dtype=np.uint8),
        "scalar": np.array(2.5, dtype=np.float64),
        "big_endian": np.arange(5, dtype=">i4"),
    }
    st_np_save_file(arrays, str(tmp_path / "ref.safetensors"))
    mcodec.numpy.save_file(arrays, tmp_path / "m.mcz")
    mcodec.unpack(tmp_path / "m.mcz", tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    loaded = mcodec.numpy.load_file(tmp_path / "m.mcz")
    for k, a in arrays.items():
        assert np.array_equal(loaded[k], a) and loaded[k].dtype == a.dtype.newbyteorder("<")


def test_numpy_save_file_of_a_strided_view(tmp_path: Path) -> None:
    # safetensors 0.8 writes a non-contiguous array's raw memory (the wrong values);
    # mcodec saves what the array holds, as safetensors does for a contiguous copy.
    a = np.arange(100, dtype=np.float32).reshape(10, 10)[:, ::2]
    st_np_save_file({"a": np.ascontiguousarray(a)}, str(tmp_path / "ref.safetensors"))
    mcodec.numpy.save_file({"a": a}, tmp_path / "m.mcz")
    mcodec.unpack(tmp_path / "m.mcz", tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_save_file_refuses_what_safetensors_refuses(tmp_path: Path) -> None:
    base = torch.zeros(10)
    with pytest.raises(mcodec.ArgumentError, match="share memory"):
        mcodec.torch.save_file({"a": base, "b": base[2:5]}, tmp_path / "x.mcz")
    with pytest.raises(mcodec.ArgumentError, match="contiguous"):
        mcodec.torch.save_file({"a": torch.zeros(4, 4).t()}, tmp_path / "x.mcz")
    with pytest.raises(mcodec.ArgumentError, match="metadata"):
        mcodec.torch.save_file({"a": base}, tmp_path / "x.mcz", metadata={"k": 1})
    with pytest.raises(mcodec.ArgumentError):
        mcodec.torch.save_file({"a": [1, 2]}, tmp_path / "x.mcz")
    assert not (tmp_path / "x.mcz").exists() and leftovers(tmp_path) == []
    # Views of one storage that do not overlap are fine (safetensors accepts them too).
    mcodec.torch.save_file({"a": base[:5], "b": base[5:]}, tmp_path / "ok.mcz")


def test_save_file_overwrite_rules(tmp_path: Path) -> None:
    out = tmp_path / "m.mcz"
    mcodec.torch.save_file({"a": torch.ones(3)}, out)
    mcodec.torch.save_file({"a": torch.zeros(3)}, out)  # replaced, as safetensors does
    assert torch.equal(mcodec.torch.load_file(out)["a"], torch.zeros(3))
    with pytest.raises(mcodec.OutputExistsError, match="force=True"):
        mcodec.torch.save_file({"a": torch.ones(3)}, out, force=False)
    assert torch.equal(mcodec.torch.load_file(out)["a"], torch.zeros(3))


def test_save_file_does_not_mutate_inputs(tmp_path: Path) -> None:
    t = torch.randn(1000)
    before = t.clone()
    mcodec.torch.save_file({"t": t}, tmp_path / "m.mcz")
    assert torch.equal(t, before)


def test_pack_unpack_file_and_directory(tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    st_save_file({"w": torch.randn(100, 10).to(torch.bfloat16)}, src / "model.safetensors")
    (src / "config.json").write_text('{"a": 1}')
    out = mcodec.pack(src)
    assert out == str(src) + ".mcz"
    assert sorted(p.name for p in Path(out).iterdir()) == ["config.json", "model.safetensors.mcz"]
    with pytest.raises(mcodec.OutputExistsError):
        mcodec.pack(src)
    mcodec.pack(src, force=True)
    back = mcodec.unpack(out, tmp_path / "restored")
    for name in ("model.safetensors", "config.json"):
        assert (Path(back) / name).read_bytes() == (src / name).read_bytes()
    with pytest.raises(FileExistsError):
        mcodec.unpack(out, tmp_path / "restored")
    single = mcodec.pack(src / "model.safetensors", tmp_path / "one.mcz", level="max")
    assert mcodec.unpack(single, tmp_path / "one.safetensors")
    assert (tmp_path / "one.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    with pytest.raises(mcodec.MissingFileError):
        mcodec.pack(tmp_path / "absent")
    with pytest.raises(mcodec.CorruptError, match="config.json"):
        mcodec.pack(src / "config.json", tmp_path / "c.mcz")
    fast = mcodec.pack(src / "model.safetensors", tmp_path / "fast.mcz", level="fast")
    assert mcodec.unpack(fast, tmp_path / "fast.safetensors")
    assert (tmp_path / "fast.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    # The message lists the CLI's levels, which the package takes from the CLI itself.
    with pytest.raises(mcodec.ArgumentError, match="expected one of 'fast', 'default', 'max'"):
        mcodec.pack(src, tmp_path / "z", level="fastest")
    assert leftovers(tmp_path) == []


def test_torch_save_and_load_bytes(tmp_path: Path) -> None:
    from safetensors.torch import save as st_save

    tensors = tensors_of_every_dtype()
    data = mcodec.torch.save(tensors, metadata={"format": "pt"})
    assert isinstance(data, bytes)
    (tmp_path / "m.mcz").write_bytes(data)
    mcodec.unpack(tmp_path / "m.mcz", tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == st_save(tensors, metadata={"format": "pt"})
    loaded = mcodec.torch.load(data)
    assert list(loaded) == list(mcodec.torch.load_file(tmp_path / "m.mcz"))
    assert all(raw(loaded[k]) == raw(v) for k, v in tensors.items())
    # Every level writes what every loader reads; an unknown level is refused.
    for level in ("fast", "max"):
        other = mcodec.torch.load(mcodec.torch.save(tensors, level=level))
        assert all(raw(other[k]) == raw(v) for k, v in tensors.items()), level
    with pytest.raises(mcodec.ArgumentError, match="fastest"):
        mcodec.torch.save(tensors, level="fastest")
    # Damaged bytes raise, naming what was read.
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x40
    with pytest.raises(mcodec.CorruptError, match="<bytes>"):
        mcodec.torch.load(bytes(damaged))
    with pytest.raises(mcodec.CorruptError, match="<bytes>"):
        mcodec.torch.load(data[:100])
    with pytest.raises(mcodec.ArgumentError):
        mcodec.torch.load("not bytes")  # type: ignore[arg-type]


def test_numpy_save_and_load_bytes() -> None:
    from safetensors.numpy import save as st_np_save

    arrays = {"f32": np.arange(12, dtype=np.float32).reshape(3, 4), "i8": np.array(-3, np.int8)}
    data = mcodec.numpy.save(arrays)
    loaded = mcodec.numpy.load(data)
    assert all(
        np.array_equal(loaded[k], a) and loaded[k].dtype == a.dtype for k, a in arrays.items()
    )
    with mcodec.safe_open._from_bytes(data, "np") as f:
        assert f.keys() == sorted(arrays)
    assert st_np_save(arrays)  # the reference exists; byte identity is checked for torch


class Tied(torch.nn.Module):
    """An embedding tied to the output layer, as in many language models."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.head = torch.nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight
        self.norm = torch.nn.LayerNorm(16)


def test_save_model_and_load_model_with_tied_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_model as st_save_model

    torch.manual_seed(0)
    model = Tied()
    mcodec.torch.save_model(model, tmp_path / "m.mcz")
    st_save_model(model, str(tmp_path / "ref.safetensors"))
    mcodec.unpack(tmp_path / "m.mcz", tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()

    fresh = Tied()
    missing, unexpected = mcodec.torch.load_model(fresh, tmp_path / "m.mcz")
    assert not missing and not unexpected
    assert fresh.head.weight is fresh.embed.weight
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name

    class Other(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(16)
            self.extra = torch.nn.Linear(2, 2)

    with pytest.raises(RuntimeError, match="missing keys.*extra.weight"):
        mcodec.torch.load_model(Other(), tmp_path / "m.mcz")
    missing, unexpected = mcodec.torch.load_model(Other(), tmp_path / "m.mcz", strict=False)
    assert "extra.weight" in missing and "embed.weight" in unexpected
