"""The ``mcodec`` command line from the Python package.

``python -m mcodec``, and the ``mcodec`` console script that ``pip install`` puts on the
PATH: the same program as the Rust binary (the same code, linked into the native module): see
``mcodec --help``.
"""

from __future__ import annotations

import sys

from . import _native


def main() -> None:
    """Runs ``mcodec`` with this process's arguments and exits with its status."""
    # Rust writes to the file descriptors directly: what Python buffered goes first.
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(_native.cli_main(["mcodec", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
