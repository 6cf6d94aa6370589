"""Load and save numpy arrays in ``.mcz`` files: ``safetensors.numpy``'s API.

BF16 and FP8 tensors need the ``ml_dtypes`` package (numpy has no such types).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from . import _dtypes
from ._open import _check_host, safe_open
from .errors import ArgumentError
from .torch import _save, _save_bytes

__all__ = ["load", "load_file", "save", "save_file"]

PathLike = Union[str, "os.PathLike[str]"]


def load_file(filename: PathLike, *, threads: Optional[int] = None) -> dict[str, Any]:
    """Loads every tensor of an ``.mcz`` file into numpy arrays.

    Arrays are decoded straight into on ``threads`` threads (default: all cores), every
    checksum verified.
    """
    with safe_open(filename, framework="np", threads=threads) as f:
        return f._load_all()


def load(data: bytes, *, threads: Optional[int] = None) -> dict[str, Any]:
    """Loads every tensor of an ``.mcz`` file given as bytes (``safetensors.numpy.load``)."""
    with safe_open._from_bytes(data, "np", "cpu", threads) as f:
        return f._load_all()


def save(
    tensors: dict[str, Any],
    metadata: Optional[dict[str, str]] = None,
    *,
    level: str = "default",
    threads: Optional[int] = None,
) -> bytes:
    """Packs numpy arrays into an ``.mcz`` file returned as bytes (``safetensors.numpy.save``).

    ``mcodec unpack`` of the bytes gives what ``safetensors.numpy.save`` returns.
    """
    entries, keep = _entries(tensors)
    return _save_bytes(entries, keep, metadata, level, threads)


def save_file(
    tensors: dict[str, Any],
    filename: PathLike,
    metadata: Optional[dict[str, str]] = None,
    *,
    force: bool = True,
    level: str = "default",
    threads: Optional[int] = None,
) -> None:
    """Saves numpy arrays to an ``.mcz`` file.

    It unpacks to exactly the bytes ``safetensors.numpy.save_file`` writes; see
    :func:`mcodec.torch.save_file`.
    """
    entries, keep = _entries(tensors)
    try:
        _save(entries, filename, metadata, force, level, threads)
    finally:
        del keep


def _entries(
    tensors: dict[str, Any],
) -> tuple[list[tuple[str, str, list[int], int, int]], dict[str, Any]]:
    """Checks ``tensors`` and describes them for the native module.

    Entries are (name, dtype, shape, address, nbytes) of little-endian C-contiguous
    arrays; the arrays are returned too and must outlive the entries' use.
    """
    _check_host()
    import numpy as np

    if not isinstance(tensors, dict):
        raise ArgumentError(f"expected a dict of str to numpy arrays, got {type(tensors)}")
    arrays = {}
    for name, a in tensors.items():
        if not isinstance(name, str):
            raise ArgumentError(f"tensor name {name!r} is not a string")
        if not isinstance(a, np.ndarray):
            raise ArgumentError(f"tensor {name!r} is a {type(a)}, not a numpy array")
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))  # stored little-endian, as safetensors does
        # Not np.ascontiguousarray: it turns a 0-dim array into a 1-dim one.
        arrays[name] = a if a.flags.c_contiguous else a.copy(order="C")
    entries = [
        (
            name,
            _dtypes.numpy_name(a.dtype),
            list(a.shape),
            a.ctypes.data if a.nbytes else 0,
            a.nbytes,
        )
        for name, a in arrays.items()
    ]
    return entries, arrays
