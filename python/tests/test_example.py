"""examples/python/decode_loop.py runs to completion with its SDPA checks
passing: on the CPU executor here, on the GPU when there is one (and torch)."""

import pathlib
import subprocess
import sys

import pytest

import canopy

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "python" / "decode_loop.py"
SMALL = ["--steps", "3", "--layers", "2", "--qo-heads", "8", "--kv-heads", "2",
         "--prompt-len", "100"]


def run(*args):
    pytest.importorskip("torch")
    if not EXAMPLE.is_file():
        pytest.skip(f"{EXAMPLE} is not here (tests run outside the source tree)")
    result = subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: " in result.stdout
    return result.stdout


@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_decode_loop_on_the_cpu_executor(layout):
    run("--device", "cpu", "--layout", layout, *SMALL)


def test_decode_loop_on_the_gpu():
    if not canopy.gpu_available():
        pytest.skip(f"no GPU: {canopy.gpu_unavailable_reason()}")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    run("--device", "cuda", *SMALL)
