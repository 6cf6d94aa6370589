"""The compression levels of ``mcodec pack --level``, as the Python API names them."""

from __future__ import annotations

from .errors import ArgumentError

#: ``"fast"`` encodes 2–3 times as fast as ``"default"`` (one thread, MiniLM) for files
#: under a tenth of a percentage point larger; ``"max"`` searches longest. Every level's
#: files load the same way.
LEVELS = ("fast", "default", "max")


def _level(level: str) -> str:
    """``level``, checked to be one of :data:`LEVELS`."""
    if level not in LEVELS:
        raise ArgumentError(f"level {level!r}: expected 'fast', 'default' or 'max'")
    return level
