"""Packed model directories load into transformers and sentence-transformers with every
parameter and embedding identical to the original directory's (the real
all-MiniLM-L6-v2 weights, F32, BF16 and a sharded BF16 checkpoint)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import need

import mcodec
import mcodec.transformers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = need("transformers")
SENTENCES = ["The weights came back bit for bit.", "A packed model", "ünïcödé ✓"]


def same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(
            sa[k].view(torch.uint8) if sa[k].dim() else sa[k],
            sb[k].view(torch.uint8) if sb[k].dim() else sb[k],
        ), k


def bf16_copy(src: Path, dst: Path, shard: str | None = None) -> Path:
    """The model converted to BF16 with transformers itself (optionally sharded)."""
    model = transformers.AutoModel.from_pretrained(src, dtype=torch.bfloat16)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(dst, **kwargs)
    return dst


@pytest.fixture(scope="module")
def variants(minilm_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")
    out = {"f32": minilm_copy}
    out["bf16"] = bf16_copy(minilm_copy, root / "bf16")
    out["bf16-sharded"] = bf16_copy(minilm_copy, root / "sharded", shard="20MB")
    assert (out["bf16-sharded"] / "model.safetensors.index.json").exists()
    return out


@pytest.mark.parametrize("variant", ["f32", "bf16", "bf16-sharded"])
def test_transformers_loads_packed_directory_bit_exact(variants, tmp_path: Path, variant) -> None:
    src = variants[variant]
    packed = Path(mcodec.pack(src, tmp_path / "packed"))
    assert not list(packed.glob("*.safetensors"))  # only .mcz weights are there
    original = transformers.AutoModel.from_pretrained(src)
    helper = mcodec.transformers.from_pretrained(transformers.AutoModel, packed)
    same_parameters(original, helper)
    with mcodec.transformers.enable():
        patched = transformers.BertModel.from_pretrained(packed)
        plain = transformers.AutoModel.from_pretrained(src)  # unpacked dirs load as usual
    same_parameters(original, patched)
    same_parameters(original, plain)
    # The patch is gone after the block.
    with pytest.raises(OSError):
        transformers.AutoModel.from_pretrained(packed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(packed)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        a = original(**batch).last_hidden_state
        b = helper(**batch).last_hidden_state
    assert torch.equal(a, b)


def test_sentence_transformers_embeddings_identical(variants, tmp_path: Path) -> None:
    st = need("sentence_transformers")
    for variant in ("f32", "bf16"):
        src = variants[variant]
        packed = mcodec.pack(src, tmp_path / variant)
        original = st.SentenceTransformer(str(src), device="cpu")
        loaded = mcodec.transformers.sentence_transformer(packed, device="cpu")
        a = original.encode(SENTENCES, convert_to_tensor=True)
        b = loaded.encode(SENTENCES, convert_to_tensor=True)
        assert torch.equal(a, b), variant


def test_missing_and_damaged_weights(variants, tmp_path: Path) -> None:
    packed = Path(mcodec.pack(variants["bf16-sharded"], tmp_path / "p"))
    with pytest.raises(mcodec.MissingFileError):
        mcodec.transformers.from_pretrained(transformers.AutoModel, variants["f32"])
    shard = sorted(packed.glob("*.mcz"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(mcodec.CorruptError, match=shard.name):
        mcodec.transformers.from_pretrained(transformers.AutoModel, packed)
    shard.unlink()
    with pytest.raises(mcodec.MissingFileError, match="missing"):
        mcodec.transformers.load_state_dict(packed)


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_save_pretrained_packs_exactly_what_transformers_writes(variants, tmp_path: Path) -> None:
    src = variants["bf16"]
    model = transformers.AutoModel.from_pretrained(src)
    tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    out = tmp_path / "saved.mcz"
    save = mcodec.transformers.save_pretrained
    assert save(model, out, tokenizer, max_shard_size="20MB") == str(out)
    assert [p.name for p in tmp_path.iterdir()] == ["saved.mcz"]  # no temporary left
    assert (out / "model.safetensors.index.json").exists()
    assert not list(out.glob("*.safetensors"))
    # Unpacked: byte for byte the files transformers writes itself.
    ref = tmp_path / "ref"
    model.save_pretrained(ref, max_shard_size="20MB")
    tokenizer.save_pretrained(ref)
    back = Path(mcodec.unpack(out, tmp_path / "back"))
    assert files_under(back) == files_under(ref)
    same_parameters(model, mcodec.transformers.from_pretrained(transformers.AutoModel, out))

    # Refusals come before anything is written; a failing save leaves nothing behind.
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(mcodec.OutputExistsError, match="force=True"):
        save(model, out)
    with pytest.raises(mcodec.ArgumentError, match="safe_serialization"):
        save(model, tmp_path / "pickled.mcz", safe_serialization=False)
    with pytest.raises(mcodec.ArgumentError, match="save_pretrained"):
        save(model, tmp_path / "odd.mcz", object())

    class FailingSave:
        def save_pretrained(self, directory: str) -> None:
            raise OSError("no space left on device")

    with pytest.raises(OSError, match="no space"):
        save(model, tmp_path / "failed.mcz", FailingSave())
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert files_under(out) != {}  # the existing output untouched

    # force=True replaces it: now one file of weights and no tokenizer.
    save(model, out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors.mcz"]
    same_parameters(model, mcodec.transformers.from_pretrained(transformers.AutoModel, out))


def test_save_pretrained_sentence_transformer(variants, tmp_path: Path) -> None:
    st = need("sentence_transformers")
    original = st.SentenceTransformer(str(variants["bf16"]), device="cpu")
    out = mcodec.transformers.save_pretrained(original, tmp_path / "st.mcz")
    loaded = mcodec.transformers.sentence_transformer(out, device="cpu")
    a = original.encode(SENTENCES, convert_to_tensor=True)
    b = loaded.encode(SENTENCES, convert_to_tensor=True)
    assert torch.equal(a, b)
