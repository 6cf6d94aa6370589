"""Load and save PyTorch tensors in ``.mcz`` files: ``safetensors.torch``'s API.

Switching is a one-line change::

    from mcodec.torch import load_file, save_file   # was: from safetensors.torch import ...
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from . import _dtypes, _native
from ._open import _check_host, safe_open
from .errors import ArgumentError

__all__ = ["load_file", "save_file"]

PathLike = Union[str, "os.PathLike[str]"]


def load_file(
    filename: PathLike, device: Any = "cpu", *, threads: Optional[int] = None
) -> dict[str, Any]:
    """Loads every tensor of an ``.mcz`` file into PyTorch tensors.

    Tensors are allocated first and decoded straight into their memory, on ``threads``
    threads (default: all cores) with the GIL released; every checksum is verified.

    Args:
        filename: path of the ``.mcz`` file.
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"``, a ``torch.device`` or an
            index.
        threads: decoding threads.

    Returns:
        Tensor names (in file order) to tensors.

    Raises:
        mcodec.Error: a missing, damaged or foreign file (see :mod:`mcodec.errors`).

    """
    with safe_open(filename, framework="pt", device=device, threads=threads) as f:
        return f._load_all()


def _shared(tensors: dict[str, Any]) -> list[list[str]]:
    """Groups of names whose tensors overlap in memory (safetensors refuses them too)."""
    spans = []
    for name, t in tensors.items():
        if t.numel() == 0:
            continue
        storage = t.untyped_storage()
        start = t.data_ptr()
        spans.append((storage.data_ptr(), start, start + t.numel() * t.element_size(), name))
    spans.sort()
    groups: list[list[str]] = []
    group_storage, group_end = None, 0
    for storage_ptr, start, end, name in spans:
        if storage_ptr == group_storage and start < group_end:
            groups[-1].append(name)
            group_end = max(group_end, end)
        else:
            groups.append([name])
            group_storage, group_end = storage_ptr, end
    return [g for g in groups if len(g) > 1]


def save_file(
    tensors: dict[str, Any],
    filename: PathLike,
    metadata: Optional[dict[str, str]] = None,
    *,
    force: bool = True,
    level: str = "default",
    threads: Optional[int] = None,
) -> None:
    """Saves tensors to an ``.mcz`` file.

    ``mcodec unpack`` turns it into exactly the bytes ``safetensors.torch.save_file``
    writes for the same arguments.

    The file is written under a temporary name and renamed into place when complete.
    Unlike :func:`mcodec.pack`, an existing file is replaced (as ``safetensors`` does)
    unless ``force=False``.

    Args:
        tensors: names to dense, contiguous tensors (on any device).
        filename: the ``.mcz`` file to write.
        metadata: text metadata for the header (``__metadata__``). ``safetensors``
            orders the keys of a dict with more than one entry differently from run to
            run; mcodec keeps the dict's order.
        force: replace an existing file.
        level: ``"default"`` or ``"max"`` (smaller, slower to encode).
        threads: encoding threads (default: all cores).

    """
    _check_host()
    import torch

    if not isinstance(tensors, dict):
        raise ArgumentError(f"expected a dict of str to torch.Tensor, got {type(tensors)}")
    cpu: dict[str, Any] = {}
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise ArgumentError(f"tensor name {name!r} is not a string")
        if not isinstance(t, torch.Tensor):
            raise ArgumentError(f"tensor {name!r} is a {type(t)}, not a torch.Tensor")
        if t.layout != torch.strided:
            raise ArgumentError(f"tensor {name!r} is sparse: save t.to_dense() instead")
        if not t.is_contiguous():
            raise ArgumentError(f"tensor {name!r} is not contiguous: save t.contiguous() instead")
        cpu[name] = t.detach().cpu()
    shared = _shared(cpu)
    if shared:
        raise ArgumentError(
            f"tensors share memory: {shared}; save each once (safetensors refuses them too)"
        )
    entries = [
        (
            name,
            _dtypes.torch_name(t.dtype),
            list(t.shape),
            t.data_ptr() if t.numel() else 0,
            t.numel() * t.element_size(),
        )
        for name, t in cpu.items()
    ]
    _save(entries, filename, metadata, force, level, threads)


def _save(
    entries: list[tuple[str, str, list[int], int, int]],
    filename: PathLike,
    metadata: Optional[dict[str, str]],
    force: bool,
    level: str,
    threads: Optional[int],
) -> None:
    """Writes ``entries`` (name, dtype, shape, address, nbytes) as an ``.mcz`` file."""
    _native.save_file(
        os.fspath(filename),
        entries,
        _metadata_items(metadata),
        force=force,
        max=_level(level),
        threads=threads,
    )


def _metadata_items(metadata: Optional[dict[str, str]]) -> Optional[list[tuple[str, str]]]:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise ArgumentError(f"metadata must be a dict of str to str, got {type(metadata)}")
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ArgumentError(f"metadata entry {k!r}: {v!r} is not str to str")
    return list(metadata.items())


def _level(level: str) -> bool:
    if level not in ("default", "max"):
        raise ArgumentError(f"level {level!r}: expected 'default' or 'max'")
    return level == "max"
