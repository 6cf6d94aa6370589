"""The package itself: stubs that match the native module, typed, documented."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import mcodec
import mcodec._native
import mcodec.numpy
import mcodec.torch
import mcodec.transformers


def test_native_stub_matches_module() -> None:
    # Names only; scripts/python-tests.sh checks signatures too (mypy stubtest).
    stub = Path(mcodec.__file__).with_name("_native.pyi")
    tree = ast.parse(stub.read_text())
    declared = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | {
        n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)
    }
    public = {n for n in dir(mcodec._native) if not n.startswith("_")} | {"__version__"}
    assert declared - {"_Path"} == public
    for cls in ("Archive", "Store"):
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
        methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} - {"__new__"}
        native = getattr(mcodec._native, cls)
        assert methods == {n for n in dir(native) if not n.startswith("_")}, cls


def test_typed_and_documented() -> None:
    assert Path(mcodec.__file__).with_name("py.typed").exists()
    for module in (
        mcodec,
        mcodec.torch,
        mcodec.numpy,
        mcodec.transformers,
        mcodec.errors,
        mcodec.store,
    ):
        assert module.__doc__, module
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert obj.__doc__, f"{module.__name__}.{name}"
    assert mcodec.__version__ == mcodec._native.__version__


def test_errors_share_one_base() -> None:
    for name in mcodec.errors.__all__:
        assert issubclass(getattr(mcodec.errors, name), mcodec.Error)
    assert issubclass(mcodec.MissingFileError, FileNotFoundError)
    assert issubclass(mcodec.OutputExistsError, FileExistsError)
    assert issubclass(mcodec.CorruptError, ValueError)
    assert issubclass(mcodec.TensorNotFoundError, KeyError)
