"""mcodec.Store: add, ls, get and load (tensors without writing files), on a local
directory and, where MCODEC_S3_TEST_URL names an S3 server (CI's Garage), on S3."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import torch
from conftest import leftovers
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file as st_save_file
from test_load import raw

import mcodec


def model_dir(root: Path, seed: int, base: dict | None = None) -> Path:
    g = torch.Generator().manual_seed(seed)
    if base is None:
        tensors = {
            "emb": (torch.randn(512, 64, generator=g) * 0.02).to(torch.bfloat16),
            "w": (torch.randn(64, 64, generator=g) * 0.02).to(torch.bfloat16),
            "norm": torch.ones(64, dtype=torch.float32),
            "ids": torch.arange(16),
            "scalar": torch.tensor(1.5),
            "empty": torch.empty(0, 4),
        }
    else:  # a "fine-tune": small changes to every float tensor
        tensors = {
            k: (v.float() + torch.randn(v.shape, generator=g) * 1e-3).to(v.dtype)
            if v.is_floating_point() and v.numel()
            else v
            for k, v in base.items()
        }
    root.mkdir(parents=True)
    st_save_file(tensors, root / "model.safetensors", metadata={"format": "pt"})
    (root / "config.json").write_text('{"hidden": 64}')
    return root


def roots(tmp_path: Path) -> list[str]:
    out = [str(tmp_path / "hub")]
    url = os.environ.get("MCODEC_S3_TEST_URL")
    if url:
        out.append(f"{url.rstrip('/')}/py-{uuid.uuid4().hex[:12]}")
    elif os.environ.get("MCODEC_S3_REQUIRED") == "1":
        raise AssertionError("MCODEC_S3_REQUIRED=1 but MCODEC_S3_TEST_URL is not set")
    return out


def test_store_add_ls_get_load(tmp_path: Path) -> None:
    base_dir = model_dir(tmp_path / "base", 1)
    base = st_load_file(base_dir / "model.safetensors")
    ft_dir = model_dir(tmp_path / "ft", 2, base)
    ft = st_load_file(ft_dir / "model.safetensors")
    if not os.environ.get("MCODEC_S3_TEST_URL"):
        print("S3 part skipped: MCODEC_S3_TEST_URL is not set (CI runs it against Garage)")
    for i, root in enumerate(roots(tmp_path)):
        store = mcodec.Store(root, create=True)
        report = store.add(base_dir, "org/base")
        assert report["tensors"] == len(base)
        report = store.add(ft_dir, "org/ft", base="org/base")
        assert report["delta"] > 0, report  # stored against its base
        assert sorted(m["name"] for m in store.ls()) == ["org/base", "org/ft"]
        again = mcodec.Store(root)
        for name, want in (("org/base", base), ("org/ft", ft)):
            got = again.load(name, threads=1 + i % 2)
            assert list(got) == list(want)
            for k, v in want.items():
                assert got[k].dtype == v.dtype and got[k].shape == v.shape
                assert raw(got[k]) == raw(v), (root, name, k)
        out = tmp_path / f"restored{i}"
        again.get("org/ft", out)
        for f in ("model.safetensors", "config.json"):
            assert (out / f).read_bytes() == (ft_dir / f).read_bytes()
        with pytest.raises(mcodec.OutputExistsError):
            again.get("org/ft", out)
        with pytest.raises(mcodec.Error, match="nope"):
            again.load("org/nope")
        with pytest.raises(mcodec.OutputExistsError):
            again.add(base_dir, "org/base")
        again.remove("org/base")
        assert [m["name"] for m in again.ls()] == ["org/ft"]
        assert raw(again.load("org/ft")["emb"]) == raw(ft["emb"])  # its base objects stay
    assert leftovers(tmp_path) == []


def test_store_errors(tmp_path: Path) -> None:
    with pytest.raises(mcodec.Error, match="hub"):
        mcodec.Store(tmp_path / "hub")  # not created
    store = mcodec.Store(tmp_path / "hub", create=True)
    with pytest.raises(mcodec.ArgumentError):
        store.add(tmp_path, "x", delta="zip")
    with pytest.raises(mcodec.Error):
        store.add(tmp_path / "absent", "x")


def test_store_stats_gc_fsck(tmp_path: Path) -> None:
    base_dir = model_dir(tmp_path / "base", 1)
    ft_dir = model_dir(tmp_path / "ft", 2, st_load_file(base_dir / "model.safetensors"))
    store = mcodec.Store(tmp_path / "hub", create=True)
    store.add(base_dir, "org/base")
    store.add(ft_dir, "other/ft", base="org/base")
    logical = sum(p.stat().st_size for d in (base_dir, ft_dir) for p in d.iterdir())

    stats = store.stats()
    assert [m["name"] for m in stats["models"]] == ["org/base", "other/ft"]
    assert stats["logical_bytes"] == logical
    assert stats["delta"]["objects"] > 0 and stats["saved_by_delta"] > 0, stats
    only = store.stats("org/")
    assert [m["name"] for m in only["models"]] == ["org/base"]
    assert [o["org"] for o in only["organisations"]] == ["org"]
    assert only["logical_bytes"] == logical  # store-wide totals stay whole

    clean = store.fsck()
    assert clean["models"] == 2 and clean["objects"] > 0 and clean["problems"] == []

    # Removing the fine-tune leaves its delta objects unreferenced: gc keeps them during
    # the grace period and deletes them after it.
    store.remove("other/ft")
    assert store.gc()["deleted"] == 0  # default grace: an hour
    assert mcodec.store.DEFAULT_GRACE_S == 3600
    report = store.gc(grace=0)
    assert report["deleted"] > 0 and report["deleted_bytes"] > 0, report
    assert store.fsck()["problems"] == []
    assert store.gc(grace=0)["deleted"] == 0
    with pytest.raises(mcodec.ArgumentError, match="grace"):
        store.gc(grace=-1)

    # A damaged object is a problem fsck names, not an exception.
    obj = max((tmp_path / "hub" / "objects").rglob("*"), key=lambda p: p.stat().st_size)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x10
    obj.write_bytes(bytes(data))
    problems = store.fsck()["problems"]
    assert len(problems) == 1 and obj.name in problems[0], problems
