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
