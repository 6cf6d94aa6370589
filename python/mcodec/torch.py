"""Load and save PyTorch tensors in ``.mcz`` files: ``safetensors.torch``'s API.

Switching is a one-line change::

    from mcodec.torch import load_file, save_file   # was: from safetensors.torch import ...
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from . import _dtypes, _native
from ._levels import _level
from ._open import _check_host, safe_open
from .errors import ArgumentError

__all__ = ["load", "load_file", "load_model", "save", "save_file", "save_model"]

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


def load(data: bytes, device: Any = "cpu", *, threads: Optional[int] = None) -> dict[str, Any]:
    """Loads every tensor of an ``.mcz`` file given as bytes (``safetensors.torch.load``).

    Args:
        data: the file's bytes (as :func:`save` returns them).
        device: where the tensors go, as for :func:`load_file`.
        threads: decoding threads (default: all cores).

    Raises:
        mcodec.Error: damaged or foreign data (the message says ``<bytes>``).

    """
    with safe_open._from_bytes(data, "pt", device, threads) as f:
        return f._load_all()


def save(
    tensors: dict[str, Any],
    metadata: Optional[dict[str, str]] = None,
    *,
    level: str = "default",
    threads: Optional[int] = None,
) -> bytes:
    """Packs tensors into an ``.mcz`` file returned as bytes (``safetensors.torch.save``).

    ``mcodec unpack`` of the bytes gives what ``safetensors.torch.save`` returns for the
    same arguments; see :func:`save_file`.
    """
    entries, keep = _entries(tensors)
    return _save_bytes(entries, keep, metadata, level, threads)


def _save_bytes(
    entries: list[tuple[str, str, list[int], int, int]],
    keep: Any,
    metadata: Optional[dict[str, str]],
    level: str,
    threads: Optional[int],
) -> bytes:
    """Packs ``entries`` (whose memory ``keep`` holds) into ``.mcz`` bytes."""
    try:
        return _native.save_bytes(
            entries, _metadata_items(metadata), level=_level(level), threads=threads
        )
    finally:
        del keep


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
        level: ``"fast"`` (encodes 2–3 times as fast, under a tenth of a percentage
            point larger), ``"default"`` or ``"max"`` (smaller, slower to encode).
        threads: encoding threads (default: all cores).

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

    Entries are (name, dtype, shape, address, nbytes) of CPU copies; the copies are
    returned too and must outlive the entries' use.
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
    return entries, cpu


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
        level=_level(level),
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


def _tied_names(
    state_dict: dict[str, Any], preferred: Optional[set[str]] = None
) -> dict[str, list[str]]:
    """Names to drop because another name holds the same memory: kept name -> dropped.

    Of each group of tensors sharing one storage, one that covers the whole storage is
    kept: a name in ``preferred`` if any, else the first in sorted order (as
    ``safetensors.torch.save_model`` chooses).
    """
    groups: dict[tuple[Any, int], list[str]] = {}
    for name, t in state_dict.items():
        if t.device.type == "meta" or t.numel() == 0:
            continue
        storage = t.untyped_storage()
        groups.setdefault((t.device, storage.data_ptr()), []).append(name)
    drop: dict[str, list[str]] = {}
    for names in groups.values():
        if len(names) < 2:
            continue

        def whole(name: str) -> bool:
            t = state_dict[name]
            storage = t.untyped_storage()
            return bool(
                t.data_ptr() == storage.data_ptr()
                and t.numel() * t.element_size() == storage.nbytes()
            )

        complete = sorted(n for n in names if whole(n))
        if not complete:
            raise ArgumentError(
                f"tensors {sorted(names)} share memory and none covers all of it: "
                "save copies of them instead"
            )
        kept = next((n for n in complete if preferred and n in preferred), complete[0])
        drop[kept] = sorted(n for n in names if n != kept)
    return drop


def save_model(
    model: Any,
    filename: PathLike,
    metadata: Optional[dict[str, str]] = None,
    force_contiguous: bool = False,
) -> None:
    """Saves a model's ``state_dict`` to an ``.mcz`` file (``safetensors.torch.save_model``).

    Tied weights (names sharing memory, such as an embedding and an output layer) are
    saved once; each dropped name is recorded in ``metadata`` as pointing to the kept one,
    as safetensors does, so that ``mcodec unpack`` gives what ``save_model`` of
    safetensors writes. :func:`load_model` restores them.

    Args:
        model: a ``torch.nn.Module``.
        filename: the ``.mcz`` file to write.
        metadata: text metadata for the header.
        force_contiguous: save non-contiguous tensors as contiguous copies instead of
            refusing them.

    """
    state_dict = dict(model.state_dict())
    for kept, dropped in _tied_names(state_dict).items():
        for name in dropped:
            metadata = {} if metadata is None else metadata
            metadata.setdefault(name, kept)
            del state_dict[name]
    if force_contiguous:
        state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    save_file(state_dict, filename, metadata)


def load_model(
    model: Any,
    filename: PathLike,
    strict: bool = True,
    device: Any = "cpu",
    *,
    threads: Optional[int] = None,
) -> tuple[set[str], list[str]]:
    """Loads an ``.mcz`` file into ``model`` (``safetensors.torch.load_model``).

    Tied weights saved once by :func:`save_model` are restored through the model's own
    sharing.

    Args:
        model: a ``torch.nn.Module``.
        filename: the ``.mcz`` file.
        strict: raise ``RuntimeError`` when names are missing or unexpected.
        device: where the loaded tensors are decoded to before ``load_state_dict``.
        threads: decoding threads (default: all cores).

    Returns:
        The missing and the unexpected names.

    """
    state_dict = load_file(filename, device=device, threads=threads)
    tied = _tied_names(model.state_dict(), preferred=set(state_dict))
    missing_keys, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = set(missing_keys)
    unexpected = list(unexpected)
    for dropped in tied.values():
        for name in dropped:
            if name in missing:
                missing.remove(name)
            elif name in state_dict:
                unexpected.append(name)
    if strict and (missing or unexpected):
        problems = []
        if missing:
            problems.append("missing keys: " + ", ".join(f'"{k}"' for k in sorted(missing)))
        if unexpected:
            problems.append("unexpected keys: " + ", ".join(f'"{k}"' for k in sorted(unexpected)))
        raise RuntimeError(
            f"Error(s) in loading {filename} into {type(model).__name__}: " + "; ".join(problems)
        )
    return missing, unexpected
