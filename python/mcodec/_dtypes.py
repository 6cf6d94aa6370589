"""Element types: safetensors names and their sizes, torch and numpy equivalents."""

from __future__ import annotations

import functools
from typing import Any

from .errors import ArgumentError

#: Bytes per element of every safetensors dtype mcodec reads.
SIZES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}

_TORCH_NAMES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "I64": "int64",
    "U64": "uint64",
    "F64": "float64",
    "C64": "complex64",
}

_NUMPY_NAMES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "I64": "int64",
    "U64": "uint64",
    "F64": "float64",
    "C64": "complex64",
}

# Types numpy lacks, available from the ml_dtypes package when it is installed.
_ML_DTYPES_NAMES = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
}


@functools.cache
def torch_dtype(name: str) -> Any:
    """The torch dtype of safetensors dtype ``name`` (cached: called once per tensor)."""
    import torch

    attr = _TORCH_NAMES.get(name)
    dtype = getattr(torch, attr, None) if attr else None
    if dtype is None:
        raise ArgumentError(f"dtype {name} has no torch equivalent in torch {torch.__version__}")
    return dtype


def torch_name(dtype: Any) -> str:
    """The safetensors name of torch dtype ``dtype``."""
    text = str(dtype).split(".")[-1]
    for name, attr in _TORCH_NAMES.items():
        if attr == text:
            return name
    raise ArgumentError(f"torch dtype {dtype} cannot be saved in a safetensors file")


@functools.cache
def numpy_dtype(name: str) -> Any:
    """The numpy dtype of safetensors dtype ``name`` (``ml_dtypes`` for BF16 and FP8)."""
    import numpy as np

    if name in _NUMPY_NAMES:
        return np.dtype(_NUMPY_NAMES[name]).newbyteorder("<")
    if name in _ML_DTYPES_NAMES:
        try:
            import ml_dtypes
        except ImportError:
            raise ArgumentError(
                f"numpy has no {name} type: install ml_dtypes, or load with mcodec.torch"
            ) from None
        return np.dtype(getattr(ml_dtypes, _ML_DTYPES_NAMES[name]))
    raise ArgumentError(f"dtype {name} has no numpy equivalent")


def numpy_name(dtype: Any) -> str:
    """The safetensors name of numpy dtype ``dtype``."""
    import numpy as np

    dt = np.dtype(dtype)
    for name, text in {**_NUMPY_NAMES, **_ML_DTYPES_NAMES}.items():
        if dt.name == text:
            return name
    raise ArgumentError(f"numpy dtype {dt} cannot be saved in a safetensors file")
