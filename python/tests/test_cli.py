"""The ``mcodec`` command line that the wheel installs (console script) and ``python -m
mcodec``: the binary's program, with its output, exit statuses and files."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import mcodec


def console_script() -> list[str]:
    """The ``mcodec`` script pip installed beside this interpreter's other scripts."""
    script = Path(sysconfig.get_path("scripts")) / (
        "mcodec.exe" if sys.platform == "win32" else "mcodec"
    )
    assert script.exists(), f"{script}: the wheel installed no mcodec console script"
    return [str(script)]


FRONTS = {"script": console_script, "module": lambda: [sys.executable, "-m", "mcodec"]}


def run(front: str, args: list[str], cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        FRONTS[front]() + args, cwd=cwd, input=stdin, capture_output=True, timeout=120
    )


@pytest.fixture
def model(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(7)
    tensors = {
        "w": (torch.randn(256, 64, generator=g) * 0.02).to(torch.bfloat16),
        "b": torch.randn(64, generator=g),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    return path


@pytest.mark.parametrize("front", sorted(FRONTS))
def test_command_line_round_trip(front: str, model: Path, tmp_path: Path) -> None:
    version = run(front, ["--version"], tmp_path)
    assert version.returncode == 0
    assert version.stdout.decode().strip() == f"mcodec {mcodec.__version__}"

    original = model.read_bytes()
    packed = run(front, ["-j", "1", "pack", model.name], tmp_path)
    assert packed.returncode == 0, packed.stderr
    assert (
        "model.safetensors -> model.safetensors.mcz"
        in packed.stderr.decode() + packed.stdout.decode()
    )
    mcz = tmp_path / "model.safetensors.mcz"
    # The same bytes as the API's pack (one program behind both).
    assert mcz.read_bytes() == Path(mcodec.pack(model, tmp_path / "api.mcz")).read_bytes()
    back = run(front, ["-q", "unpack", mcz.name, "-o", "back.safetensors"], tmp_path)
    assert back.returncode == 0 and back.stdout == b"" and back.stderr == b""
    assert (tmp_path / "back.safetensors").read_bytes() == original
    verified = run(front, ["verify", mcz.name], tmp_path)
    assert verified.returncode == 0 and b"OK" in verified.stdout
    # Standard input and output.
    piped = run(front, ["pack", "-"], tmp_path, stdin=original)
    assert piped.returncode == 0 and piped.stdout == mcz.read_bytes()


@pytest.mark.parametrize("front", sorted(FRONTS))
def test_command_line_failures(front: str, model: Path, tmp_path: Path) -> None:
    missing = run(front, ["pack", "absent.safetensors"], tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith("mcodec: absent.safetensors: ")
    usage = run(front, ["squash", "x"], tmp_path)
    assert usage.returncode == 2 and b"unrecognized subcommand" in usage.stderr
    exists = run(front, ["pack", model.name, "-o", model.name], tmp_path)
    assert exists.returncode != 0 and model.read_bytes()  # the input untouched
    damaged = tmp_path / "damaged.mcz"
    data = bytearray(Path(mcodec.pack(model)).read_bytes())
    data[len(data) // 2] ^= 1
    damaged.write_bytes(bytes(data))
    out = run(front, ["unpack", damaged.name, "-o", "out.safetensors"], tmp_path)
    assert out.returncode == 1 and b"damaged.mcz" in out.stderr
    assert not (tmp_path / "out.safetensors").exists()
