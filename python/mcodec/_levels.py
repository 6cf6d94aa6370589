"""The compression levels of ``mcodec pack --level``, as the Python API names them."""

from __future__ import annotations

from . import _native
from .errors import ArgumentError

#: ``"fast"`` encodes 2–3 times as fast as ``"default"`` (one thread, MiniLM) for files
#: under a tenth of a percentage point larger; ``"max"`` searches longest, for files never
#: larger than the default's (0.03–0.18 points smaller on MiniLM). Every level's files
#: load the same way.
LEVELS: tuple[str, ...] = tuple(_native.LEVELS)


def _level(level: str) -> str:
    """``level``, checked to be one of :data:`LEVELS`."""
    if level not in LEVELS:
        expected = ", ".join(repr(n) for n in LEVELS)
        raise ArgumentError(f"level {level!r}: expected one of {expected}")
    return level
