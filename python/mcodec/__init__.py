"""mcodec: lossless compression for neural-network weights.

Load packed models straight into PyTorch, numpy and transformers::

    import mcodec.torch
    tensors = mcodec.torch.load_file("model.safetensors.mcz")          # dict of tensors

    with mcodec.safe_open("model.safetensors.mcz", framework="pt") as f:
        w = f.get_tensor("embeddings.word_embeddings.weight")            # only this one

    mcodec.pack("model_dir", "model_dir.mcz")                           # as `mcodec pack`
    mcodec.unpack("model_dir.mcz", "restored")                          # byte for byte

``mcodec.torch`` and ``mcodec.numpy`` mirror ``safetensors.torch`` and
``safetensors.numpy``; ``mcodec.transformers`` loads packed model directories into
transformers and sentence-transformers; :class:`Store` reads and writes a hub store.
Every error is an :class:`Error`.
"""

from __future__ import annotations

import os
from typing import Optional, Union

from . import _native
from ._levels import _level
from ._open import safe_open
from .errors import (
    ArgumentError,
    CorruptError,
    Error,
    FileError,
    GpuError,
    GpuUnavailableError,
    LimitError,
    MissingFileError,
    OutputExistsError,
    TensorNotFoundError,
)
from .store import Store

__version__: str = _native.__version__

__all__ = [
    "ArgumentError",
    "CorruptError",
    "Error",
    "FileError",
    "GpuError",
    "GpuUnavailableError",
    "LimitError",
    "MissingFileError",
    "OutputExistsError",
    "Store",
    "TensorNotFoundError",
    "__version__",
    "pack",
    "safe_open",
    "unpack",
]

PathLike = Union[str, "os.PathLike[str]"]

_MCZ = ".mcz"


def pack(
    src: PathLike,
    dst: Optional[PathLike] = None,
    *,
    force: bool = False,
    level: str = "default",
    chunk_log2: Optional[int] = None,
    threads: Optional[int] = None,
) -> str:
    """Packs a safetensors file, or a model directory, as ``mcodec pack`` does.

    A directory is packed file by file: every ``*.safetensors`` becomes
    ``*.safetensors.mcz``, every other file (config, tokenizer, index) is copied. The
    output is built under a temporary name and appears only when complete.

    Args:
        src: safetensors file or directory.
        dst: output path (default: ``src`` + ``".mcz"``).
        force: replace an existing output.
        level: ``"fast"`` (encodes 2–3 times as fast, files under a tenth of a
            percentage point larger), ``"default"`` or ``"max"`` (smaller, slower to
            encode); every level's files load the same way.
        chunk_log2: elements per independently decodable chunk, as a power of two
            (shorter chunks give the GPU decoder more parallelism on small models).
        threads: threads (default: all cores).

    Returns:
        The output path.

    """
    src = os.fspath(src)
    out = os.fspath(dst) if dst is not None else src.rstrip("/\\") + _MCZ
    _native.pack(src, out, force=force, level=_level(level), chunk_log2=chunk_log2, threads=threads)
    return out


def unpack(
    src: PathLike,
    dst: Optional[PathLike] = None,
    *,
    force: bool = False,
    threads: Optional[int] = None,
) -> str:
    """Unpacks an ``.mcz`` file or packed directory to the original bytes.

    Every checksum is verified, as ``mcodec unpack`` does (atomic output, no overwrite
    without ``force``).

    Args:
        src: ``.mcz`` file or packed directory.
        dst: output path (default: ``src`` without ``".mcz"``).
        force: replace an existing output.
        threads: threads (default: all cores).

    Returns:
        The output path.

    """
    src = os.fspath(src)
    if dst is not None:
        out = os.fspath(dst)
    else:
        base = src.rstrip("/\\")
        if not base.endswith(_MCZ):
            raise ArgumentError(f"{src}: name does not end in .mcz; give dst")
        out = base[: -len(_MCZ)]
    _native.unpack(src, out, force=force, threads=threads)
    return out
