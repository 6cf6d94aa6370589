"""Type stubs of the native module (Rust, PyO3). Private: use the ``mcodec`` modules."""

import builtins
from os import PathLike
from typing import Optional, final

__all__ = [
    "Archive",
    "Store",
    "save_file",
    "save_bytes",
    "safetensors_header",
    "pack",
    "unpack",
    "cli_main",
    "LEVELS",
    "KERNEL_SOURCE",
    "STORE_DEFAULT_GRACE_S",
    "__version__",
]

__version__: str
STORE_DEFAULT_GRACE_S: float

_Path = str | PathLike[str]

@final
class Archive:
    """An open ``.mcz`` file."""

    def __new__(cls, path: _Path) -> Archive: ...
    @staticmethod
    def from_bytes(data: bytes, name: _Path) -> Archive: ...
    @property
    def path(self) -> str: ...
    @property
    def is_safetensors(self) -> bool: ...
    def entries(self) -> list[tuple[str, str, list[int], int]]: ...
    def header(self) -> bytes: ...
    def decode_into(
        self,
        targets: list[tuple[str, int, int]],
        threads: Optional[int] = None,
        release: bool = False,
    ) -> None: ...
    def gpu_decode_into(
        self,
        targets: list[tuple[str, int, int]],
        stream: int,
        ordinal: int,
        image: bytes,
        arch: str,
        batch_bytes: int,
    ) -> list[tuple[str, str]]: ...

KERNEL_SOURCE: str
#: The compression levels, as ``mcodec pack --level`` names them.
LEVELS: list[str]

def safetensors_header(
    tensors: list[tuple[str, str, list[int], int]],
    metadata: Optional[list[tuple[str, str]]] = None,
) -> tuple[bytes, list[int]]: ...
def save_bytes(
    tensors: list[tuple[str, str, list[int], int, int]],
    metadata: Optional[list[tuple[str, str]]] = None,
    level: str = "default",
    threads: Optional[int] = None,
) -> bytes: ...
def save_file(
    path: _Path,
    tensors: list[tuple[str, str, list[int], int, int]],
    metadata: Optional[list[tuple[str, str]]] = None,
    force: bool = False,
    level: str = "default",
    chunk_log2: Optional[int] = None,
    threads: Optional[int] = None,
) -> None: ...
def pack(
    src: _Path,
    dst: _Path,
    force: bool = False,
    level: str = "default",
    chunk_log2: Optional[int] = None,
    threads: Optional[int] = None,
) -> None: ...
def unpack(
    src: _Path,
    dst: _Path,
    force: bool = False,
    threads: Optional[int] = None,
) -> None: ...
def cli_main(argv: list[str]) -> int: ...

@final
class Store:
    """A hub store."""

    def __new__(cls, root: str, create: bool = False) -> Store: ...
    @property
    def root(self) -> str: ...
    def add(
        self, path: _Path, name: str, base: Optional[str] = None, delta: str = "best"
    ) -> str: ...
    def get(self, name: str, out: _Path, force: bool = False) -> str: ...
    def list(self) -> str: ...
    def remove(self, name: str) -> None: ...
    def stats(self, prefix: Optional[str] = None) -> str: ...
    def gc(self, grace_s: float) -> str: ...
    def fsck(self) -> str: ...
    # `builtins.list`: the method `list` above shadows the builtin inside the class.
    def tensors(
        self, name: str
    ) -> builtins.list[tuple[str, str, str, builtins.list[int], int]]: ...
    def decode_into(
        self,
        name: str,
        targets: builtins.list[tuple[str, str, int, int]],
        threads: Optional[int] = None,
    ) -> None: ...
