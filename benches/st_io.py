"""Minimal safetensors reader/writer shared by the benchmark scripts.

Format: an 8-byte little-endian header length N, N bytes of JSON header (UTF-8,
padded with spaces so the data starts 8-byte aligned), then the tensor data.
Each header entry is {"dtype", "shape", "data_offsets": [begin, end]} with
offsets relative to the start of the data section; the optional
"__metadata__" entry maps strings to strings.

The writer streams: tensor data is produced chunk by chunk, so files larger
than RAM can be written.
"""

import json
import mmap
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Callable, Iterable

DTYPE_SIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2,
    "U8": 1, "BOOL": 1,
}


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list
    begin: int  # absolute file offset of the first byte
    end: int    # absolute file offset one past the last byte

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass
class SafetensorsFile:
    path: Path
    metadata: dict | None
    tensors: list  # TensorInfo, in header (key) order
    data_start: int

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def read_header(path) -> SafetensorsFile:
    path = Path(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    data_start = 8 + n
    metadata = header.pop("__metadata__", None)
    tensors = [
        TensorInfo(name, e["dtype"], e["shape"],
                   data_start + e["data_offsets"][0], data_start + e["data_offsets"][1])
        for name, e in header.items()
    ]
    return SafetensorsFile(path, metadata, tensors, data_start)


def map_file(path) -> memoryview:
    """Read-only zero-copy view of a whole file (released when unreferenced)."""
    with open(path, "rb") as f:
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


@dataclass
class TensorSpec:
    """A tensor to write: `chunks()` yields its raw little-endian bytes in order."""
    name: str
    dtype: str
    shape: list
    chunks: Callable[[], Iterable]

    @property
    def nbytes(self) -> int:
        return DTYPE_SIZE[self.dtype] * prod(self.shape)


def write_safetensors(path, specs: list, metadata: dict | None = None) -> int:
    """Write `specs` (data laid out in list order, keys in list order). Returns file size."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for s in specs:
        header[s.name] = {"dtype": s.dtype, "shape": list(s.shape),
                          "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-(8 + len(blob)) % 8)

    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for s in specs:
            written = 0
            for chunk in s.chunks():
                written += f.write(chunk)
            if written != s.nbytes:
                raise ValueError(f"{s.name}: wrote {written} bytes, expected {s.nbytes}")
    return 8 + len(blob) + offset
