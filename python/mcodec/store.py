"""The hub store from Python: ``mcodec.Store``.

A store keeps every distinct tensor once and fine-tunes as deltas against their base, in
a local directory or on S3-compatible object storage (``s3://bucket/prefix``, configured
by the ``AWS_*`` environment variables as for the CLI); see docs/STORE.md.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Union

from . import _dtypes, _native
from .errors import ArgumentError

__all__ = ["DEFAULT_GRACE_S", "Store"]

PathLike = Union[str, "os.PathLike[str]"]

#: How old an unreferenced object must be before :meth:`Store.gc` deletes it (seconds;
#: the CLI's ``--grace`` default).
DEFAULT_GRACE_S: float = _native.STORE_DEFAULT_GRACE_S


class Store:
    """A hub store.

    Args:
        root: a directory, or ``s3://bucket/prefix``.
        create: create the store (``mcodec store init``) instead of opening it.

    """

    def __init__(self, root: PathLike, *, create: bool = False) -> None:
        self._store = _native.Store(os.fspath(root), create)

    @property
    def root(self) -> str:
        """The store's root as given."""
        return self._store.root

    def add(
        self,
        path: PathLike,
        name: str,
        *,
        base: Optional[str] = None,
        delta: str = "best",
    ) -> dict[str, Any]:
        """Adds the model at ``path`` (a safetensors file or a model directory) as ``name``.

        Args:
            path: what to add.
            name: the model's name in the store.
            base: the model to delta-code against (default: chosen automatically).
            delta: ``"best"``, ``"bitx"`` or ``"off"``.

        Returns:
            The report (``mcodec store add --json``).

        """
        return _report(self._store.add(os.fspath(path), name, base, delta))

    def get(self, name: str, dst: PathLike, *, force: bool = False) -> dict[str, Any]:
        """Writes model ``name`` to ``dst``, byte for byte, every byte verified.

        The output appears only when complete; an existing ``dst`` is replaced only with
        ``force=True``.
        """
        return _report(self._store.get(name, os.fspath(dst), force))

    def ls(self) -> list[dict[str, Any]]:
        """The stored models (name, base, files, tensors, bytes)."""
        report: list[dict[str, Any]] = json.loads(self._store.list())
        return report

    def remove(self, name: str) -> None:
        """Removes model ``name`` (its objects are reclaimed by ``gc``)."""
        self._store.remove(name)

    def stats(self, prefix: Optional[str] = None) -> dict[str, Any]:
        """Logical and physical sizes, and where the savings come from.

        Per model and per organisation, as ``mcodec store stats --json`` reports them.

        Args:
            prefix: only the models (and organisations) whose names start with it, e.g.
                ``"org/"``; the store-wide totals stay whole.

        """
        return _report(self._store.stats(prefix))

    def gc(self, grace: float = DEFAULT_GRACE_S) -> dict[str, Any]:
        """Deletes the objects no model needs (``mcodec store gc``).

        Unreferenced objects younger than ``grace`` seconds are kept: they may belong to
        an ``add`` in progress elsewhere. Deletes are deferred while other writers hold
        leases (``"deferred"`` in the report).

        Returns:
            The report: ``deleted``, ``deleted_bytes``, ``kept_young``, ``deferred``,
            ``writers``, ``temporaries``, ``temporary_bytes``.

        """
        return _report(self._store.gc(float(grace)))

    def fsck(self) -> dict[str, Any]:
        """Decodes every object and checks it against its key and the manifests.

        As ``mcodec store fsck --json``.

        Returns:
            The report: ``models``, ``objects`` checked, ``orphans`` (unreferenced, not
            an error) and ``problems``, one line each, empty when the store is
            consistent (the CLI's exit status is 1 otherwise; here, check the list).

        """
        return _report(self._store.fsck())

    def load(
        self, name: str, device: Any = "cpu", *, threads: Optional[int] = None
    ) -> dict[str, Any]:
        """The tensors of stored model ``name`` as PyTorch tensors, without writing files.

        Tensors of every safetensors file of the model are decoded straight into their
        memory (deltas applied), in parallel with the GIL released, each verified against
        its content key.

        Raises:
            mcodec.ArgumentError: two files of the model hold tensors of the same name.

        """
        import torch

        entries = self._store.tensors(name)
        out: dict[str, Any] = {}
        targets = []
        for file, tensor, dtype, shape, nbytes in entries:
            if tensor in out:
                raise ArgumentError(f"model {name!r}: tensor {tensor!r} is in several files")
            t = torch.empty(shape, dtype=_dtypes.torch_dtype(dtype))
            out[tensor] = t
            targets.append((file, tensor, t.data_ptr() if nbytes else 0, nbytes))
        self._store.decode_into(name, targets, threads)
        if str(device) != "cpu":
            from . import _gpu

            out = _gpu.to_device(out, torch.device(device), "the store decodes on the CPU")
        return out

    def __repr__(self) -> str:
        return f"<mcodec.Store {self.root!r}>"


def _report(text: str) -> dict[str, Any]:
    """A report the native store returns as JSON text (always an object)."""
    report: dict[str, Any] = json.loads(text)
    return report
