"""Exceptions raised by mcodec: all derive from :class:`Error`.

Each also derives from the built-in exception a caller would naturally catch for the same
problem (``ValueError`` for bad data or arguments, ``FileNotFoundError`` for a missing
input, ``FileExistsError`` for an output that may not be overwritten, ``KeyError`` for an
unknown tensor name), and every message names the file and the problem.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "CorruptError",
    "Error",
    "FileError",
    "GpuError",
    "GpuUnavailableError",
    "LimitError",
    "MissingFileError",
    "OutputExistsError",
    "TensorNotFoundError",
]


class Error(Exception):
    """Base class of every error mcodec raises."""


class CorruptError(Error, ValueError):
    """The data is damaged, truncated, or not an mcodec / safetensors file."""


class LimitError(Error, ValueError):
    """A size claimed by a file exceeds what the reader allows."""


class FileError(Error, OSError):
    """Reading or writing a file failed."""


class MissingFileError(FileError, FileNotFoundError):
    """An input file or directory does not exist."""


class OutputExistsError(FileError, FileExistsError):
    """The output exists and ``force=True`` was not given."""


class ArgumentError(Error, ValueError):
    """An argument is not valid (an unsupported dtype, a bad option, ...)."""


class TensorNotFoundError(Error, KeyError):
    """The file has no tensor of the requested name."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a message reads better as it is.
        return str(self.args[0]) if self.args else ""


class GpuError(Error, RuntimeError):
    """The GPU failed while decoding (a CUDA driver call or kernel launch failed)."""


class GpuUnavailableError(GpuError):
    """The GPU decoder cannot run here: no CUDA device, driver, NVRTC or usable kernel.

    ``device="cuda"`` loads catch it and decode on the CPU instead (saying so once), unless
    ``MCODEC_GPU_REQUIRED=1`` is set.
    """
