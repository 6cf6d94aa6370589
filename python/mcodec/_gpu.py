"""Tensors onto a CUDA device.

The GPU decoder (``mcodec-gpu``) is not reachable from Python yet: tensors are decoded on
the CPU and copied, and the first such load says so once (``warnings``).
"""

from __future__ import annotations

import warnings
from typing import Any

_warned = False


def to_device(tensors: dict[str, Any], device: Any) -> dict[str, Any]:
    """Moves CPU-decoded ``tensors`` to ``device``, warning once per process."""
    global _warned
    if device.type == "cuda" and not _warned:
        _warned = True
        warnings.warn(
            f"mcodec: decoding on the CPU and copying to {device} "
            "(GPU decoding from Python is not available in this build)",
            RuntimeWarning,
            stacklevel=4,
        )
    return {name: t.to(device) for name, t in tensors.items()}
