"""``safe_open``: an ``.mcz`` file opened for random access, like ``safetensors.safe_open``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Optional, Union

from . import _dtypes, _native
from .errors import ArgumentError, CorruptError, TensorNotFoundError

PathLike = Union[str, "os.PathLike[str]"]

_FRAMEWORKS = {"pt": "pt", "torch": "pt", "pytorch": "pt", "np": "np", "numpy": "np"}


def _check_host() -> None:
    if sys.byteorder != "little":
        raise ArgumentError("mcodec reads little-endian tensors; this host is big-endian")


class safe_open:  # noqa: N801 - the name safetensors users already know
    """An ``.mcz`` file opened for reading tensors one at a time.

    The index is read on open; :meth:`get_tensor` decodes only the tensor asked for,
    checking its checksums. Use it as a context manager, as with ``safetensors``::

        with mcodec.safe_open("model.safetensors.mcz", framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)

    Args:
        filename: path of the ``.mcz`` file.
        framework: ``"pt"`` (PyTorch tensors) or ``"np"`` (numpy arrays).
        device: where tensors go (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a
            ``torch.device`` or a CUDA index); numpy is CPU only.
        threads: decoding threads (default: all cores).

    """

    def __init__(
        self,
        filename: PathLike,
        framework: str = "pt",
        device: Any = "cpu",
        *,
        threads: Optional[int] = None,
    ) -> None:
        _check_host()
        if framework not in _FRAMEWORKS:
            raise ArgumentError(f"framework {framework!r}: expected 'pt' or 'np'")
        self._framework = _FRAMEWORKS[framework]
        if threads is not None and threads < 1:
            raise ArgumentError(f"threads must be at least 1, not {threads}")
        self._threads = threads
        self._archive: _native.Archive
        if isinstance(filename, _native.Archive):
            self._archive = filename  # mcodec.torch.load / mcodec.numpy.load: bytes
        else:
            self._archive = _native.Archive(os.fspath(filename))
        self._device = self._resolve_device(device)
        self._entries: dict[str, tuple[str, list[int], int]] = {
            e[0]: e[1:] for e in self._archive.entries()
        }
        self._header: Optional[dict[str, Any]] = None

    def _resolve_device(self, device: Any) -> Any:
        if self._framework == "np":
            if str(device) != "cpu":
                raise ArgumentError(f"numpy arrays live on the CPU, not {device!r}")
            return "cpu"
        import torch

        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ArgumentError(f"device {device!r}: {e}") from None

    def __enter__(self) -> safe_open:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Releases the file (its memory map goes when the last reference does)."""
        self._entries = {}

    def keys(self) -> list[str]:
        """Tensor names, sorted (as ``safetensors.safe_open.keys``)."""
        return sorted(self._entries)

    def offset_keys(self) -> list[str]:
        """Tensor names in the order of their data in the file."""
        return list(self._entries)

    def metadata(self) -> Optional[dict[str, str]]:
        """The ``__metadata__`` of the original safetensors header, or ``None``."""
        meta = self._parsed_header().get("__metadata__")
        return dict(meta) if meta is not None else None

    def _parsed_header(self) -> dict[str, Any]:
        if self._header is None:
            if not self._archive.is_safetensors:
                self._header = {}
            else:
                raw = self._archive.header()
                try:
                    self._header = json.loads(raw[8:].decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise CorruptError(f"{self._archive.path}: header: {e}") from None
        return self._header

    def _entry(self, name: str) -> tuple[str, list[int], int]:
        try:
            return self._entries[name]
        except KeyError:
            raise TensorNotFoundError(f"{self._archive.path}: no tensor named {name!r}") from None

    def get_tensor(self, name: str) -> Any:
        """Decodes tensor ``name`` (only it) and returns it on the file's device."""
        return self._load([name])[name]

    def get_slice(self, name: str) -> _Slice:
        """A lazy handle to tensor ``name``.

        Shape and dtype come without decoding; indexing (``f.get_slice(name)[0:2]``)
        decodes the tensor.
        """
        self._entry(name)
        return _Slice(self, name)

    def _empty(self, name: str, device: Any = None) -> Any:
        dtype, shape, nbytes = self._entry(name)
        if self._framework == "np":
            import numpy as np

            return np.empty(shape, dtype=_dtypes.numpy_dtype(dtype))
        import torch

        return torch.empty(shape, dtype=_dtypes.torch_dtype(dtype), device=device)

    def _load(self, names: list[str], release: bool = False) -> dict[str, Any]:
        """Allocates the named tensors and decodes into them in one parallel pass."""
        why = ""
        if self._framework == "pt" and self._device.type == "cuda":
            from . import _gpu

            for name in names:
                self._entry(name)
            on_gpu, why = _gpu.load(self._archive, names, self._entries, self._empty, self._device)
            if on_gpu is not None:
                return on_gpu
        out = {name: self._empty(name) for name in names}
        targets = []
        for name, t in out.items():
            nbytes = self._entries[name][2]
            if self._framework == "np":
                targets.append((name, t.ctypes.data if nbytes else 0, nbytes))
            else:
                targets.append((name, t.data_ptr() if nbytes else 0, nbytes))
        self._archive.decode_into(targets, self._threads, release)
        if self._framework == "pt" and self._device.type != "cpu":
            from . import _gpu

            out = _gpu.to_device(out, self._device, why)
        return out

    @classmethod
    def _from_bytes(
        cls, data: bytes, framework: str, device: Any = "cpu", threads: Optional[int] = None
    ) -> safe_open:
        """An ``.mcz`` file given as bytes (``mcodec.torch.load``, ``mcodec.numpy.load``)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ArgumentError(f"expected the bytes of an .mcz file, got {type(data)}")
        archive = _native.Archive.from_bytes(bytes(data), "<bytes>")
        return cls(archive, framework=framework, device=device, threads=threads)  # type: ignore[arg-type]

    def _load_all(self) -> dict[str, Any]:
        return self._load(self.offset_keys(), release=True)

    def __repr__(self) -> str:
        return f"<mcodec.safe_open {self._archive.path!r}: {len(self._entries)} tensors>"


class _Slice:
    """What :meth:`safe_open.get_slice` returns."""

    def __init__(self, file: safe_open, name: str) -> None:
        self._file = file
        self._name = name

    def get_shape(self) -> list[int]:
        """The tensor's shape."""
        return list(self._file._entry(self._name)[1])

    def get_dtype(self) -> str:
        """The tensor's safetensors dtype name (``"BF16"``, ``"F32"``, ...)."""
        return self._file._entry(self._name)[0]

    def __getitem__(self, index: Any) -> Any:
        return self._file.get_tensor(self._name)[index]
